"""Property-based and fuzz tests: random series and layouts, random corruptions of real files."""
import datetime as dt
import os
import random
import re

import numpy as np
import pytest
import rasterio
from apache_beam.pvalue import TaggedOutput
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.windows import Window

from changesweep.pipeline import rasters
from changesweep.pipeline.elements import DeadLetter, Pair
from changesweep.pipeline.layout import Layout
from changesweep.pipeline.elements import FirstCapture
from changesweep.pipeline.listing import CaptureFile, _ReadHeader
from changesweep.pipeline.pairing import pair_series
from changesweep.pipeline.usability import MaskSpec
from changesweep.pipeline.rasters import FileMeta
from tests.conftest import SAMPLE_ARCHIVE

META = FileMeta(8, 8, 4, "uint16", "WKT", (10.0, 0.0, 0.0, 0.0, -10.0, 0.0), None,
                ("B02", "B03", "B04", "B08"))
VARIANTS = {
    "ok": META, "tall": META._replace(height=9), "crs": META._replace(crs="OTHER"),
    "float": META._replace(dtype="float32"), "nonir": META._replace(count=3, descriptions=("B02", "B03", "B04")),
}


@st.composite
def series(draw):
  n = draw(st.integers(0, 25))
  days = draw(st.lists(st.integers(0, 40), min_size=n, max_size=n))  # repeats are ties
  kinds = draw(st.lists(st.sampled_from(sorted(VARIANTS)), min_size=n, max_size=n))
  files = [CaptureFile("loc", (dt.datetime(2020, 1, 1) + dt.timedelta(days=d)).isoformat(), None,
                       f"/a/loc/{i:03d}.tif", 1, VARIANTS[k]) for i, (d, k) in enumerate(zip(days, kinds))]
  order = draw(st.permutations(range(n)))
  return [files[i] for i in order]


@settings(max_examples=300, deadline=None)
@given(series())
def test_pairing_accounts_for_every_capture_once_and_pairs_in_time_order(files):
  out = list(pair_series("loc", files, ("B04", "B08")))
  pairs = [o for o in out if isinstance(o, Pair)]
  firsts = [o for o in out if isinstance(o, FirstCapture)]
  dead = [o for o in out if isinstance(o, DeadLetter)]
  placed = [f.uri for f in firsts] + [p.after.uri for p in pairs] + [d.uri for d in dead]
  assert sorted(placed) == sorted(f.uri for f in files)
  assert len(firsts) <= 1
  for p in pairs:
    assert p.before.captured_at < p.after.captured_at
    # one grid, or a planned common grid the later capture is warped onto (dtypes may differ)
    assert p.grid is not None or (p.before.height, p.before.crs) == (p.after.height, p.after.crs)
  afters = [p.after.captured_at for p in pairs]
  assert afters == sorted(afters) and len(set(afters)) == len(afters)
  chain = [p for p in pairs]
  for a, b in zip(chain, chain[1:]):
    assert a.after.captured_at <= b.before.captured_at
  assert len({p.pair_id for p in pairs}) == len(pairs)


BAND_META = META._replace(count=1, descriptions=(None,))
BAND_VARIANTS = {"ok": BAND_META, "wide": BAND_META._replace(width=9),
                 "multi": BAND_META._replace(count=2, descriptions=(None, None))}


@st.composite
def banded_series(draw):
  """Captures of one location as one file per band, single files, or both at the same time;
  with bands given twice (by two files), missing bands and band files on other grids."""
  files = []
  for t in range(draw(st.integers(0, 8))):
    at = (dt.datetime(2020, 1, 1) + dt.timedelta(days=draw(st.integers(0, 6)))).isoformat()
    if draw(st.booleans()):
      files.append(CaptureFile("loc", at, None, f"/a/loc/{t}.tif", 1,
                               VARIANTS[draw(st.sampled_from(sorted(VARIANTS)))]))
    if draw(st.booleans()):
      bands = draw(st.lists(st.sampled_from(["B02", "B03", "B04", "B08"]), min_size=1,
                            max_size=6))  # repeats: two files of one band
      for i, band in enumerate(bands):
        kind = draw(st.sampled_from(["ok", "ok", "ok", "wide", "multi"]))
        files.append(CaptureFile("loc", at, band, f"/a/loc/{t}_{band}_{i}.tif", 1,
                                 BAND_VARIANTS[kind]))
  return draw(st.permutations(files))


@settings(max_examples=300, deadline=None)
@given(banded_series())
def test_band_files_are_each_accounted_for_once(files):
  out = list(pair_series("loc", files, ("B04", "B08")))
  placed = [u for o in out if isinstance(o, (Pair, FirstCapture, DeadLetter))
            for u in (o.after.uri if isinstance(o, Pair) else o.uri).split(";")]
  assert sorted(placed) == sorted(f.uri for f in files)
  for p in [o for o in out if isinstance(o, Pair)]:
    assert p.before.captured_at < p.after.captured_at


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["", "B02", "B04"]),
                          st.integers(0, 4)), max_size=20))
def test_manifest_rows_listing_a_file_again_are_each_accounted_for(rows):
  from changesweep.pipeline.listing import parse_manifest

  text = "location,captured_at,uri,band\n" + "".join(
      f"loc,2020-01-0{d + 1},f{u}.tif,{b}\n" for d, b, u in rows)
  out = list(parse_manifest("/m/manifest.csv", text))
  assert len(out) == len(rows)  # one output per row: a file or a dead letter
  files = [o.uri for o in out if isinstance(o, CaptureFile)]
  assert sorted(files) == sorted({f"/m/f{u}.tif" for _, _, u in rows})
  assert all(d.uri.startswith("/m/manifest.csv:") and "again" in d.reason
             for d in out if isinstance(d, DeadLetter))


names = st.text(st.characters(whitelist_categories=("L", "N"), whitelist_characters="-_."),
                min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


@settings(max_examples=200, deadline=None)
@given(names, st.dates(dt.date(1980, 1, 1), dt.date(2100, 1, 1)), st.sampled_from(
    ["{location}/{date}.tif", "{location}/{date:%Y%m%d}_{band}.tif", "x/{location}/{tile}/{date:%Y-%j}.tif"]))
def test_layouts_round_trip(location, date, template):
  layout = Layout.parse(template)
  fmt = layout.date_format or "%Y-%m-%d"
  path = template.replace("{location}", location).replace("{tile}", "t1").replace(
      "{band}", "B04").replace("{date:%s}" % fmt if layout.date_format else "{date}", date.strftime(fmt))
  fields = layout.match(path)
  assert fields["location"] == location and fields["captured_at"][:10] == date.isoformat()


@pytest.fixture(scope="module")
def small_tiff(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("fz") / "real.tif")
  with rasterio.open(os.path.join(SAMPLE_ARCHIVE, "rio", "2016-04-24.tif")) as src:
    data = src.read(window=Window(0, 0, 64, 64))
    profile = src.profile
  profile.update(width=64, height=64, blockxsize=32, blockysize=32)
  with rasterio.open(path, "w", **profile) as dst:
    dst.write(data)
  with open(path, "rb") as f:
    return f.read()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["truncate", "overwrite", "zero_run", "header"]), st.integers(0, 2**32 - 1))
def test_corrupted_real_files_fail_cleanly_or_read(small_tiff, tmp_path, how, seed):
  rng = random.Random(seed)
  data = bytearray(small_tiff)
  if how == "truncate":
    data = data[:rng.randrange(len(data))]
  elif how == "overwrite":
    for _ in range(rng.randint(1, 20)):
      data[rng.randrange(len(data))] = rng.randrange(256)
  elif how == "zero_run":
    start = rng.randrange(len(data))
    stop = min(len(data), start + rng.randint(1, 2000))
    data[start:stop] = bytes(stop - start)
  else:
    for _ in range(rng.randint(1, 8)):
      data[rng.randrange(min(len(data), 400))] = rng.randrange(256)
  path = tmp_path / f"c{seed}.tif"
  path.write_bytes(bytes(data))
  # Listing: the file is listed, or dead-lettered at "metadata" with a reason that says what
  # failed (never a bare "Read failed" or a mask that does not exist).
  [listed] = _ReadHeader(None, MaskSpec()).process(
      CaptureFile("loc", "2020-01-01T00:00:00", None, str(path), len(data)))
  if isinstance(listed, TaggedOutput):
    dead = listed.value
    assert (dead.stage, dead.uri) == ("metadata", str(path))
    assert re.match(HEADER_REASONS.format(path=re.escape(str(path))), dead.reason), dead.reason
    return
  meta = listed.meta
  reader = rasters.WindowReader()
  try:
    bands = tuple(range(min(meta.count, 4)))
    pixels, valid = reader.read((str(path),), bands, Window(0, 0, min(meta.width, 32),
                                                            min(meta.height, 32)), meta.nodata)
    assert pixels.dtype == np.float32 and valid.shape == pixels.shape[:2]
  except (rasters.PixelReadError, rasters.RasterError) as e:
    # ReadChips retries the I/O errors, then dead-letters the pair with this reason
    assert re.match(rf"reading band [1-4] of {re.escape(str(path))} failed: \w+: ", str(e)), e
  finally:
    reader.close()


# What a corrupt file's listing dead letter may say: read_meta's reasons, or the pixel read
# of the usability check naming file, error type and message.
HEADER_REASONS = (r"(not a readable raster \(.+\)|bands have different data types .+"
                  r"|data type \w+ is not supported .+|raster has no pixels"
                  r"|reading pixels of {path} failed: \w+: .+)$")

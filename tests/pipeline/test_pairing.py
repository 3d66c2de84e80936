import random

import pytest
import rasterio

from changesweep.pipeline.elements import DeadLetter, Pair
from changesweep.pipeline.listing import CaptureFile
from changesweep.pipeline.elements import FirstCapture
from changesweep.pipeline.pairing import pair_series
from changesweep.pipeline.rasters import FileMeta

META = FileMeta(10, 12, 4, "uint16", "WKT", (10.0, 0.0, 0.0, 0.0, -10.0, 0.0), None,
                ("B02", "B03", "B04", "B08"))
BANDS = ("B04", "B03", "B02")


def capture(date, uri=None, meta=META, band=None, location="loc"):
  return CaptureFile(location, f"{date}T00:00:00", band, uri or f"/a/{location}/{date}.tif", 1, meta)


def split(outputs):
  outputs = list(outputs)
  return ([o for o in outputs if isinstance(o, Pair)],
          [o for o in outputs if isinstance(o, FirstCapture)],
          [o for o in outputs if isinstance(o, DeadLetter)])


def test_single_capture_is_a_first_capture_not_dropped():
  pairs, firsts, dead = split(pair_series("loc", [capture("2020-01-01")], BANDS))
  assert (pairs, dead) == ([], [])
  assert firsts == [FirstCapture("loc", "2020-01-01T00:00:00", "/a/loc/2020-01-01.tif")]


def test_two_captures_make_one_pair_with_band_positions():
  pairs, firsts, _ = split(pair_series("loc", [capture("2020-02-01"), capture("2020-01-01")], BANDS))
  assert len(pairs) == 1 and len(firsts) == 1
  assert pairs[0].before.captured_at < pairs[0].after.captured_at
  assert pairs[0].before_bands == (2, 1, 0)


@pytest.mark.parametrize("seed", range(5))
def test_many_captures_pair_consecutively_whatever_the_listing_order(seed):
  dates = [f"2020-{m:02d}-01" for m in range(1, 13)]
  files = [capture(d) for d in dates]
  random.Random(seed).shuffle(files)
  pairs, firsts, dead = split(pair_series("loc", files, BANDS))
  assert [(p.before.captured_at[:10], p.after.captured_at[:10]) for p in pairs] == list(
      zip(dates, dates[1:]))
  assert len(firsts) == 1 and not dead
  assert len({p.pair_id for p in pairs}) == len(pairs)


def test_pair_ids_are_deterministic():
  files = [capture("2020-01-01"), capture("2020-02-01")]
  a, _, _ = split(pair_series("loc", files, BANDS))
  b, _, _ = split(pair_series("loc", list(reversed(files)), BANDS))
  assert a[0].pair_id == b[0].pair_id


def test_tie_in_time_keeps_one_and_dead_letters_the_other():
  files = [capture("2020-01-01", "/a/loc/b.tif"), capture("2020-01-01", "/a/loc/a.tif"),
           capture("2020-02-01")]
  pairs, firsts, dead = split(pair_series("loc", files, BANDS))
  assert firsts[0].uri == "/a/loc/a.tif"
  assert len(pairs) == 1 and pairs[0].before.uri == "/a/loc/a.tif"
  assert len(dead) == 1 and dead[0].uri == "/a/loc/b.tif" and "same location and capture time" in dead[0].reason


def test_a_capture_on_another_grid_is_paired_on_the_earlier_grid():
  utm = META._replace(crs=rasterio.crs.CRS.from_epsg(32633).to_wkt(),
                      transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0))
  other = utm._replace(height=11, transform=(10.0, 0.0, 500030.0, 0.0, -10.0, 4000000.0))
  files = [capture("2020-01-01", meta=utm), capture("2020-02-01", meta=other)]
  pairs, _, dead = split(pair_series("loc", files, BANDS))
  assert not dead and len(pairs) == 1
  pair = pairs[0]
  assert pair.grid.warp_after and not pair.grid.warp_before
  assert (pair.height, pair.width, pair.transform) == (10, 12, utm.transform)
  assert 0.7 < pair.grid.overlap_fraction < 1.0 and pair.grid.resampling == "bilinear"


def test_grids_that_cannot_be_compared_dead_letter_the_pair_and_the_series_goes_on():
  no_crs = META._replace(crs="", transform=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
  other = no_crs._replace(height=11)
  files = [capture("2020-01-01", meta=no_crs), capture("2020-02-01", meta=other),
           capture("2020-03-01", meta=other)]
  pairs, firsts, dead = split(pair_series("loc", files, BANDS))
  assert len(dead) == 1 and "georeference" in dead[0].reason and dead[0].pair_id
  assert [(p.before.captured_at[:7], p.after.captured_at[:7]) for p in pairs] == [("2020-02", "2020-03")]


def test_capture_without_the_model_bands_is_skipped_and_next_pairs_with_last_usable():
  rgb_less = META._replace(count=2, descriptions=("B08", "B11"))
  files = [capture("2020-01-01"), capture("2020-02-01", meta=rgb_less), capture("2020-03-01")]
  pairs, _, dead = split(pair_series("loc", files, BANDS))
  assert "absent" in dead[0].reason
  assert [(p.before.captured_at[:7], p.after.captured_at[:7]) for p in pairs] == [("2020-01", "2020-03")]


def test_one_file_per_band_makes_one_capture():
  single = META._replace(count=1, descriptions=(None,))
  files = [capture(d, f"/a/loc/{d}_{b}.tif", single, band=b)
           for d in ("2020-01-01", "2020-02-01") for b in ("B02", "B03", "B04")]
  pairs, firsts, dead = split(pair_series("loc", files, BANDS))
  assert not dead and len(pairs) == 1
  assert pairs[0].after.band_names == ("B02", "B03", "B04")
  assert pairs[0].after_bands == (2, 1, 0)


def test_every_capture_is_accounted_for_exactly_once():
  files = [capture(f"2020-{m:02d}-01") for m in range(1, 8)]
  files.append(capture("2020-03-01", "/a/loc/dupe.tif"))
  pairs, firsts, dead = split(pair_series("loc", files, BANDS))
  accounted = [f.uri for f in firsts] + [p.after.uri for p in pairs] + [d.uri for d in dead]
  assert sorted(accounted) == sorted(f.uri for f in files)


@pytest.mark.parametrize("template", ["{location}/{date}.tif", "{location}/{date}_{band}.tif"])
def test_pair_ids_do_not_depend_on_where_the_archive_sits(template):
  from changesweep.pipeline.layout import Layout
  from changesweep.pipeline.listing import entry_from_path

  layout = Layout.parse(template)
  meta = META._replace(count=1, descriptions=(None,)) if "{band}" in template else META

  def ids(root):
    files = []
    for date in ("2020-01-01", "2020-02-01", "2020-03-01"):
      for band in (("B02", "B03", "B04") if "{band}" in template else ("",)):
        rel = template.replace("{location}", "loc").replace("{date}", date).replace(
            "{band}", band)
        files.append(entry_from_path(root, layout, f"{root}/{rel}", 1)._replace(meta=meta))
    return [p.pair_id for p in split(pair_series("loc", files, BANDS))[0]]

  here, there = ids("/mnt/a/archive"), ids("gs://mirror/elsewhere/archive")
  assert len(here) == 2 and here == there


def test_manifest_pair_ids_follow_the_manifest_uris_not_its_folder():
  from changesweep.pipeline.listing import parse_manifest

  text = "location,captured_at,uri\nloc,2020-01-01,a.tif\nloc,2020-02-01,b.tif\n"

  def ids(folder):
    files = [f._replace(meta=META) for f in parse_manifest(f"{folder}/m.csv", text)]
    return [p.pair_id for p in split(pair_series("loc", files, BANDS))[0]]

  assert ids("/data/one") == ids("/data/two") != []

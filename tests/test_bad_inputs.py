"""Issue 6: one of each bad input sweeps to completion; every bad file is a dead letter with a
reason, every good pair is scored, and every listed file is accounted for exactly once."""
import json
import os

import numpy as np
import pytest

from changesweep.pipeline import main as sweep_main
from changesweep.pipeline.sinks import read_jsonl_rows
from tests.conftest import CVA_MODEL, SAMPLE_ARCHIVE
from tests.rasters import scene, write_raster, write_series

NAMES = ("B02", "B03", "B04", "B08")


def sweep(out, *args):
  return sweep_main.run(["--output", str(out), "--model", CVA_MODEL, "--run_id", "bad", *args])


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("bad")
  a = root / "archive"
  good = write_series(str(a), "good", ["2020-01-01", "2020-02-01", "2020-03-01"])
  # zero-byte file, truncated TIFF, corrupt PNG, a text file, an unparseable date
  write_series(str(a), "zero", ["2020-01-01", "2020-02-01"], seed=1)
  (a / "zero" / "2020-03-01.tif").write_bytes(b"")
  write_series(str(a), "trunc", ["2020-01-01"], seed=2)
  with open(os.path.join(SAMPLE_ARCHIVE, "rio", "2016-04-24.tif"), "rb") as f:
    (a / "trunc" / "2020-02-01.tif").write_bytes(f.read()[:5000])
  (a / "trunc" / "2020-03-01.tif").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
  (a / "trunc" / "2020-04-01.tif").write_text("location,date\nthis is text\n")
  (a / "trunc" / "yesterday.tif").write_bytes(b"")
  # same location and time twice
  write_series(str(a), "dupe", ["2020-01-01", "2020-02-01"], seed=3)
  write_raster(str(a / "dupe" / "20200201.tif"), scene(3), descriptions=NAMES)
  # another grid: another UTM zone far away (no overlap), a shifted transform (warped onto the
  # earlier grid and scored), another band count; another dtype (scored)
  write_series(str(a), "grid", ["2020-01-01"], seed=4)
  write_raster(str(a / "grid" / "2020-02-01.tif"), scene(4), crs="EPSG:32632", descriptions=NAMES)
  write_series(str(a), "shift", ["2020-01-01"], seed=5)
  from rasterio.transform import Affine
  write_raster(str(a / "shift" / "2020-02-01.tif"), scene(5), descriptions=NAMES,
               transform=Affine(10.0, 0.0, 500010.0, 0.0, -10.0, 4800000.0))
  write_series(str(a), "nbands", ["2020-01-01"], seed=6)
  write_raster(str(a / "nbands" / "2020-02-01.tif"), scene(6, bands=3),
               descriptions=("B02", "B03", "B04"))
  write_raster(str(a / "cplx" / "2020-01-01.tif"), scene(7).astype(np.complex64))
  write_series(str(a), "dtype", ["2020-01-01"], seed=8)
  write_raster(str(a / "dtype" / "2020-02-01.tif"), scene(8).astype(np.float32), descriptions=NAMES)
  # all nodata; NaN/Inf pixels in a float capture
  write_series(str(a), "empty", ["2020-01-01"], seed=9, nodata=0)
  write_raster(str(a / "empty" / "2020-02-01.tif"), np.zeros((4, 64, 80), np.uint16), nodata=0,
               descriptions=NAMES)
  nan = scene(10).astype(np.float32)
  nan2 = nan.copy()
  nan2[:, :32, :] = np.nan
  nan2[:, 40:, :8] = np.inf
  write_raster(str(a / "nan" / "2020-01-01.tif"), nan, descriptions=NAMES)
  write_raster(str(a / "nan" / "2020-02-01.tif"), nan2, descriptions=NAMES)
  # a single-capture location
  write_series(str(a), "single", ["2021-05-05"], seed=11)
  out = root / "out"
  summary = sweep(out, "--input", str(a), "--chip_overlap", "8")
  listed = [os.path.join(d, f) for d, _, fs in os.walk(a) for f in fs]
  return out, summary, listed, good


def by_file(rows, column="uri"):
  return {os.path.relpath(r[column], r[column].split("/archive/")[0] + "/archive"): r
          for r in rows}


def test_every_bad_input_is_a_dead_letter_with_its_stage_and_reason(bad_run):
  out, _, _, _ = bad_run
  dead = by_file(read_jsonl_rows(str(out), "dead_letter"))
  expect = {
      "zero/2020-03-01.tif": ("metadata", "not a readable raster"),
      "trunc/2020-02-01.tif": ("metadata", "not a readable raster"),
      "trunc/2020-03-01.tif": ("metadata", "not a readable raster"),
      "trunc/2020-04-01.tif": ("metadata", "not a readable raster"),
      "trunc/yesterday.tif": ("listing", "does not parse"),
      "dupe/20200201.tif": ("pairing", "same location and capture time"),
      "grid/2020-02-01.tif": ("pairing", "do not overlap"),
      "nbands/2020-02-01.tif": ("pairing", "'B08' is absent"),
      "cplx/2020-01-01.tif": ("metadata", "complex64 is not supported"),
      "empty/2020-02-01.tif": ("usability", "unusable: 0.0% of pixels are valid"),
  }
  assert set(dead) == set(expect)
  for name, (stage, reason) in expect.items():
    assert dead[name]["stage"] == stage and reason in dead[name]["reason"], (name, dead[name])


def test_good_pairs_are_scored_and_masked_pixels_never_change(bad_run):
  out, _, _, good = bad_run
  rows = read_jsonl_rows(str(out), "pairs")
  assert sorted(r["location"] for r in rows) == ["dtype", "dupe", "good", "good", "nan", "shift",
                                                 "zero"]
  shift = next(r for r in rows if r["location"] == "shift")
  assert shift["resampling"] == "bilinear" and 0.9 < shift["overlap_fraction"] < 1.0
  assert sorted(r["after_uri"] for r in rows if r["location"] == "good") == good[1:]
  pairs = {r["location"]: r for r in rows}
  import rasterio

  nan = pairs["nan"]
  assert nan["valid_fraction"] == pytest.approx(1 - (32 * 80 + 24 * 8) / (64 * 80))
  with rasterio.open(nan["change_map_uri"]) as cm:
    m = cm.read(1)
  assert (m[:32] == 255).all() and (m[40:, :8] == 255).all(), "masked pixels are nodata"
  firsts = {r["location"] for r in read_jsonl_rows(str(out), "first_captures")}
  assert firsts == {"good", "zero", "trunc", "dupe", "grid", "shift", "nbands", "dtype", "empty",
                    "nan", "single"}


def test_many_causes_are_summarised_by_reason_and_do_not_fail_the_run(bad_run):
  _, summary, _, _ = bad_run
  groups = summary["failures_by_reason"]
  assert sum(g["count"] for g in groups) == summary["counts"]["dead_letters"]
  assert len(groups) > 5 and summary["failure"] is None


def test_every_listed_file_is_accounted_for_exactly_once(bad_run):
  out, summary, listed, _ = bad_run
  acc = summary["accounting"]
  assert acc["ok"] and acc["listed"] == len(listed) == acc["accounted"] and not acc["twice"]


def test_rerun_gives_the_same_rows_and_outputs_stay_under_output(tmp_path, bad_run):
  out, _, _, _ = bad_run
  again = tmp_path / "again"
  archive = os.path.join(os.path.dirname(out), "archive")
  sweep(again, "--input", archive, "--chip_overlap", "8")
  strip = lambda rows: sorted(json.dumps({k: v for k, v in r.items() if k != "change_map_uri"},
                                         sort_keys=True) for r in rows)
  for table in ("pairs", "chips", "dead_letter", "first_captures"):
    assert strip(read_jsonl_rows(str(out), table)) == strip(read_jsonl_rows(str(again), table))


def test_location_ids_cannot_escape_the_output_folder(tmp_path):
  paths = write_series(str(tmp_path / "a"), "x", ["2020-01-01", "2020-02-01"])
  manifest = tmp_path / "m.jsonl"
  manifest.write_text("\n".join(json.dumps({"location": "../../../escaped", "captured_at": d,
                                            "uri": p}) for d, p in zip(["2020-01-01", "2020-02-01"], paths)))
  out = tmp_path / "deep" / "out"
  sweep(out, "--manifest", str(manifest))
  (row,) = read_jsonl_rows(str(out), "pairs")
  assert row["location"] == "../../../escaped"
  assert os.path.realpath(row["change_map_uri"]).startswith(os.path.realpath(out) + os.sep)
  assert not (tmp_path / "escaped").exists()


def test_incompatible_model_directory_is_refused_before_work(tmp_path, capsys):
  import shutil

  model = tmp_path / "model"
  shutil.copytree(CVA_MODEL, model)
  meta = json.loads((model / "metadata.json").read_text())
  meta["bands"] = ["B02", "B03", "B04"]
  (model / "metadata.json").write_text(json.dumps(meta))
  code = sweep_main.main(["--input", SAMPLE_ARCHIVE, "--output", str(tmp_path / "o"),
                          "--model", str(model)])
  assert code == 2 and "transform_fn is for 4 bands" in capsys.readouterr().err
  assert not (tmp_path / "o").exists()


def test_a_file_whose_pixels_do_not_read_says_which_file_and_error(tmp_path):
  from apache_beam.pvalue import TaggedOutput

  from changesweep.pipeline.listing import CaptureFile, _ReadHeader
  from changesweep.pipeline.usability import MaskSpec
  from tests.rasters import corrupt_first_tile

  path = str(tmp_path / "loc" / "2020-01-01.tif")
  write_raster(path, scene(1, 64, 64), descriptions=NAMES)
  import rasterio
  with rasterio.open(path) as src:
    profile, data = src.profile, src.read()
  profile.update(tiled=True, blockxsize=32, blockysize=32, compress="deflate")
  with rasterio.open(path, "w", **profile) as dst:
    dst.write(data)
  corrupt_first_tile(path)
  [out] = _ReadHeader(None, MaskSpec()).process(
      CaptureFile("loc", "2020-01-01T00:00:00", None, path, 1))
  assert isinstance(out, TaggedOutput)
  dead = out.value
  assert dead.stage == "metadata"
  assert dead.reason.startswith(f"reading pixels of {path} failed: RasterioIOError: ")
  assert "TIFFReadEncodedTile" in dead.reason and "mask" not in dead.reason


def test_a_band_file_listed_twice_and_mixed_rows_lose_no_file(tmp_path):
  rows = ["location,captured_at,uri,band"]
  for date in ("20200101", "20200201"):
    for b, name in enumerate(NAMES):
      path = write_raster(str(tmp_path / "p" / f"{date}_{name}.tif"), scene(7, 40, 40)[b:b + 1])
      rows.append(f"p,{date},{path},{name}")
  rows.append(rows[-1])  # one band file listed twice
  single = write_raster(str(tmp_path / "p" / "20200201.tif"), scene(7, 40, 40),
                        descriptions=NAMES)
  rows.append(f"p,20200201,{single},")  # a single-file capture at the band files' time
  (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
  summary = sweep(tmp_path / "out", "--manifest", str(tmp_path / "m.csv"), "--no_maps")
  acc = summary["accounting"]
  assert acc["ok"] and acc["listed"] == 10, acc
  assert summary["counts"]["pairs"] == 1
  dead = read_jsonl_rows(str(tmp_path / "out"), "dead_letter")
  assert sorted(d["reason"].split(";")[0].split(" (")[0] for d in dead) == sorted([
      f"manifest row {tmp_path / 'm.csv'}:10 lists {tmp_path}/p/20200201_B08.tif again",
      "a single file and band files give p at 2020-02-01T00:00:00"])

"""Nights read only what is new: listed files the state knows are rebuilt from it, unopened;
new and changed files are read; the bytes read are counted (`listing/bytes_read`)."""
import json
import os
import shutil

import numpy as np
import pytest

from changesweep.pipeline import incremental, known_files, rasters, usability
from changesweep.pipeline import main as sweep_main
from changesweep.pipeline.listing import CaptureFile, _UseKnown
from changesweep.pipeline.sinks import read_jsonl_rows
from tests.conftest import CVA_MODEL
from tests.rasters import write_raster, write_series

SPEC = known_files.fingerprint(usability.MaskSpec())


def read_entry(path, modified=123.5):
  meta = rasters.read_meta(path)
  stats = usability.file_stats(path, meta.nodata)
  return CaptureFile("a", "2020-01-01T00:00:00", None, path, os.path.getsize(path), meta,
                     stats=stats, modified=modified)


def test_a_record_rebuilds_the_file_and_packs_each_crs_once(tmp_path):
  data = np.full((2, 6, 5), 7, np.uint16)
  data[:, 0, 0] = 0
  entry = read_entry(write_raster(str(tmp_path / "a.tif"), data, nodata=0,
                                  descriptions=("B04", "B08")))
  row = known_files.encode(entry, SPEC)
  other = {**row, "uri": str(tmp_path / "b.tif")}
  packed = json.loads(json.dumps(known_files.pack([other, row])))
  assert len(packed["crs"]) == 1 and len(packed["files"]) == 2
  [back, _] = known_files.unpack(packed)
  assert entry._replace(**known_files.decode(back)) == entry
  assert known_files.same_file(entry, back, SPEC, None)
  assert not known_files.same_file(entry._replace(modified=124.0), back, SPEC, None)
  assert not known_files.same_file(entry._replace(size_bytes=1), back, SPEC, None)
  assert not known_files.same_file(entry._replace(modified=None), back, SPEC, None)
  assert not known_files.same_file(entry, back, SPEC, "/m.tif")
  assert not known_files.same_file(entry, back, known_files.fingerprint(
      usability.MaskSpec(band="SCL")), None)
  with pytest.raises(ValueError, match="packed"):
    known_files.unpack({"files": [row]})


def test_an_unusable_file_keeps_its_nan_statistics(tmp_path):
  entry = read_entry(write_raster(str(tmp_path / "a.tif"), np.zeros((1, 4, 4), np.uint16),
                                  nodata=0))
  assert entry.stats.usable_fraction == 0.0
  row = json.loads(json.dumps(known_files.encode(entry, SPEC)))
  assert np.isnan(known_files.decode(row)["stats"].band_means[0])


def test_counting_reads_counts_opens_and_bytes_of_this_block_only(tmp_path):
  path = write_raster(str(tmp_path / "a.tif"), np.ones((3, 64, 64), np.uint16))
  with rasters.counting_reads() as tally:
    meta = rasters.read_meta(path)
    header = tally.bytes
    usability.file_stats(path, meta.nodata)
  assert tally.opens == 2 and 0 < header < os.path.getsize(path) <= tally.bytes
  with rasters.counting_reads() as other:
    pass
  rasters.read_meta(path)
  assert (other.opens, other.bytes) == (0, 0)
  with rasters.counting_reads(), pytest.raises(rasters.RasterError) as e:
    rasters.read_meta(str(tmp_path / "missing.tif"))
  assert "vsiriopener" not in str(e.value)


def test_a_known_sidecar_mask_that_changed_sends_the_file_to_be_read(tmp_path):
  root = str(tmp_path)
  masks = usability.MaskSpec(layout="{location}/{date}_mask.tif")
  path = write_raster(f"{root}/a/2020-01-01.tif", np.ones((1, 8, 8), np.uint16))
  mask = write_raster(f"{root}/a/2020-01-01_mask.tif", np.zeros((1, 8, 8), np.uint8))
  size, modified = known_files.identity(path)
  entry = CaptureFile("a", "2020-01-01T00:00:00", None, path, size, rasters.read_meta(path),
                      fields=(("date", "2020-01-01"), ("location", "a")), mask_uri=mask,
                      stats=usability.FileStats(1.0, (1.0,), (0.0,)), modified=modified,
                      mask_identity=known_files.identity(mask))
  row = known_files.encode(entry, known_files.fingerprint(masks))
  listed = entry._replace(meta=None, stats=None, mask_uri=None, mask_identity=None)
  use = _UseKnown(root, masks)
  [rebuilt] = use.process((path, {"listed": [listed], "known": [row]}))
  assert rebuilt == entry
  os.utime(mask, (modified + 10, modified + 10))
  [again] = use.process((path, {"listed": [listed], "known": [row]}))
  assert again.tag == "read" and again.value == listed


def _sweep(archive, out, *args):
  return sweep_main.run(["--input", str(archive), "--output", str(out), "--model", CVA_MODEL,
                         "--statistics", "model", "--no_maps", "--run_id", os.path.basename(out),
                         *args])


def _listing(summary):
  m = summary["metrics"]
  return {k: m.get(f"listing/{k}", 0) for k in ("files_matched", "files_known",
                                                "rasters_opened", "bytes_read")}


PATHS = ("run_id", "before_uri", "after_uri", "change_map_uri")


def _rows(out):
  return {r["pair_id"]: {k: v for k, v in r.items() if k not in PATHS}
          for r in read_jsonl_rows(str(out), "pairs")}


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
  root = tmp_path_factory.mktemp("known")
  source, archive, state = root / "source", root / "archive", root / "state.jsonl"
  write_series(str(source), "oslo", ["2020-01-01", "2020-02-01", "2020-03-01"], h=40, w=48,
               seed=1, change_at=2)
  write_series(str(source), "rio", ["2020-01-05", "2020-02-05"], h=40, w=48, seed=2)

  def arrive(loc, date):
    os.makedirs(archive / loc, exist_ok=True)
    shutil.copy(source / loc / f"{date}.tif", archive / loc / f"{date}.tif")

  for loc, date in [("oslo", "2020-01-01"), ("oslo", "2020-02-01"), ("rio", "2020-01-05"),
                    ("rio", "2020-02-05")]:
    arrive(loc, date)
  out = {"first": _sweep(archive, root / "night1", "--state", str(state)),
         "idle": _sweep(archive, root / "night2", "--state", str(state))}
  arrive("oslo", "2020-03-01")
  out["new"] = _sweep(archive, root / "night3", "--state", str(state))
  out["full"] = _sweep(archive, root / "full")
  # a capture rewritten in place (same name, other pixels, later time): read again
  rewritten = archive / "rio" / "2020-01-05.tif"
  write_series(str(root / "other"), "rio", ["2020-01-05"], h=40, w=48, seed=9)
  shutil.copy(root / "other" / "rio" / "2020-01-05.tif", rewritten)
  later = os.path.getmtime(rewritten) + 5
  os.utime(rewritten, (later, later))
  out["changed"] = _sweep(archive, root / "night4", "--state", str(state))
  return {"root": root, "archive": archive, "state": state, **out}


def test_a_night_without_new_captures_opens_no_raster(nights):
  first, idle = _listing(nights["first"]), _listing(nights["idle"])
  assert first["files_known"] == 0 and first["rasters_opened"] == 8
  assert first["bytes_read"] >= sum(os.path.getsize(p) for p in nights["archive"].rglob("*.tif")
                                    if "03-01" not in p.name)
  assert idle == {"files_matched": 4, "files_known": 4, "rasters_opened": 0, "bytes_read": 0}
  assert nights["idle"]["counts"]["pairs"] == 0 and nights["idle"]["accounting"]["ok"]
  assert nights["idle"]["listing"] == {"files_matched": 4, "files_known": 4, "files_read": 0,
                                       "rasters_opened": 0, "bytes_read": 0}


def test_a_night_with_one_new_capture_reads_only_that_one(nights):
  new = _listing(nights["new"])
  size = os.path.getsize(nights["archive"] / "oslo" / "2020-03-01.tif")
  assert (new["files_matched"], new["files_known"], new["rasters_opened"]) == (5, 4, 2)
  assert size <= new["bytes_read"] <= 2 * size
  assert nights["new"]["counts"]["pairs"] == 1 and nights["new"]["accounting"]["ok"]


def test_the_new_pair_rows_equal_a_full_runs(nights):
  tonight = _rows(nights["root"] / "night3")
  full = _rows(nights["root"] / "full")
  assert len(tonight) == 1 and len(full) == 3
  [(pair_id, row)] = tonight.items()
  assert row == full[pair_id]


def test_a_rewritten_file_is_read_again_and_its_record_replaced(nights):
  changed = _listing(nights["changed"])
  assert (changed["files_known"], changed["rasters_opened"]) == (4, 2)
  assert nights["changed"]["accounting"]["ok"]
  [rio] = [s for s in incremental.parse_state(nights["state"].read_text())
           if s.location == "rio"]
  uri = str(nights["archive"] / "rio" / "2020-01-05.tif")
  [record] = [r for r in rio.files if r["uri"] == uri]
  assert record["modified"] == os.path.getmtime(uri)
  assert record["stats"][1] == list(usability.file_stats(uri, None).band_means)


def test_a_manifest_night_looks_files_up_in_the_listing_and_reads_none(nights, tmp_path):
  rows = [{"location": p.parent.name, "captured_at": p.stem, "uri": str(p)}
          for p in sorted(nights["archive"].rglob("*.tif"))]
  manifest = tmp_path / "m.jsonl"
  manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
  state = tmp_path / "state.jsonl"
  shutil.copy(nights["state"], state)
  summary = sweep_main.run(["--manifest", str(manifest), "--output", str(tmp_path / "out"),
                            "--model", CVA_MODEL, "--statistics", "model", "--no_maps",
                            "--state", str(state)])
  m = summary["metrics"]
  assert m["listing/files_statted"] == 5 and m["listing/files_known"] == 5
  assert m.get("listing/bytes_read", 0) == 0 and summary["accounting"]["ok"]

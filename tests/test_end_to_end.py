"""Whole sweeps on the in-process runner: the real sample archive and generated odd archives."""
import glob
import json
import os

import pyarrow.parquet as pq
import pytest
import rasterio

from changesweep.pipeline import main as sweep_main
from changesweep.pipeline import schemas
from changesweep.pipeline.sinks import read_jsonl_rows
from tests.conftest import CVA_MODEL, SAMPLE_ARCHIVE, SAMPLE_LABELS
from tests.rasters import scene, write_raster, write_series


def sweep(out, *args):
  return sweep_main.run(["--output", str(out), "--model", CVA_MODEL, "--run_id", "test", *args])


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("sample")
  summary = sweep(out, "--input", SAMPLE_ARCHIVE, "--num_shards", "2")
  return out, summary


def test_sample_archive_gives_one_row_per_consecutive_pair(sample_run):
  out, summary = sample_run
  dates = {loc: sorted(os.listdir(os.path.join(SAMPLE_ARCHIVE, loc)))
           for loc in os.listdir(SAMPLE_ARCHIVE)}
  expected = {(loc, d[i][:10], d[i + 1][:10]) for loc, d in dates.items() for i in range(len(d) - 1)}
  rows = read_jsonl_rows(str(out), "pairs")
  assert {(r["location"], r["before_captured_at"][:10], r["after_captured_at"][:10])
          for r in rows} == expected
  assert len(rows) == len(expected)
  assert summary["counts"] == {"locations": 4, "pairs": 4, "first_captures": 4,
                               "dead_letters": 0, "chips": 16}
  for r in rows:
    schemas.check_row(r, schemas.PAIRS)
    assert r["crs"].startswith("EPSG:") and r["model_id"] == "cva-s2" and r["run_id"] == "test"
    assert 0 < r["changed_fraction"] < 0.5 and r["regions"]


def test_run_json_says_where_the_seconds_went_by_step(sample_run):
  out, summary = sample_run
  with open(out / "run.json") as f:
    steps = json.load(f)["step_seconds"]
  assert steps == summary["step_seconds"] and list(steps.values()) == sorted(
      steps.values(), reverse=True)
  assert all(s >= 0.05 for s in steps.values())
  # Scoring and the pair aggregation carry this archive's work (about 1-2 s each). Beam samples
  # execution time every 200 ms, so the chip reads (0.1-0.3 s here) may or may not clear the
  # floor; tests/pipeline/test_metrics.py checks the summing and the floor on fixed counters.
  assert any("RunInference" in step for step in steps)
  assert any("FinishPair" in step for step in steps)


def test_parquet_holds_the_same_rows_as_jsonl_and_schemas_sit_beside_them(sample_run):
  out, _ = sample_run
  for table in ("pairs", "chips"):
    assert len(glob.glob(f"{out}/{table}/{table}-*-of-00002.parquet")) == 2
    parquet = pq.ParquetDataset(glob.glob(f"{out}/{table}/*.parquet")).read().to_pylist()
    jsonl = read_jsonl_rows(str(out), table)
    key = lambda r: (r["pair_id"], r.get("chip_index", -1))
    assert sorted(map(key, parquet)) == sorted(map(key, jsonl))
    with open(f"{out}/schema/{table}.json") as f:
      bq = json.load(f)
    assert [f["name"] for f in bq] == [f.name for f in schemas.TABLES[table]]
    assert set(jsonl[0]) == {f["name"] for f in bq}
  pairs = read_jsonl_rows(str(out), "pairs")
  chips = read_jsonl_rows(str(out), "chips")
  assert len(chips) == sum(r["num_chips"] for r in pairs)


def test_change_maps_are_georeferenced_and_find_the_labelled_change(sample_run):
  out, _ = sample_run
  for r in read_jsonl_rows(str(out), "pairs"):
    with rasterio.open(r["after_uri"]) as src, rasterio.open(r["change_map_uri"]) as cm:
      assert (cm.crs, cm.transform, cm.shape) == (src.crs, src.transform, src.shape)
      prob = cm.read(1).astype(float) * cm.scales[0]
    with rasterio.open(os.path.join(SAMPLE_LABELS, f"{r['location']}.png")) as lab:
      changed = lab.read(1) == 255
    # CVA is a weak detector, but labelled change must stand out from the rest of the scene.
    assert prob[changed].mean() > 2 * prob[~changed].mean(), r["location"]


def test_odd_archive_long_series_single_capture_and_bad_files(tmp_path):
  archive = tmp_path / "archive"
  dates = ["2020-01-05", "2020-02-04", "2020-03-05", "2020-04-04", "2020-05-04"]
  write_series(str(archive), "farm", dates, change_at=3)
  write_series(str(archive), "lonely", ["2020-01-01"], seed=3)
  write_series(str(archive), "regrid", ["2020-01-01"], seed=4)
  write_raster(str(archive / "regrid" / "2020-02-01.tif"), scene(5, 70, 80),
               descriptions=("B02", "B03", "B04", "B08"))
  (archive / "farm" / "2020-06-01.tif").write_bytes(b"")  # zero bytes
  (archive / "farm" / "notes.tif").write_text("not a raster, nor a date")
  (archive / "labels").mkdir()
  (archive / "labels" / "farm.png").write_bytes(b"\x89PNG")  # not the layout's shape: ignored
  out = tmp_path / "out"
  summary = sweep(out, "--input", str(archive), "--chip_overlap", "8")
  pairs = read_jsonl_rows(str(out), "pairs")
  dead = read_jsonl_rows(str(out), "dead_letter")
  firsts = read_jsonl_rows(str(out), "first_captures")
  farm = [r for r in pairs if r["location"] == "farm"]
  assert sorted(r["after_captured_at"][:10] for r in farm) == dates[1:]
  assert {r["location"] for r in firsts} == {"farm", "lonely", "regrid"}
  # a capture of another extent is read onto the earlier one's grid and scored
  regrid = [r for r in pairs if r["location"] == "regrid"]
  assert len(regrid) == 1 and (regrid[0]["height"], regrid[0]["width"]) == (64, 80)
  assert regrid[0]["resampling"] == "bilinear"
  reasons = {os.path.basename(d["uri"]): (d["stage"], d["reason"]) for d in dead}
  assert reasons["2020-06-01.tif"][0] == "metadata"
  assert reasons["notes.tif"] == ("listing", "date 'notes' does not parse as ISO 8601 (e.g. 2017-10-30 or 20171030)")
  assert "2020-02-01.tif" not in reasons
  assert summary["counts"]["dead_letters"] == 2
  top = max(farm, key=lambda r: r["change_score"])
  assert top["after_captured_at"].startswith(dates[3])
  box = top["regions"][0]
  assert (box["row0"], box["col0"], box["row1"], box["col1"]) == (16, 20, 32, 40)
  quiet = [r for r in farm if r is not top]
  assert all(r["changed_fraction"] < top["changed_fraction"] / 5 for r in quiet)


def test_manifest_and_one_file_per_band(tmp_path):
  archive = tmp_path / "bands"
  rows = ["location,captured_at,uri,band"]
  for i, date in enumerate(["20200101", "20200201", "20200301"]):
    data = scene(7, 40, 40)
    if i == 2:
      data[:, :10, :10] = 5000
    for b, name in enumerate(("B02", "B03", "B04", "B08")):
      path = write_raster(str(archive / "plot7" / f"{date}_{name}.tif"), data[b:b + 1])
      rows.append(f"plot7,{date},{os.path.relpath(path, tmp_path)},{name}")
  (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
  out_m = tmp_path / "out_m"
  sweep(out_m, "--manifest", str(tmp_path / "manifest.csv"))
  out_l = tmp_path / "out_l"
  sweep(out_l, "--input", str(archive), "--layout", "{location}/{date:%Y%m%d}_{band}.tif")
  by_manifest = read_jsonl_rows(str(out_m), "pairs")
  by_layout = read_jsonl_rows(str(out_l), "pairs")
  assert len(by_manifest) == 2
  assert sorted((r["pair_id"], round(r["change_score"], 6)) for r in by_manifest) == sorted(
      (r["pair_id"], round(r["change_score"], 6)) for r in by_layout)
  assert by_manifest[0]["after_uri"].count(";") == 3


@pytest.mark.parametrize("model", [CVA_MODEL, None], ids=["cva", "default-model"])
def test_model_copies_score_every_pair(tmp_path, model):
  # With model_copies Beam shares the model through a proxy (as on GPU workers).
  args = ["--input", SAMPLE_ARCHIVE, "--output", str(tmp_path / "o"), "--model_copies", "1",
          "--no_maps", "--run_id", "test"] + (["--model", model] if model else [])
  summary = sweep_main.run(args)
  expected = sum(len(os.listdir(os.path.join(SAMPLE_ARCHIVE, loc))) - 1
                 for loc in os.listdir(SAMPLE_ARCHIVE))
  assert summary["counts"]["pairs"] == expected > 0
  assert summary["counts"]["dead_letters"] == 0


def test_the_same_archive_in_two_folders_gives_the_same_pair_ids(tmp_path):
  import shutil

  ids = []
  for where in ("one", "two/deeper"):
    archive = shutil.copytree(SAMPLE_ARCHIVE, tmp_path / where / "archive")
    sweep(tmp_path / where / "out", "--input", str(archive), "--no_maps")
    ids.append(sorted(r["pair_id"] for r in read_jsonl_rows(str(tmp_path / where / "out"),
                                                            "pairs")))
  assert ids[0] == ids[1] and len(ids[0]) == 4


def test_a_run_where_every_pair_fails_the_same_way_exits_non_zero(tmp_path, monkeypatch,
                                                                   capsys):
  from changesweep.pipeline import scoring

  def out_of_memory(self, before, after, valid=None):
    raise RuntimeError(f"OOM when allocating tensor with shape {list(before.shape)}")

  monkeypatch.setattr(scoring.ChangeModel, "score", out_of_memory)
  out = tmp_path / "o"
  code = sweep_main.main(["--input", SAMPLE_ARCHIVE, "--output", str(out), "--model", CVA_MODEL,
                          "--no_maps", "--no_report"])
  assert code == 1
  err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
  assert len(err) == 1 and err[0].startswith(
      "changesweep sweep: error: 4 of 4 captures failed for one reason: pair with <path>: "
      "inference failed: RuntimeError: OOM when allocating tensor with shape [N, N, N, N] "
      "(N chip(s) failed) (scoring; e.g. pair with ")
  assert len(read_jsonl_rows(str(out), "dead_letter")) == 4
  with open(out / "run.json") as f:
    run = json.load(f)
  assert [(g["count"], g["stage"]) for g in run["failures_by_reason"]] == [(4, "scoring")]


def test_usage_errors_come_before_any_work(tmp_path, capsys):
  (tmp_path / "empty").mkdir()
  code = sweep_main.main(["--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o"),
                          "--model", CVA_MODEL])
  assert code == 2 and "archive is empty" in capsys.readouterr().err
  code = sweep_main.main(["--input", SAMPLE_ARCHIVE, "--output", str(tmp_path / "o"),
                          "--model", str(tmp_path)])
  assert code == 2 and "--model" in capsys.readouterr().err
  code = sweep_main.main(["--input", SAMPLE_ARCHIVE, "--output", str(tmp_path / "o"),
                          "--model", CVA_MODEL, "--bands", "B04,B03"])
  assert code == 2 and "reads 4 bands" in capsys.readouterr().err
  assert not (tmp_path / "o").exists()


def test_fixed_band_statistics_come_from_a_sample_so_each_chip_is_read_once(tmp_path):
  """Archive statistics for a fixed-band model read a few chips per pair, not the archive
  twice; `--statistics_chips 0` keeps the full second pass as an option."""
  archive = tmp_path / "archive"
  write_series(str(archive), "field", ["2021-01-01", "2021-02-01", "2021-03-01"], h=600, w=600,
               change_at=2)
  sampled = sweep(tmp_path / "sampled", "--input", str(archive), "--no_maps")
  full = sweep(tmp_path / "full", "--input", str(archive), "--no_maps", "--statistics_chips", "0")
  chips = 2 * 9  # two pairs of 600^2 in 256^2 chips with 16 px overlap
  for summary in (sampled, full):
    assert summary["counts"]["chips"] == chips
    assert summary["metrics"]["chips/chips_read"] == chips
  assert sampled["metrics"]["chips/statistics_reads"] == 2 * 4
  assert full["metrics"]["chips/statistics_reads"] == chips
  rows = {name: {r["pair_id"]: r for r in read_jsonl_rows(str(tmp_path / name), "pairs")}
          for name in ("sampled", "full")}
  assert rows["sampled"].keys() == rows["full"].keys() and len(rows["full"]) == 2
  for pid, r in rows["full"].items():  # a sample of the same archive: the same verdicts
    assert abs(rows["sampled"][pid]["changed_fraction"] - r["changed_fraction"]) < 0.01


@pytest.mark.parametrize("model", [None, CVA_MODEL])
def test_the_sweep_graph_passes_beams_type_checks(tmp_path, model):
  """Runs skip Beam's construction-time type checks (`--check_types` turns them on); the
  graph they would check is checked here, for the default models and a fixed one."""
  import apache_beam as beam
  from apache_beam.options.pipeline_options import TypeOptions

  from changesweep.pipeline.sweep import build_sweep

  argv = ["--input", SAMPLE_ARCHIVE, "--output", str(tmp_path)] + (["--model", model] if model
                                                                  else [])
  cfg, options = sweep_main.parse_args(argv)
  assert options.view_as(TypeOptions).pipeline_type_check is False
  cfg, options = sweep_main.parse_args(argv + ["--check_types"])
  assert options.view_as(TypeOptions).pipeline_type_check is True
  outputs = build_sweep(beam.Pipeline(options=options), cfg, str(tmp_path / "tmp"))
  assert "pairs" in outputs


def test_two_local_worker_processes_give_the_in_process_rows_and_maps(tmp_path):
  # Worker processes end without interpreter teardown (pipeline.local_workers): nothing they
  # wrote may be missing. The model's own statistics: archive statistics summed across two
  # workers differ in the last bits, which moves a few pixels across the threshold.
  runs = {}
  for name, extra in (("one", []), ("two", ["--direct_num_workers", "2",
                                            "--direct_running_mode", "multi_processing"])):
    runs[name] = tmp_path / name
    summary = sweep(runs[name], "--input", SAMPLE_ARCHIVE, "--statistics", "model", *extra)
    assert summary["counts"] == {"locations": 4, "pairs": 4, "first_captures": 4,
                                 "dead_letters": 0, "chips": 16}
  drop = ("change_map_uri", "scored_at", "written_at")
  for table in ("pairs", "chips"):
    rows = [sorted(({k: v for k, v in r.items() if k not in drop}
                    for r in read_jsonl_rows(str(out), table)),
                   key=lambda r: (r["pair_id"], r.get("chip_index")))
            for out in runs.values()]
    assert rows[0] == rows[1] and rows[0]
  maps = [sorted(glob.glob(str(out / "maps" / "*" / "*.tif"))) for out in runs.values()]
  assert [os.path.relpath(m, runs["one"]) for m in maps[0]] == [
      os.path.relpath(m, runs["two"]) for m in maps[1]] and len(maps[0]) == 4
  for a, b in zip(*maps):
    with rasterio.open(a) as one, rasterio.open(b) as two:
      assert (one.read() == two.read()).all()

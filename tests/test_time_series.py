"""Issue 9: a three-year series per location, seasons, clouds and nodata, one abrupt change."""
import os

import numpy as np
import pytest
import rasterio

from changesweep.pipeline import main as sweep_main
from changesweep.pipeline.sinks import read_jsonl_rows
from tests.conftest import CVA_MODEL
from tests.rasters import seasonal_series

CHANGE_ON = "2021-08-10"
OPTS = ["--model", CVA_MODEL, "--mask_band", "QA", "--min_usable_fraction", "0.3",
        "--chip_overlap", "8", "--no_maps", "--no_report",
        # Fixed statistics: with archive statistics a night's scores depend on which pairs
        # that night happens to score, and nightly runs could not match one full run.
        "--statistics", "model"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
  root = tmp_path_factory.mktemp("series") / "archive"
  changed = seasonal_series(str(root), "forest", "2020-01-05", 3 * 365, 16, seed=1,
                            change_on=CHANGE_ON, overcast=(10, 40), nodata_at=(25,))
  steady = seasonal_series(str(root), "meadow", "2020-01-09", 3 * 365, 16, seed=2,
                           overcast=(30,), nodata_at=(5, 50))
  return root, changed, steady


@pytest.fixture(scope="module")
def full_run(archive, tmp_path_factory):
  root, *_ = archive
  out = tmp_path_factory.mktemp("full")
  summary = sweep_main.run(["--input", str(root), "--output", str(out), "--run_id", "full",
                            *OPTS])
  return out, summary


def test_abrupt_change_is_the_top_anomaly_and_no_seasonal_pair_beats_it(full_run):
  out, _ = full_run
  rows = read_jsonl_rows(str(out), "pairs")
  forest = sorted((r for r in rows if r["location"] == "forest"),
                  key=lambda r: -(r["anomaly_score"] or -1))
  top = forest[0]
  assert top["before_captured_at"] < CHANGE_ON <= top["after_captured_at"]
  assert top["anomaly_method"] == "seasonal" and top["history_length"] > 20
  meadow = [r for r in rows if r["location"] == "meadow" and r["anomaly_score"] is not None]
  assert meadow and max(r["anomaly_score"] for r in meadow) < top["anomaly_score"]
  print(f"\nabrupt change: rank 1 of {len(forest)} forest pairs, anomaly "
        f"{top['anomaly_score']:.2f} ({top['anomaly_method']}); next forest pair "
        f"{forest[1]['anomaly_score']:.2f}; largest meadow (seasonal only) "
        f"{max(r['anomaly_score'] for r in meadow):.2f}; change_score of the abrupt pair "
        f"{top['change_score']:.3f}, largest meadow change_score "
        f"{max(r['change_score'] for r in meadow):.3f}")
  # The first year has too little history for the seasonal model: robust or none.
  assert {r["anomaly_method"] for r in rows if r["after_captured_at"] < "2020-06-01"} <= {
      "robust", "none"}


def test_fully_cloudy_and_nodata_captures_are_unusable_and_pairing_skips_them(archive, full_run):
  _, changed, steady = archive
  out, summary = full_run
  dead = {os.path.basename(os.path.dirname(d["uri"])) + "/" + os.path.basename(d["uri"]): d
          for d in read_jsonl_rows(str(out), "dead_letter")}
  skipped = [changed[10], changed[40], changed[25], steady[30], steady[5], steady[50]]
  for c in skipped:
    key = os.path.basename(os.path.dirname(c["path"])) + "/" + os.path.basename(c["path"])
    assert dead[key]["stage"] == "usability" and "unusable" in dead[key]["reason"]
  assert len(dead) == len(skipped)
  pairs = {(r["location"], r["before_captured_at"][:10], r["after_captured_at"][:10])
           for r in read_jsonl_rows(str(out), "pairs")}
  assert ("forest", changed[9]["date"], changed[11]["date"]) in pairs
  assert ("meadow", steady[29]["date"], steady[31]["date"]) in pairs
  assert summary["accounting"]["ok"]


def test_cloudy_pixels_never_appear_in_change_maps(archive, tmp_path):
  root, changed, _ = archive
  # A short sweep with maps over the first cloudy captures of one location.
  sub = tmp_path / "a" / "forest"
  sub.mkdir(parents=True)
  for c in changed[:12]:
    os.symlink(c["path"], sub / os.path.basename(c["path"]))
  out = tmp_path / "out"
  sweep_main.run(["--input", str(tmp_path / "a"), "--output", str(out), "--run_id", "c",
                  *[o for o in OPTS if o not in ("--no_maps",)]])
  by_after = {r["after_captured_at"][:10]: r for r in read_jsonl_rows(str(out), "pairs")}
  cloudy = [c for c in changed[:12] if c["cloud"] is not None]
  assert cloudy
  for c in cloudy:
    with rasterio.open(by_after[c["date"]]["change_map_uri"]) as cm:
      m = cm.read(1)
    assert (m[c["cloud"]] == 255).all(), "cloud pixels are nodata in the map, never change"
    assert (m[~c["cloud"]] != 255).all()


def test_nightly_history_gives_the_same_scores_as_one_run(archive, full_run, tmp_path):
  root, changed, steady = archive
  full_out, _ = full_run
  key = lambda r: (r["location"], r["before_captured_at"], r["after_captured_at"])
  full = {key(r): r for r in read_jsonl_rows(str(full_out), "pairs")}
  nights = ["2020-12-31", "2021-12-31", "2023-12-31"]
  night_dir = tmp_path / "nights"
  state = tmp_path / "state.jsonl"
  seen = {}
  previous = None
  archive_n = night_dir / "archive"  # the archive grows night after night
  for n, last in enumerate(nights):
    for c in changed + steady:
      if (nights[n - 1] if n else "") < c["date"] <= last:
        dst = archive_n / os.path.basename(os.path.dirname(c["path"])) / os.path.basename(c["path"])
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(c["path"], dst)
    out = night_dir / f"out{n}"
    args = ["--input", str(archive_n), "--output", str(out), "--run_id", f"n{n}",
            "--state", str(state), *OPTS]
    if previous:
      args += ["--history", str(previous)]
    sweep_main.run(args)
    for r in read_jsonl_rows(str(out), "pairs"):
      assert key(r) not in seen, "a pair was scored twice"
      seen[key(r)] = r
    previous = out
  assert set(seen) == set(full)
  for pid, r in seen.items():
    assert r["anomaly_method"] == full[pid]["anomaly_method"], pid
    assert r["history_length"] == full[pid]["history_length"]
    if r["anomaly_score"] is None:
      assert full[pid]["anomaly_score"] is None
    else:
      np.testing.assert_allclose(r["anomaly_score"], full[pid]["anomaly_score"], rtol=1e-6)

"""Whole sweeps over one file per band: a 20 m band beside 10 m ones, and `--bands ndvi`."""
import os

import numpy as np
import pytest
from rasterio.transform import Affine

from changesweep.pipeline import main as sweep_main
from changesweep.pipeline.options import DEFAULT_MODEL
from changesweep.pipeline.sinks import read_jsonl_rows
from tests.conftest import CVA_MODEL
from tests.rasters import GRID, scene, write_raster

LAYOUT = "{location}/{date:%Y%m%d}_{band}.tif"
DATES = ("20200101", "20200201", "20200301")


def write_archive(root, coarse_nir: bool) -> int:
  """Two locations, three dates; B08 at 20 m (or 10 m); vegetation cleared at the third date."""
  n = 0
  for loc, seed in (("farm", 7), ("field", 8)):
    base = scene(seed, 48, 48).astype(np.float64)
    for i, date in enumerate(DATES):
      data = base + np.random.default_rng(seed * 10 + i).normal(0, 8, base.shape)
      data[3] = 2.2 * data[2]  # NIR bright: vegetation
      if i == 2:
        data[:, 8:24, 16:32] = np.array([1800, 1900, 2100, 2000])[:, None, None]  # bare soil
      for b, name in enumerate(("B02", "B03", "B04", "B08")):
        plane = data[b:b + 1]
        kw = {}
        if name == "B08" and coarse_nir:
          plane = plane.reshape(1, 24, 2, 24, 2).mean(axis=(2, 4))
          kw["transform"] = GRID @ Affine.scale(2)
        write_raster(str(root / loc / f"{date}_{name}.tif"), plane.astype(np.uint16), **kw)
        n += 1
  return n


def sweep(out, root, *args):
  return sweep_main.run(["--output", str(out), "--run_id", "test", "--input", str(root),
                         "--layout", LAYOUT, "--no_report", *args])


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
  root = tmp_path_factory.mktemp("bands")
  return {"mixed": (root / "mixed", write_archive(root / "mixed", True)),
          "fine": (root / "fine", write_archive(root / "fine", False))}


def scores(out):
  return {r["pair_id"]: r["change_score"] for r in read_jsonl_rows(str(out), "pairs")}


def test_a_20_m_band_beside_10_m_bands_is_swept_on_the_10_m_grid(archives, tmp_path):
  (mixed, listed), (fine, _) = archives["mixed"], archives["fine"]
  summary = sweep(tmp_path / "m", mixed, "--model", CVA_MODEL)
  assert summary["counts"]["pairs"] == 4 and summary["counts"]["dead_letters"] == 0
  assert summary["accounting"]["ok"] and summary["accounting"]["listed"] == listed
  rows = read_jsonl_rows(str(tmp_path / "m"), "pairs")
  assert {(r["height"], r["width"]) for r in rows} == {(48, 48)}
  sweep(tmp_path / "f", fine, "--model", CVA_MODEL)
  on_mixed, on_fine = scores(tmp_path / "m"), scores(tmp_path / "f")
  assert on_mixed.keys() == on_fine.keys()
  changed = {r["pair_id"] for r in rows if r["after_captured_at"].startswith("2020-03")}
  for pid in on_mixed:  # the change is found at 20 m NIR as at 10 m
    if pid in changed:
      assert on_mixed[pid] > 0.5 and on_fine[pid] > 0.5
    else:
      assert on_mixed[pid] < 0.2 and on_fine[pid] < 0.2


def test_bands_ndvi_feeds_the_any_band_model_an_index(archives, tmp_path):
  mixed, listed = archives["mixed"]
  summary = sweep(tmp_path / "n", mixed, "--bands", "ndvi", "--no_maps")
  assert summary["counts"]["pairs"] == 4 and summary["counts"]["dead_letters"] == 0
  assert summary["accounting"]["ok"] and summary["accounting"]["listed"] == listed
  rows = read_jsonl_rows(str(tmp_path / "n"), "pairs")
  assert {r["model_id"] for r in rows} == {os.path.basename(DEFAULT_MODEL)}
  history = read_jsonl_rows(str(tmp_path / "n"), "history")
  assert len(history) == 6 and all(len(h["band_means"]) == 1 for h in history)
  assert all(0.3 < h["band_means"][0] < 0.5 for h in history)  # NDVI of (2.2 r - r) / 3.2 r
  changed = [r for r in rows if r["after_captured_at"].startswith("2020-03")]
  quiet = [r for r in rows if r not in changed]
  assert min(r["change_score"] for r in changed) > max(r["change_score"] for r in quiet)


def test_an_index_without_its_source_bands_fails_the_run_with_one_line(archives, tmp_path,
                                                                      capsys):
  mixed, listed = archives["mixed"]
  out = tmp_path / "x"
  code = sweep_main.main(["--output", str(out), "--input", str(mixed), "--layout", LAYOUT,
                          "--bands", "nbr", "--no_maps", "--no_report"])
  assert code == 1
  err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
  assert len(err) == 1 and "6 of 6 captures failed for one reason: nbr needs bands nir and " \
      "swir22: band 'swir22' is absent" in err[0]
  dead = read_jsonl_rows(str(out), "dead_letter")
  assert len(dead) == 6 and {d["stage"] for d in dead} == {"pairing"}
  assert sum(d["uri"].count(";") + 1 for d in dead) == listed


def test_a_manifest_bands_column_names_unnamed_bands_for_ndvi(tmp_path):
  rows = ["location,captured_at,uri,bands"]
  for i, date in enumerate(DATES):
    data = scene(9, 40, 40).astype(np.float64)
    data[3] = 2.0 * data[2]
    if i == 2:
      data[:, :16, :16] = np.array([1800, 1900, 2100, 2000])[:, None, None]
    path = write_raster(str(tmp_path / "a" / f"{date}.tif"), data.astype(np.uint16))  # unnamed
    rows.append(f'plot,{date},a/{date}.tif,"B02,B03,B04,B08"')
  rows.append(f"plot,20200401,a/{DATES[0]}x.tif,B04;B08")  # 2 names for 4 bands
  write_raster(str(tmp_path / "a" / f"{DATES[0]}x.tif"), scene(9, 40, 40))
  (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
  summary = sweep_main.run(["--output", str(tmp_path / "o"), "--run_id", "test", "--manifest",
                            str(tmp_path / "m.csv"), "--bands", "ndvi", "--no_maps",
                            "--no_report"])
  assert summary["counts"]["pairs"] == 2 and summary["accounting"]["ok"]
  (dead,) = read_jsonl_rows(str(tmp_path / "o"), "dead_letter")
  assert dead["stage"] == "metadata" and "the manifest names 2 bands" in dead["reason"]
  rows = sorted(read_jsonl_rows(str(tmp_path / "o"), "pairs"), key=lambda r: r["after_uri"])
  assert rows[1]["change_score"] > rows[0]["change_score"]

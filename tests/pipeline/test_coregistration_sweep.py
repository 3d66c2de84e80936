"""Pairs across grids, end to end: captures on other UTM zones, resolutions and shifted content.

One archive of tiny synthetic captures (`tests.rasters.render`: one ground in map coordinates,
rendered onto each capture's grid) is swept with the CVA model twice, without and with
`--coregister`. The function-level checks (planning, warped reads, the shift estimate) are in
test_grids.py.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio

from changesweep.pipeline import coregistration, main as sweep_main, report, schemas
from changesweep.pipeline.elements import Pair, PROB_NODATA, PROB_SCALE, SceneRef
from changesweep.pipeline.sinks import read_jsonl_rows
from tests.conftest import CVA_MODEL
from tests.rasters import (BEFORE_GRID, CHANGE, X0, Y0, ZONE32, ZONE33, render, write_raster,
                           zone33_grid)

NAMES = ("B02", "B03", "B04", "B08")
SHIFT = (2.4, -1.3)  # content displacement of the "shifted" location's later capture, pixels
FAR = (12.0, 0.0)  # past the 8 px bound: flagged, never corrected
THRESHOLD = 0.5  # the CVA model's


def write_archive(root: str) -> list[str]:
  """The archive; returns every file written."""
  def capture(location, date, crs, transform, shape, **kw):
    return render(os.path.join(root, location, f"{date}.tif"), crs, transform, shape, bands=4,
                  descriptions=NAMES, **kw)

  files = []
  for location, res in (("zones", 10.0), ("coarse", 20.0)):
    transform, shape = zone33_grid(res)
    files += [capture(location, "2020-01-01", ZONE32, BEFORE_GRID, (64, 64)),
              capture(location, "2020-06-01", ZONE33, transform, shape, change=True)]
  far_away = rasterio.transform.Affine(10.0, 0, X0 + 5000.0, 0, -10.0, Y0)
  files += [capture("apart", "2020-01-01", ZONE32, BEFORE_GRID, (64, 64)),
            capture("apart", "2020-06-01", ZONE32, far_away, (64, 64))]
  for location, shift in (("shifted", SHIFT), ("far", FAR)):
    files += [capture(location, "2020-01-01", ZONE32, BEFORE_GRID, (96, 96)),
              capture(location, "2020-06-01", ZONE32, BEFORE_GRID, (96, 96), shift_px=shift,
                      change=True)]
  flat = np.full((4, 64, 64), 1200, np.uint16)  # nothing to correlate: the shift is not measured
  files += [write_raster(os.path.join(root, "flat", f"{d}.tif"), flat, crs=ZONE32,
                         transform=BEFORE_GRID, descriptions=NAMES)
            for d in ("2020-01-01", "2020-06-01")]
  return files


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("coreg")
  files = write_archive(str(root / "archive"))
  out = {"files": files}
  for name, extra in (("plain", []), ("coregister", ["--coregister"])):
    summary = sweep_main.run(["--input", str(root / "archive"), "--output", str(root / name),
                              "--model", CVA_MODEL, "--run_id", name, *extra])
    out[name] = (str(root / name), summary)
  return out


def rows_of(out: str) -> dict[str, dict]:
  return {r["location"]: r for r in read_jsonl_rows(out, "pairs")}


def read_map(row: dict) -> tuple[np.ndarray, rasterio.Affine, rasterio.crs.CRS]:
  with rasterio.open(row["change_map_uri"]) as src:
    return src.read(1), src.transform, src.crs


def change_truth(transform, shape) -> np.ndarray:
  """Pixels whose centre lies inside the pasted change."""
  rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
  xs, ys = rasterio.transform.xy(transform, rows.ravel(), cols.ravel())
  xs, ys = np.asarray(xs).reshape(shape), np.asarray(ys).reshape(shape)
  x0, x1, y1, y0 = CHANGE
  return (xs > x0) & (xs < x1) & (ys > y1) & (ys < y0)


def grow(mask: np.ndarray, px: int) -> np.ndarray:
  out = mask.copy()
  for _ in range(px):
    for axis in (0, 1):
      for step in (1, -1):
        out |= np.roll(out, step, axis)
  return out


@pytest.mark.parametrize("location", ["zones", "coarse"], ids=["utm33_10m", "utm33_20m"])
def test_other_zone_and_resolution_are_scored_on_the_earlier_grid(runs, location):
  out, _ = runs["plain"]
  row = rows_of(out)[location]
  assert (row["height"], row["width"]) == (64, 64) and row["resampling"] == "bilinear"
  assert rasterio.crs.CRS.from_wkt(row["grid_crs"]).to_epsg() == 32632
  assert 0.8 < row["overlap_fraction"] < 1.0  # the later capture was cut shorter
  prob, transform, crs = read_map(row)
  assert crs.to_epsg() == 32632 and tuple(transform)[:6] == tuple(BEFORE_GRID)[:6]
  # Outside the later capture's footprint: nodata in the map, never change.
  assert (prob[-1] == PROB_NODATA).all() and (prob[:40] != PROB_NODATA).all()
  changed = (prob >= THRESHOLD * PROB_SCALE) & (prob != PROB_NODATA)
  truth = change_truth(transform, prob.shape)
  inner = truth & ~grow(~truth, 1)
  assert changed[inner].all()
  assert changed[~grow(truth, 1)].sum() <= 0.05 * truth.sum()
  # The grid fields are measured on the common grid too: no residual shift there.
  assert abs(row["shift_px"]["dx"]) < 0.5 and abs(row["shift_px"]["dy"]) < 0.5
  assert not row["coregistered"] and not row["shift_flagged"]


def test_no_overlap_is_a_dead_letter_with_the_reason(runs):
  out, _ = runs["plain"]
  dead = [d for d in read_jsonl_rows(out, "dead_letter") if d["location"] == "apart"]
  assert len(dead) == 1 and dead[0]["stage"] == "pairing"
  assert dead[0]["uri"].endswith("apart/2020-06-01.tif") and "do not overlap" in dead[0]["reason"]
  assert "apart" not in rows_of(out)


def test_shift_is_measured_and_coregister_removes_the_false_changes(runs):
  plain, fixed = rows_of(runs["plain"][0])["shifted"], rows_of(runs["coregister"][0])["shifted"]
  for row in (plain, fixed):  # measured before any correction, with or without --coregister
    assert abs(row["shift_px"]["dx"] - SHIFT[0]) < 0.2
    assert abs(row["shift_px"]["dy"] - SHIFT[1]) < 0.2
    assert not row["shift_flagged"]
  assert not plain["coregistered"] and fixed["coregistered"]
  assert plain["resampling"] == "none" and fixed["resampling"] == "bilinear"
  counts = {}
  for name, row in (("plain", plain), ("fixed", fixed)):
    prob, transform, _ = read_map(row)
    changed = (prob >= THRESHOLD * PROB_SCALE) & (prob != PROB_NODATA)
    truth = change_truth(transform, prob.shape)
    assert changed[truth & ~grow(~truth, 3)].all()  # the pasted change is found either way
    counts[name] = int(changed[~grow(truth, 3)].sum())  # false changes: along the fields' edges
  assert counts["plain"] > 100, counts
  assert counts["fixed"] <= 0.1 * counts["plain"], counts
  assert fixed["changed_pixels"] < plain["changed_pixels"]


def test_shift_past_the_bound_is_flagged_not_corrected_and_the_report_says_so(runs):
  out, _ = runs["coregister"]
  row = rows_of(out)["far"]
  assert row["shift_flagged"] and not row["coregistered"] and row["resampling"] == "none"
  assert abs(row["shift_px"]["dx"] - FAR[0]) < 0.5
  with open(report.write_report(out, top_n=0)) as f:
    page = f.read()
  assert 'id="flagged"' in page and "Flagged pairs (1)" in page and row["pair_id"] in page
  assert not any(r["shift_flagged"] for loc, r in rows_of(out).items() if loc != "far")


def test_unmeasurable_shift_keeps_the_pair_and_every_file_is_accounted_for(runs):
  for name in ("plain", "coregister"):
    out, summary = runs[name]
    rows = rows_of(out)
    assert set(rows) == {"zones", "coarse", "shifted", "far", "flat"}
    flat = rows["flat"]
    assert flat["shift_px"] is None and not flat["coregistered"] and not flat["shift_flagged"]
    for row in rows.values():
      schemas.check_row(row, schemas.PAIRS, f"{name} {row['location']}")
    acc = summary["accounting"]
    assert acc["ok"] and acc["listed"] == len(runs["files"]) == acc["accounted"]
    assert not acc["twice"]
  counters = runs["coregister"][1]["metrics"]
  assert counters["coregistration/pairs_measured"] == 4
  assert counters["coregistration/pairs_not_measured"] == 1
  assert counters["coregistration/pairs_coregistered"] == 1
  assert counters["coregistration/pairs_flagged"] == 1


def test_a_pair_whose_pixels_do_not_read_is_passed_on_unmeasured(tmp_path):
  path = write_raster(str(tmp_path / "b.tif"), np.ones((4, 16, 16), np.uint16),
                      descriptions=NAMES)
  gone = SceneRef("loc", "2020-06-01", (str(tmp_path / "gone.tif"),), NAMES, 16, 16, "uint16",
                  "", (1.0, 0.0, 0.0, 0.0, -1.0, 0.0), None, 0)
  before = gone._replace(uris=(path,), captured_at="2020-01-01")
  pair = Pair("p", before, gone, (0, 1, 2, 3), (0, 1, 2, 3))
  fn = coregistration.MeasureShiftFn(coregister=True)
  fn.setup()
  (out,) = list(fn.process(pair))
  fn.teardown()
  assert out.shift == coregistration.NOT_MEASURED and out.grid is None
  assert out._replace(shift=None) == pair

"""Pairs across grids: planning, reading onto the target grid, misregistration (tiny GeoTIFFs).

The synthetic ground is a function of map coordinates in one CRS, rendered onto each capture's own
grid, so a pasted change sits at one place on the ground whatever grid a capture is on.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
import scipy.stats as st
from rasterio.transform import Affine
from rasterio.windows import Window

from changesweep.pipeline import coregistration, grids, schemas, warping
from changesweep.pipeline.elements import Pair, SceneRef
from changesweep.pipeline.rasters import WindowReader, open_raster
from tests.rasters import (BEFORE_GRID, CHANGE, X0, Y0, ZONE32, ZONE33, render, write_raster,
                           zone33_grid)


def scene_ref(path: str, location: str = "loc", captured_at: str = "2020-01-01") -> SceneRef:
  with open_raster(path) as src:
    return SceneRef(location, captured_at, (path,), tuple(src.descriptions), src.height,
                    src.width, src.dtypes[0], src.crs.to_wkt() if src.crs else "",
                    tuple(src.transform)[:6], src.nodata, 0)


@pytest.fixture()
def before_path(tmp_path):
  return render(str(tmp_path / "before.tif"), ZONE32, BEFORE_GRID, (64, 64))


def changed_mask(before_path: str, after_path: str, plan: grids.PairGrid, band: int = 1,
                 threshold: float = 1000.0) -> tuple[np.ndarray, np.ndarray]:
  """|before - after| > threshold on the target grid, and where both are valid."""
  window = Window(0, 0, plan.target.width, plan.target.height)
  with open_raster(before_path) as b, open_raster(after_path) as a:
    db, vb = warping.read_on_grid(b, [band], plan.read_grid("before"), window, plan.resampling
                                if plan.resampling != grids.NO_WARP else "bilinear")
    da, va = warping.read_on_grid(a, [band], plan.read_grid("after"), window, plan.resampling
                                if plan.resampling != grids.NO_WARP else "bilinear")
  valid = vb & va
  return valid & (np.abs(db[0] - da[0]) > threshold), valid


def change_pixels(plan: grids.PairGrid) -> np.ndarray:
  """Target-grid pixels whose centre lies inside the pasted change."""
  g = plan.target
  rows, cols = np.mgrid[0:g.height, 0:g.width]
  xs, ys = rasterio.transform.xy(g.affine, rows.ravel(), cols.ravel())
  x0, x1, y1, y0 = CHANGE
  xs, ys = np.asarray(xs).reshape(rows.shape), np.asarray(ys).reshape(rows.shape)
  return (xs > x0) & (xs < x1) & (ys > y1) & (ys < y0)


@pytest.mark.parametrize("res", [10.0, 20.0], ids=["utm33_10m", "utm33_20m"])
def test_other_zone_and_resolution_read_on_the_earlier_grid(tmp_path, before_path, res):
  transform, shape = zone33_grid(res)
  after = render(str(tmp_path / "after.tif"), ZONE33, transform, shape, change=True)
  plan = grids.plan_common_grid(scene_ref(before_path), scene_ref(after, captured_at="2021"),
                                grids.parse_grid_option("earlier"))
  assert isinstance(plan, grids.PairGrid), plan
  assert plan.target == grids.grid_of(scene_ref(before_path))
  assert (plan.warp_before, plan.warp_after, plan.resampling) == (False, True, "bilinear")
  assert 0.8 < plan.overlap_fraction < 1.0  # cut shorter: not all of the earlier grid
  changed, valid = changed_mask(before_path, after, plan)
  truth = change_pixels(plan)
  # Outside the later capture's footprint the pixels are invalid (255 in the map), never change.
  assert valid.mean() == pytest.approx(plan.overlap_fraction, abs=0.02)
  assert not valid[-1].any() and valid[:40].all()
  # The change lands where it was pasted; at 20 m, give its edge one target pixel.
  inner = truth & np.roll(truth, 1, 0) & np.roll(truth, -1, 0) & np.roll(truth, 1, 1) \
      & np.roll(truth, -1, 1)
  assert changed[inner].all()
  near = truth.copy()
  for axis in (0, 1):
    for step in (1, -1):
      near |= np.roll(truth, step, axis)
  assert not changed[~near].any()
  assert changed.sum() >= 0.8 * truth.sum()


def test_later_grid_spec_warps_the_earlier_capture(tmp_path, before_path):
  transform, shape = zone33_grid(20.0)
  after = render(str(tmp_path / "after.tif"), ZONE33, transform, shape)
  plan = grids.plan_common_grid(scene_ref(before_path), scene_ref(after), grids.GridSpec("later"))
  assert plan.target == grids.grid_of(scene_ref(after))
  assert (plan.warp_before, plan.warp_after) == (True, False)


def test_one_grid_is_the_fast_path(tmp_path, before_path):
  after = render(str(tmp_path / "after.tif"), ZONE32, BEFORE_GRID, (64, 64), change=True)
  plan = grids.plan_common_grid(scene_ref(before_path), scene_ref(after), grids.GridSpec())
  assert plan == grids.PairGrid(grids.grid_of(scene_ref(before_path)), False, False, 1.0,
                                grids.NO_WARP)
  assert plan.no_warp and plan.read_grid("before") is None and plan.read_grid("after") is None
  with open_raster(after) as src, warping.open_on_grid(src, plan.target) as view:
    assert view is src  # on the grid already: the file itself, no VRT
  fields = plan.row_fields()
  assert fields["resampling"] == "none" and fields["overlap_fraction"] == 1.0
  assert fields["grid_transform"] == list(BEFORE_GRID)[:6]


@pytest.mark.parametrize("offset,why", [
    ((5000.0, 0.0), "do not overlap"),
    ((560.0, 0.0), "below the 20% needed"),
])
def test_no_or_little_overlap_is_a_reason(tmp_path, before_path, offset, why):
  moved = Affine(10.0, 0, X0 + offset[0], 0, -10.0, Y0 + offset[1])
  after = render(str(tmp_path / "after.tif"), ZONE32, moved, (64, 64))
  reason = grids.plan_common_grid(scene_ref(before_path), scene_ref(after), grids.GridSpec())
  assert isinstance(reason, str) and why in reason


def test_min_overlap_is_a_parameter(tmp_path, before_path):
  moved = Affine(10.0, 0, X0 + 320.0, 0, -10.0, Y0)  # half the width
  after = render(str(tmp_path / "after.tif"), ZONE32, moved, (64, 64))
  refs = scene_ref(before_path), scene_ref(after)
  plan = grids.plan_common_grid(*refs, grids.GridSpec(), min_overlap=0.2)
  assert plan.overlap_fraction == pytest.approx(0.5, abs=0.01)
  assert "below the 60% needed" in grids.plan_common_grid(*refs, grids.GridSpec(), min_overlap=0.6)


def test_no_georeference_and_different_grids_is_a_reason(tmp_path, before_path):
  data = np.ones((2, 50, 60), np.uint16)
  after = write_raster(str(tmp_path / "after.tif"), data, crs=None, transform=None)
  reason = grids.plan_common_grid(scene_ref(before_path), scene_ref(after), grids.GridSpec())
  assert "later capture has no georeference" in reason
  # Two ungeoreferenced captures of one shape are one pixel grid: compared as they are.
  again = write_raster(str(tmp_path / "again.tif"), data, crs=None, transform=None)
  assert grids.plan_common_grid(scene_ref(after), scene_ref(again), grids.GridSpec()).no_warp


def test_resolution_ratio_past_the_factor_is_a_reason(tmp_path, before_path):
  transform, shape = zone33_grid(50.0)
  after = render(str(tmp_path / "after.tif"), ZONE33, transform, shape)
  reason = grids.plan_common_grid(scene_ref(before_path), scene_ref(after), grids.GridSpec())
  assert "factor 5.0" in reason and "more than 4" in reason
  plan = grids.plan_common_grid(scene_ref(before_path), scene_ref(after), grids.GridSpec(),
                                max_resolution_ratio=6)
  assert isinstance(plan, grids.PairGrid)


def test_parse_grid_option():
  assert grids.parse_grid_option("earlier") == grids.GridSpec("earlier")
  assert grids.parse_grid_option(" Later ").source == "later"
  spec = grids.parse_grid_option("EPSG:32633,10")
  assert spec.source == "fixed" and spec.resolution == 10.0
  assert rasterio.crs.CRS.from_wkt(spec.crs_wkt).to_epsg() == 32633
  for bad in ("sideways", "EPSG:32633", "EPSG:99999999,10", "EPSG:32633,-5", "EPSG:4326,0.001"):
    with pytest.raises(ValueError):
      grids.parse_grid_option(bad)
  assert grids.parse_resampling(None) == "bilinear"
  assert warping.resampling_for("mask", "cubic") == "nearest"
  assert warping.resampling_for("reflectance", "cubic") == "cubic"
  with pytest.raises(ValueError):
    grids.parse_resampling("smooth")


def test_fixed_grid_snaps_so_series_stack(tmp_path, before_path):
  spec = grids.parse_grid_option("EPSG:32633,10")
  transform, shape = zone33_grid(20.0)
  after = render(str(tmp_path / "after.tif"), ZONE33, transform, shape)
  later = render(str(tmp_path / "later.tif"), ZONE32, Affine(10.0, 0, X0 + 3.3, 0, -10, Y0 - 7.1),
                 (64, 64))
  plans = [grids.plan_common_grid(scene_ref(a), scene_ref(b), spec)
           for a, b in ((before_path, after), (after, later))]
  for plan in plans:
    a, b, c, d, e, f = plan.target.transform
    assert (a, b, d, e) == (10.0, 0.0, 0.0, -10.0)
    assert c % 10 == 0 and f % 10 == 0  # origin on the 10 m lattice
    assert plan.warp_before and plan.warp_after
  # Both nights on one lattice: their maps stack (whole-pixel offsets only).
  (c0, f0), (c1, f1) = [(p.target.transform[2], p.target.transform[5]) for p in plans]
  assert (c1 - c0) % 10 == 0 and (f1 - f0) % 10 == 0
  # The fixed grid covers the earlier capture's footprint, so the before is wholly on it.
  assert plans[0].overlap_fraction > 0.75


def test_warped_view_masks_outside_the_footprint_also_with_nodata(tmp_path, before_path):
  transform, shape = zone33_grid(10.0, margin_m=200.0)
  after = render(str(tmp_path / "after.tif"), ZONE33, transform, shape, nodata=0)
  plan = grids.plan_common_grid(scene_ref(before_path), scene_ref(after), grids.GridSpec())
  window = Window(0, 0, 64, 64)
  with open_raster(after) as src, warping.open_on_grid(src, plan.target) as view:
    assert isinstance(view, rasterio.vrt.WarpedVRT)
    data = view.read(1, window=window)
    mask = view.read_masks(1, window=window)
  assert (data[mask == 0] == 0).all() and (mask[:, :15] == 0).all() and (mask[5:50, 30:] > 0).all()
  # Reading window by window gives the same pixels as one read of the whole grid.
  with open_raster(after) as src, warping.open_on_grid(src, plan.target) as view:
    parts = np.block([[view.read(1, window=Window(c, r, 32, 32)) for c in (0, 32)]
                      for r in (0, 32)])
  assert np.array_equal(parts, data)


def test_four_bands_without_nodata_are_masked_outside_the_footprint(tmp_path, before_path):
  """GDAL takes an added alpha band as the mask of 2- and 4-band datasets only; 4 + alpha is 5."""
  transform, shape = zone33_grid(10.0, margin_m=200.0)
  after = render(str(tmp_path / "after.tif"), ZONE33, transform, shape, bands=4)
  plan = grids.plan_common_grid(scene_ref(before_path), scene_ref(after), grids.GridSpec())
  with open_raster(after) as src, warping.open_on_grid(src, plan.target) as view:
    assert view.count == 5
    masks = view.read_masks([1, 4], window=Window(0, 0, 64, 64))
    data, valid = warping.read_on_grid(src, [1, 2, 3, 4], plan.target, Window(0, 0, 64, 64))
  assert (masks == 0).any(axis=(1, 2)).all() and (masks[0] == masks[1]).all()
  assert (valid == (masks[0] > 0)).all() and not valid[:, :15].any() and valid[5:50, 30:].all()
  assert valid.mean() == pytest.approx(plan.overlap_fraction, abs=0.02)


def test_mask_bands_are_read_nearest(tmp_path, before_path):
  transform, shape = zone33_grid(20.0)
  qa = np.zeros((1, *shape), np.uint16)
  qa[0, 5:15, 5:15] = 8  # a categorical flag: never blended into 2, 4 or 6
  path = write_raster(str(tmp_path / "qa.tif"), qa, crs=ZONE33, transform=transform)
  plan = grids.plan_common_grid(scene_ref(before_path), scene_ref(path), grids.GridSpec())
  with open_raster(path) as src:
    flags, _ = warping.read_on_grid(src, [1], plan.target, Window(0, 0, 64, 64),
                                  warping.resampling_for("mask"))
    smooth, _ = warping.read_on_grid(src, [1], plan.target, Window(0, 0, 64, 64), "bilinear")
  assert set(np.unique(flags)) == {0, 8}
  assert len(np.unique(smooth)) > 2


SHIFT = (2.4, -1.3)


@pytest.fixture()
def shifted_pair(tmp_path):
  """A pair on one grid whose later capture's content is displaced by SHIFT pixels."""
  shape = (96, 96)
  before = render(str(tmp_path / "b.tif"), ZONE32, BEFORE_GRID, shape, bands=1)
  after = render(str(tmp_path / "a.tif"), ZONE32, BEFORE_GRID, shape, shift_px=SHIFT, bands=1)
  return before, after


def as_pair(before: str, after: str, grid=None) -> Pair:
  return Pair("p", scene_ref(before), scene_ref(after, captured_at="2021-01-01"), (0,), (0,),
              grid=grid)


def test_shift_is_recovered_within_a_fifth_of_a_pixel(shifted_pair):
  before, after = shifted_pair
  plan = grids.plan_common_grid(scene_ref(before), scene_ref(after), grids.GridSpec())
  assert plan.no_warp
  reader = WindowReader()
  dx, dy = coregistration.measure_shift(reader, as_pair(before, after))
  reader.close()
  assert abs(dx - SHIFT[0]) < 0.2 and abs(dy - SHIFT[1]) < 0.2
  # The pure estimate, on arrays with a masked corner.
  with open_raster(before) as b, open_raster(after) as a:
    ib, ia = b.read(1).astype(float), a.read(1).astype(float)
  valid = np.ones(ib.shape, bool)
  valid[:20, :20] = False
  dx, dy = coregistration.estimate_shift(ib, ia, valid)
  assert abs(dx - SHIFT[0]) < 0.2 and abs(dy - SHIFT[1]) < 0.2
  assert coregistration.estimate_shift(ib, ia, np.zeros(ib.shape, bool)) is None


def test_coregistering_removes_false_changes_along_edges(shifted_pair):
  before, after = shifted_pair
  plan = grids.plan_common_grid(scene_ref(before), scene_ref(after), grids.GridSpec())
  reader = WindowReader()
  pair = coregistration.coregister_pair(
      as_pair(before, after), coregistration.measure_shift(reader, as_pair(before, after)), True)
  reader.close()
  record = pair.shift
  assert record.coregistered and not record.shift_flagged
  fixed = pair.grid
  assert fixed == plan.coregistered(record.shift_px)
  assert fixed.warp_after and not fixed.warp_before and fixed.resampling == "bilinear"
  raw, valid_raw = changed_mask(before, after, plan, threshold=150)
  corrected, valid = changed_mask(before, after, fixed, threshold=150)
  assert raw.sum() > 100  # the shift alone makes "changes" along the fields' edges
  assert corrected.sum() <= 0.05 * raw.sum()
  # The shifted read leaves a strip at the edge where the after capture has no pixels.
  assert valid_raw.all() and not valid[:, -1].any() and valid[10:-10, 10:-10].all()


def test_decide_shift_bounds():
  assert coregistration.decide_shift((1.0, -2.0), True) == grids.ShiftRecord((1.0, -2.0), True, False)
  assert coregistration.decide_shift((1.0, -2.0), False) == grids.ShiftRecord((1.0, -2.0), False, False)
  assert coregistration.decide_shift((0.6, 0.8), True) == grids.ShiftRecord((0.6, 0.8), False, False)
  assert coregistration.decide_shift((-3.7, -4.4), True).coregistered  # 5.7 px: within the bound
  assert coregistration.decide_shift((8.0, 1.0), True) == grids.ShiftRecord((8.0, 1.0), False, True)
  assert coregistration.decide_shift((8.0, 1.0), False).shift_flagged
  assert coregistration.decide_shift((5.0, 0), True, max_shift=4).shift_flagged
  assert coregistration.decide_shift(None, True).row_fields() == {
      "shift_px": None, "coregistered": False, "shift_flagged": False}
  assert coregistration.decide_shift((2.0, -0.0001), True).row_fields()["shift_px"] == {
      "dx": 2.0, "dy": 0.0}


def test_pair_row_fields_fit_the_schema(shifted_pair):
  before, after = shifted_pair
  pair = as_pair(before, after)
  unmeasured = coregistration.pair_row_fields(pair)
  assert unmeasured == {"overlap_fraction": 1.0, "resampling": "none",
                        "grid_crs": pair.before.crs, "shift_px": None, "coregistered": False,
                        "shift_flagged": False}
  fixed = coregistration.coregister_pair(pair, (2.0, 1.0), True, "cubic")
  row = coregistration.pair_row_fields(fixed)
  assert row["shift_px"] == {"dx": 2.0, "dy": 1.0} and row["coregistered"]
  assert row["resampling"] == "cubic" and fixed.grid.after_offset_px == (2.0, 1.0)
  assert (fixed.height, fixed.width, fixed.transform) == (96, 96, tuple(BEFORE_GRID)[:6])
  unreferenced = pair._replace(before=pair.before._replace(crs=""),
                               after=pair.after._replace(crs=""))
  kept = coregistration.coregister_pair(unreferenced, (2.0, 1.0), True)
  assert kept.grid is None and kept.shift == grids.ShiftRecord((2.0, 1.0), False, False)
  flagged = coregistration.coregister_pair(pair, (9.0, 0.0), True)
  assert flagged.grid is None and coregistration.pair_row_fields(flagged)["shift_flagged"]
  fields = tuple(f for f in schemas.PAIRS if f.name in row)
  for r in (unmeasured, row):
    schemas.check_row(r, fields)


def test_offset_grid_moves_by_pixels():
  g = grids.Grid("", (10.0, 0.0, 100.0, 0.0, -10.0, 500.0), 4, 4)
  assert grids.offset_grid(g, (2.5, -1.0)).transform == (10.0, 0.0, 125.0, 0.0, -10.0, 510.0)
  assert grids.offset_grid(g, (0.0, 0.0)) is g
  assert math.isclose(g.resolution, 10.0)


@pytest.mark.parametrize("values", [
    [7.0, 3.0, 3.0, 9.0, 3.0, 12000.0],     # digital numbers: ranked by counting
    [0.25, -1.5, 0.25, 3.75, -1.5, 0.1],    # reflectances: ranked by sorting
])
def test_ranks_share_ties_whichever_way_they_are_counted(values):
  v = np.asarray(values, np.float64)
  expected = st.rankdata(v, method="average") - 1  # 0-based mean ranks
  assert np.array_equal(coregistration._mean_ranks(v), expected)

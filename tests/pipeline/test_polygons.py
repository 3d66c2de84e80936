"""Change regions as polygons: valid, inside the footprint, areas that match the changed pixels
within the simplification tolerance, planar/geodesic/pixel areas, rows that fit the schema."""
import json
import math

import numpy as np
import pytest
import shapely
from pyproj import CRS, Geod, Transformer
from shapely.geometry import box

from changesweep.pipeline import bigquery, polygons, schemas
from changesweep.pipeline.elements import PROB_SCALE
from changesweep.pipeline.polygons import PooledMap, pool_map, regions_from_pooled, union_wkt

UTM = CRS.from_epsg(32631).to_wkt()
UTM_GRID = (10.0, 0.0, 500000.0, 0.0, -10.0, 4800000.0)


def blobs(h=120, w=130, seed=0):
  """Irregular changed areas: noisy disks of several sizes, plus isolated pixels."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w]
  prob = np.zeros((h, w), np.uint8)
  for cy, cx, r in ((30, 30, 18), (80, 90, 25), (100, 20, 8)):
    rr = np.hypot(yy - cy, xx - cx) + rng.normal(0, 1.5, (h, w))
    prob[rr < r] = rng.integers(140, 255, (rr < r).sum())
  prob[5, 120] = 250
  prob[7, 125] = 250
  return prob


def boxes_map():
  prob = np.zeros((20, 20), np.uint8)
  prob[2:4, 2:5] = PROB_SCALE  # 6 px
  prob[10:15, 12:16] = 200  # 20 px
  prob[5, 5] = prob[6, 6] = PROB_SCALE  # 2 px, touching diagonally: one 8-connected region
  prob[18, 18] = PROB_SCALE  # 1 px, below min size
  return prob


def test_boxes_by_hand_in_a_projected_crs():
  prob = boxes_map()
  valid = np.ones_like(prob, bool)
  regions = regions_from_pooled(pool_map(prob, valid, 0.5, 1), UTM_GRID, UTM, max_regions=10,
                                min_pixels=2)
  assert [(r["row0"], r["col0"], r["row1"], r["col1"], r["changed_pixels"]) for r in regions] == [
      (10, 12, 15, 16, 20), (2, 2, 4, 5, 6), (5, 5, 7, 7, 2)]
  assert [r["region_id"] for r in regions] == [0, 1, 2]
  big = regions[0]
  assert big["mean_change_prob"] == pytest.approx(200 / PROB_SCALE)
  assert big["max_change_prob"] == pytest.approx(200 / PROB_SCALE)
  assert big["area_pixels"] == 20 and big["area_m2"] == pytest.approx(2000.0)
  assert (big["min_x"], big["max_y"]) == (500120.0, 4799900.0)
  assert shapely.from_wkt(big["geometry_crs"]).equals(box(500120, 4799850, 500160, 4799900))
  assert shapely.from_wkt(regions[2]["geometry_pixel"]).geom_type == "MultiPolygon"
  # the old pair-row record keeps its meaning
  assert polygons.pair_region_record(big)["area_pixels"] == 20
  assert regions_from_pooled(pool_map(prob, ~valid, 0.5, 1), UTM_GRID, UTM, max_regions=10,
                             min_pixels=1) == []
  assert len(regions_from_pooled(pool_map(prob, valid, 0.5, 1), UTM_GRID, UTM, max_regions=1,
                                 min_pixels=1)) == 1


@pytest.mark.parametrize("factor", [1, 3, 4])
def test_polygons_are_valid_inside_the_footprint_and_cover_the_change(factor):
  prob = blobs()
  h, w = prob.shape
  valid = np.ones_like(prob, bool)
  valid[:, :3] = False
  pooled = pool_map(prob, valid, 0.5, factor)
  regions = regions_from_pooled(pooled, UTM_GRID, UTM, max_regions=100, min_pixels=1)
  flagged = valid & (prob >= 127)
  assert sum(r["changed_pixels"] for r in regions) == int(flagged.sum())
  grid = box(0, 0, w, h)
  foot = polygons.footprint(UTM_GRID, UTM, h, w)
  tol = 0.5 * factor
  for r in regions:
    pixel = shapely.from_wkt(r["geometry_pixel"])
    lonlat = shapely.from_wkt(r["geometry"])
    mapped = shapely.from_wkt(r["geometry_crs"])
    assert pixel.is_valid and lonlat.is_valid and mapped.is_valid and not pixel.is_empty
    assert grid.buffer(1e-9).contains(pixel)
    assert foot.buffer(1e-9).contains(lonlat)
    assert all(shapely.is_ccw(p.exterior) for p in shapely.get_parts(lonlat))
    assert r["area_m2"] == pytest.approx(r["area_pixels"] * 100.0, rel=1e-9)
    # every flagged pixel of the region's box lies within the tolerance of its polygon
    rows, cols = np.nonzero(flagged[r["row0"]:r["row1"], r["col0"]:r["col1"]])
    centres = shapely.points(cols + r["col0"] + 0.5, rows + r["row0"] + 0.5)
    near = pixel.buffer(tol + 0.75).contains(centres)
    assert near.mean() > 0.99
    # the polygon's area is the cells' area, off by at most the tolerance along its outline
    cells = r["changed_pixels"] if factor == 1 else None
    if cells is not None:
      assert abs(r["area_pixels"] - cells) <= tol * pixel.length + 1e-6
    assert r["area_pixels"] >= 0.5 * r["changed_pixels"]


def test_without_simplification_the_area_is_exactly_the_changed_pixels():
  prob = blobs(seed=3)
  pooled = pool_map(prob, np.ones_like(prob, bool), 0.5, 1)
  for r in regions_from_pooled(pooled, UTM_GRID, UTM, max_regions=50, min_pixels=1,
                               simplify_px=0):
    assert r["area_pixels"] == r["changed_pixels"]
  simplified = regions_from_pooled(pooled, UTM_GRID, UTM, max_regions=50, min_pixels=1)
  exact = regions_from_pooled(pooled, UTM_GRID, UTM, max_regions=50, min_pixels=1,
                              simplify_px=0)
  vertices = lambda rs: sum(shapely.get_num_coordinates(shapely.from_wkt(r["geometry_pixel"]))
                            for r in rs)
  assert vertices(simplified) < vertices(exact)


def test_cells_at_the_edge_are_clipped_to_the_grid():
  prob = np.zeros((10, 11), np.uint8)
  prob[9, 10] = PROB_SCALE
  pooled = pool_map(prob, np.ones_like(prob, bool), 0.5, 4)  # cells 3 x 3, the last one partial
  [r] = regions_from_pooled(pooled, None, "", max_regions=5, min_pixels=1, simplify_px=0)
  assert (r["row0"], r["col0"], r["row1"], r["col1"]) == (8, 8, 10, 11)
  assert shapely.from_wkt(r["geometry_pixel"]).equals(box(8, 8, 11, 10))
  assert r["area_pixels"] == 6 and r["cell_pixels"] == 4 and r["changed_pixels"] == 1


def test_mean_is_over_the_valid_pixels_of_the_region_cells():
  pooled = PooledMap(2, 4, 4, np.array([[1, 0], [0, 0]], np.uint32),
                     np.array([[3, 4], [4, 4]], np.uint32),
                     np.array([[1.5, 0.4], [0.0, 0.0]]), np.array([[254, 20], [0, 0]], np.uint8))
  [r] = regions_from_pooled(pooled, None, "", max_regions=5, min_pixels=1)
  assert r["mean_change_prob"] == pytest.approx(0.5)
  assert r["max_change_prob"] == 1.0 and r["changed_pixels"] == 1


def test_geographic_crs_gives_geodesic_areas():
  wgs84 = CRS.from_epsg(4326).to_wkt()
  deg = 0.0001  # ~11 m at 45N
  grid = (deg, 0.0, 2.0, 0.0, -deg, 45.0)
  prob = np.zeros((200, 200), np.uint8)
  prob[20:120, 30:180] = PROB_SCALE
  [r] = regions_from_pooled(pool_map(prob, np.ones_like(prob, bool), 0.5, 1), grid, wgs84,
                            max_regions=5, min_pixels=1)
  expected = abs(Geod(ellps="WGS84").polygon_area_perimeter(
      [2.0 + 30 * deg, 2.0 + 180 * deg, 2.0 + 180 * deg, 2.0 + 30 * deg],
      [45.0 - 20 * deg, 45.0 - 20 * deg, 45.0 - 120 * deg, 45.0 - 120 * deg])[0])
  assert r["area_m2"] == pytest.approx(expected, rel=1e-6)
  # and an equal-area projection agrees to well under a percent
  laea = Transformer.from_crs("EPSG:4326", "+proj=laea +lat_0=45 +lon_0=2.01", always_xy=True)
  projected = shapely.transform(shapely.from_wkt(r["geometry_crs"]),
                                lambda xy: np.column_stack(laea.transform(xy[:, 0], xy[:, 1])))
  assert r["area_m2"] == pytest.approx(projected.area, rel=1e-3)
  assert 15000 * 80 < r["area_m2"] < 15000 * 95  # ~7.9 m x 11.1 m pixels at 45N


def test_projected_crs_in_feet_reports_square_metres():
  feet = CRS.from_epsg(2263).to_wkt()  # NY State Plane, US survey feet
  prob = np.zeros((10, 10), np.uint8)
  prob[2:6, 2:7] = PROB_SCALE
  grid = (10.0, 0.0, 980000.0, 0.0, -10.0, 200000.0)
  [r] = regions_from_pooled(pool_map(prob, np.ones_like(prob, bool), 0.5, 1), grid, feet,
                            max_regions=5, min_pixels=1)
  assert r["area_m2"] == pytest.approx(20 * 100 * (1200 / 3937) ** 2, rel=1e-9)


def test_no_crs_gives_pixel_polygons_and_no_geography():
  prob = boxes_map()
  regions = regions_from_pooled(pool_map(prob, np.ones_like(prob, bool), 0.5, 1), UTM_GRID, "",
                                max_regions=10, min_pixels=1)
  assert len(regions) == 4
  for r in regions:
    assert r["geometry"] is None and r["geometry_crs"] is None and r["area_m2"] is None
    assert shapely.from_wkt(r["geometry_pixel"]).is_valid
  assert union_wkt(regions) is None
  assert polygons.footprint(UTM_GRID, "", 20, 20) is None


def test_union_is_the_pairs_geography():
  prob = boxes_map()
  regions = regions_from_pooled(pool_map(prob, np.ones_like(prob, bool), 0.5, 1), UTM_GRID, UTM,
                                max_regions=10, min_pixels=1)
  union = shapely.from_wkt(union_wkt(regions))
  assert union.is_valid and union.geom_type == "MultiPolygon"
  parts = [shapely.from_wkt(r["geometry"]) for r in regions]
  assert union.area == pytest.approx(sum(p.area for p in parts), rel=1e-6)
  assert union_wkt([]) is None


def test_region_rows_fit_the_regions_table_and_json():
  prob = blobs()
  regions = regions_from_pooled(pool_map(prob, np.ones_like(prob, bool), 0.5, 2), UTM_GRID, UTM,
                                max_regions=20, min_pixels=4)
  pair = {"pair_id": "p1", "location": "loc", "capture_date": "2020-01-02", "crs": "EPSG:32631",
          "model_id": "m", "model_version": "1", "run_id": "r", "change_score": 0.5}
  rows = polygons.region_rows(pair, regions)
  assert rows and all(r["pair_id"] == "p1" for r in rows)
  for row in rows:
    schemas.check_row(row, schemas.REGIONS)
    out = bigquery.to_bigquery_row(row, schemas.REGIONS)
    assert set(out) == {f.name for f in schemas.REGIONS} == set(row)
    json.dumps(out, allow_nan=False)


def test_bad_pooled_maps_are_refused():
  good = pool_map(np.zeros((9, 9), np.uint8), np.ones((9, 9), bool), 0.5, 4)
  with pytest.raises(ValueError, match="shape"):
    regions_from_pooled(good._replace(height=20), None, "", max_regions=1, min_pixels=1)
  with pytest.raises(ValueError, match="factor"):
    pool_map(np.zeros((9, 9), np.uint8), np.ones((9, 9), bool), 0.5, 0)
  with pytest.raises(ValueError, match="transform"):
    regions_from_pooled(pool_map(boxes_map(), np.ones((20, 20), bool), 0.5, 1), None, UTM,
                        max_regions=1, min_pixels=1)


@pytest.mark.parametrize("factor", [1, 3, 7])
def test_pooling_in_strips_matches_pooling_by_hand(monkeypatch, factor):
  monkeypatch.setattr(polygons, "_STRIP_PIXELS", 500)  # many strips
  rng = np.random.default_rng(factor)
  prob = rng.integers(0, 256, (47, 61)).astype(np.uint8)
  valid = rng.random((47, 61)) > 0.2
  pooled = pool_map(prob, valid, 0.6, factor)
  p = np.where(valid, np.minimum(prob, PROB_SCALE), 0)
  for i in range(pooled.flagged.shape[0]):
    for j in range(pooled.flagged.shape[1]):
      cell = (slice(i * factor, (i + 1) * factor), slice(j * factor, (j + 1) * factor))
      v, q = valid[cell], p[cell]
      assert pooled.flagged[i, j] == (v & (q >= math.ceil(0.6 * PROB_SCALE))).sum()
      assert pooled.valid[i, j] == v.sum()
      assert pooled.prob_sum[i, j] == pytest.approx(q[v].sum() / PROB_SCALE)
      assert pooled.prob_max[i, j] == q.max()

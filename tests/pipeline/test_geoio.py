"""Regions as GeoParquet (geo metadata, CRS) and RFC 7946 GeoJSON, through Beam and without it;
the BigQuery schemas with GEOGRAPHY parse and their JSONL rows fit."""
import glob
import json
import os

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from pyproj import CRS

from changesweep.pipeline import geoio, polygons, schemas
from changesweep.pipeline.elements import PROB_SCALE
from changesweep.pipeline.sinks import read_jsonl_rows

UTM31 = CRS.from_epsg(32631)
UTM32 = CRS.from_epsg(32632)
GRID = (10.0, 0.0, 500000.0, 0.0, -10.0, 4800000.0)


def region_rows(pair_id: str, crs: CRS | None, seed: int = 0) -> list[dict]:
  rng = np.random.default_rng(seed)
  prob = np.zeros((60, 70), np.uint8)
  for _ in range(4):
    r, c = rng.integers(0, 50, 2)
    prob[r:r + rng.integers(2, 10), c:c + rng.integers(2, 10)] = PROB_SCALE
  pooled = polygons.pool_map(prob, np.ones_like(prob, bool), 0.5, 1)
  regions = polygons.regions_from_pooled(pooled, GRID, crs.to_wkt() if crs else "",
                                         max_regions=10, min_pixels=1)
  pair = {"pair_id": pair_id, "location": "loc", "capture_date": "2021-05-06",
          "crs": crs.to_string() if crs else None, "model_id": "m", "model_version": "1",
          "run_id": "run-1"}
  return polygons.region_rows(pair, regions)


def geo_metadata(path: str) -> dict:
  return json.loads(pq.read_schema(path).metadata[b"geo"])


def test_geoparquet_metadata_crs_and_geometries(tmp_path):
  rows = region_rows("p1", UTM31) + region_rows("p2", UTM31, seed=1)
  path = geoio.write_geoparquet(rows, str(tmp_path / "r.parquet"))
  geo = geo_metadata(path)
  assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
  cols = geo["columns"]
  assert set(cols) == {"geometry", "geometry_crs", "geometry_pixel"}
  assert all(c["encoding"] == "WKB" for c in cols.values())
  assert set(cols["geometry"]["geometry_types"]) <= {"Polygon", "MultiPolygon"}
  assert CRS.from_json_dict(cols["geometry"]["crs"]) == CRS.from_user_input("OGC:CRS84")
  assert CRS.from_json_dict(cols["geometry_crs"]["crs"]) == UTM31
  assert cols["geometry_pixel"]["crs"] is None  # explicitly undefined
  x0, y0, x1, y1 = cols["geometry"]["bbox"]
  assert -180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90
  table = pq.read_table(path)
  assert table.num_rows == len(rows)
  back = table.to_pylist()
  for r, b in zip(rows, back):
    assert shapely.from_wkb(b["geometry"]).equals(shapely.from_wkt(r["geometry"]))
    assert shapely.from_wkb(b["geometry_crs"]).equals(shapely.from_wkt(r["geometry_crs"]))
    assert b["capture_date"].isoformat() == r["capture_date"]
    assert b["changed_pixels"] == r["changed_pixels"]


def test_a_shard_of_several_crs_declares_only_the_shared_columns(tmp_path):
  rows = region_rows("p1", UTM31) + region_rows("p2", UTM32) + region_rows("p3", None)
  path = geoio.write_geoparquet(rows, str(tmp_path / "r.parquet"))
  cols = geo_metadata(path)["columns"]
  assert set(cols) == {"geometry", "geometry_pixel"}
  back = pq.read_table(path).to_pylist()
  assert [b["geometry"] is None for b in back] == [r["pair_id"] == "p3" for r in rows]
  assert all(b["geometry_pixel"] for b in back)


@pytest.mark.filterwarnings("ignore:Geometry is in a geographic CRS")
def test_geopandas_reads_the_geoparquet_with_its_crs(tmp_path):
  gpd = pytest.importorskip("geopandas")
  rows = region_rows("p1", UTM31)
  path = geoio.write_geoparquet(rows, str(tmp_path / "r.parquet"))
  df = gpd.read_parquet(path)
  assert df.geometry.name == "geometry" and df.crs == CRS.from_user_input("OGC:CRS84")
  assert len(df) == len(rows) and df.geometry.is_valid.all()
  native = gpd.read_parquet(path, columns=["region_id", "geometry_crs"]).set_geometry(
      "geometry_crs")
  assert native.crs == UTM31
  assert native.to_crs("OGC:CRS84").geometry.buffer(1e-7).contains(
      df.geometry.reset_index(drop=True)).all()


def test_geojson_is_rfc7946(tmp_path):
  rows = region_rows("p1", UTM31) + region_rows("p2", None, seed=2)
  path = geoio.write_geojson(rows, str(tmp_path / "r.geojson"))
  with open(path) as f:
    fc = json.load(f)
  assert fc["type"] == "FeatureCollection" and len(fc["features"]) == len(rows)
  for feature, row in zip(fc["features"], rows):
    assert feature["id"] == f"{row['pair_id']}-{row['region_id']}"
    assert "geometry_crs" not in feature["properties"]
    assert feature["properties"]["area_m2"] == row["area_m2"]
    if row["pair_id"] == "p2":
      assert feature["geometry"] is None
      continue
    geom = shapely.geometry.shape(feature["geometry"])
    assert geom.is_valid
    for poly in shapely.get_parts(geom):
      assert shapely.is_ccw(poly.exterior)  # right-hand rule
      lon, lat = np.asarray(poly.exterior.coords).T
      assert ((-180 <= lon) & (lon <= 180) & (-90 <= lat) & (lat <= 90)).all()
      assert 2.9 < lon.mean() < 3.1 and 43.2 < lat.mean() < 43.5  # UTM 31N at 4800 km north


def test_write_regions_in_beam_matches_the_pure_twin(tmp_path):
  rows = [r for i in range(5) for r in region_rows(f"pair-{i}", UTM31, seed=i)]
  beam_out, pure_out = str(tmp_path / "beam"), str(tmp_path / "pure")
  with BeamTestPipeline("FnApiRunner") as p:
    _ = p | beam.Create(rows) | geoio.WriteRegions(beam_out, num_shards=3)
  geoio.write_regions(pure_out, rows, num_shards=3)
  names = lambda root: sorted(os.path.relpath(p, root)
                              for p in glob.glob(f"{root}/regions/**/*.*", recursive=True))
  assert names(beam_out) == names(pure_out)
  assert len(glob.glob(f"{beam_out}/regions/regions-*-of-00003.parquet")) == 3
  assert len(glob.glob(f"{beam_out}/regions/pairs/*.geojson")) == 5
  for name in names(beam_out):
    if name.endswith((".geojson", ".jsonl")):
      with open(f"{beam_out}/{name}") as a, open(f"{pure_out}/{name}") as b:
        assert a.read() == b.read(), name
  back = read_jsonl_rows(beam_out, "regions")
  assert sorted((r["pair_id"], r["region_id"]) for r in back) == sorted(
      (r["pair_id"], r["region_id"]) for r in rows)
  assert sum(pq.read_table(p).num_rows
             for p in glob.glob(f"{beam_out}/regions/*.parquet")) == len(rows)
  # a pair's regions live in one shard
  for i in range(5):
    shard = geoio.shard_of(f"pair-{i}", 3)
    with open(geoio.shard_path(beam_out, shard, 3, ".geojson")) as f:
      ids = {ft["properties"]["pair_id"] for ft in json.load(f)["features"]}
    assert f"pair-{i}" in ids


def test_empty_shards_are_written_and_readable(tmp_path):
  paths = geoio.write_regions(str(tmp_path), [], num_shards=2)
  assert len(paths) == 6
  table = pq.read_table(geoio.shard_path(str(tmp_path), 1, 2, ".parquet"))
  assert table.num_rows == 0 and b"geo" in table.schema.metadata
  with pytest.raises(ValueError, match="num_shards"):
    geoio.WriteRegions(str(tmp_path), num_shards=0)


@pytest.mark.parametrize("table", ["regions", "pairs"])
def test_bigquery_schemas_parse_and_jsonl_rows_fit(table, tmp_path):
  from google.cloud.bigquery import SchemaField

  from changesweep.pipeline import bigquery, sinks

  sinks.write_schemas(str(tmp_path))
  with open(tmp_path / "schema" / f"{table}.json") as f:
    api = json.load(f)
  fields = [SchemaField.from_api_repr(f) for f in api]
  geography = [f for f in fields if f.field_type == "GEOGRAPHY"]
  assert [f.name for f in geography] == ["geometry"] and geography[0].mode == "NULLABLE"
  if table == "regions":
    out = str(tmp_path / "out")
    geoio.write_regions(out, region_rows("p1", UTM31) + region_rows("p2", None), 1)
    for row in read_jsonl_rows(out, "regions"):
      schemas.check_row(row, schemas.REGIONS)
      loaded = bigquery.to_bigquery_row(row, schemas.REGIONS)
      assert loaded == row
      if row["geometry"]:
        assert shapely.from_wkt(loaded["geometry"]).is_valid
    assert bigquery.table_parameters(schemas.REGIONS)["timePartitioning"]["field"] == (
        "capture_date")
  else:
    regions = region_rows("p1", UTM31)
    row = {f.name: None for f in schemas.PAIRS if f.mode != "REQUIRED"}
    row["geometry"] = polygons.union_wkt(regions)
    schemas.check_row({k: v for k, v in row.items() if k == "geometry"},
                      tuple(f for f in schemas.PAIRS if f.name == "geometry"))
    assert shapely.from_wkt(row["geometry"]).is_valid

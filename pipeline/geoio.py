"""Region rows -> GeoParquet and GeoJSON files that GIS tools open directly.

`OUT/regions/regions-SSSSS-of-NNNNN.{parquet,geojson,jsonl}`: a pair's regions always land in the
same shard (by a stable hash of its id), and every shard file exists even when empty, so a re-run
replaces a run's files. `OUT/regions/pairs/<pair_id>.geojson` holds one pair's regions (the STAC
item and the report link it).

GeoParquet (https://geoparquet.org, version 1.1.0): WKB geometry columns described in the `geo`
file metadata.
- `geometry`: WGS84 longitude/latitude (crs OGC:CRS84, as PROJJSON), the primary column;
  null for captures without georeference.
- `geometry_pixel`: pixel coordinates (x column, y row) with crs null (undefined), always set.
- `geometry_crs`: the capture's own CRS. A column has one CRS, so it is declared a geometry
  column only in a shard whose regions share one CRS; elsewhere it is plain WKB beside `crs`.
GeoJSON follows RFC 7946: lon/lat, exterior rings counter-clockwise, one FeatureCollection.
"""
from __future__ import annotations

import json
import zlib
from typing import Iterable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from changesweep.pipeline import schemas, sinks
from changesweep.pipeline.elements import safe_name

TABLE = "regions"
GEOPARQUET_VERSION = "1.1.0"
PRIMARY = "geometry"
GEOMETRY_COLUMNS = ("geometry", "geometry_crs", "geometry_pixel")
# Kept out of GeoJSON properties: they are the feature's geometry in other coordinates.
_NOT_PROPERTIES = ("geometry", "geometry_crs")

# Region shards when `--num_shards 0` leaves the choice to the runner (regions are few per pair).
RUNNER_SHARDS = 8

def shard_of(pair_id: str, num_shards: int) -> int:
  """The shard that holds a pair's regions (stable across runs and machines)."""
  return zlib.crc32(pair_id.encode()) % num_shards


def shard_path(output: str, shard: int, num_shards: int, suffix: str) -> str:
  """`OUT/regions/regions-SSSSS-of-NNNNN<suffix>`, Beam's shard naming."""
  return f"{sinks.table_prefix(output, TABLE)}-{shard:05d}-of-{num_shards:05d}{suffix}"


def pair_geojson_path(output: str, pair_id: str) -> str:
  """`OUT/regions/pairs/<pair_id>.geojson`: one pair's regions."""
  return FileSystems.join(output, TABLE, "pairs", f"{safe_name(pair_id)}.geojson")


def _crs84_projjson() -> dict:
  from pyproj import CRS

  return CRS.from_user_input("OGC:CRS84").to_json_dict()


def _column_meta(geoms: list, crs) -> dict:
  import shapely

  present = [g for g in geoms if g is not None and not g.is_empty]
  meta = {"encoding": "WKB", "geometry_types": sorted({g.geom_type for g in present})}
  if present:
    x0, y0, x1, y1 = shapely.total_bounds(present)
    meta["bbox"] = [float(x0), float(y0), float(x1), float(y1)]
  meta["crs"] = crs
  return meta


def geoparquet_table(rows: list[dict]):
  """Region rows -> an Arrow table with WKB geometry columns and GeoParquet `geo` metadata.

  Args:
    rows: rows of `schemas.REGIONS` (geometries as WKT), e.g. from `polygons.region_rows`.

  Returns:
    A `pyarrow.Table`; `pyarrow.parquet.write_table` writes it as GeoParquet.
  """
  import pyarrow as pa
  import shapely
  from pyproj import CRS

  base = schemas.arrow_schema(schemas.REGIONS)
  schema = pa.schema([pa.field(f.name, pa.binary(), f.nullable) if f.name in GEOMETRY_COLUMNS
                      else f for f in base])
  arrow_rows = [schemas.to_arrow_row(r, schemas.REGIONS) for r in rows]
  columns, geo_columns = {}, {}
  crs_values = {r.get("crs") for r in rows if r.get("geometry_crs")}
  for name in schema.names:
    values = [r.get(name) for r in arrow_rows]
    if name in GEOMETRY_COLUMNS:
      geoms = [shapely.from_wkt(v) if v else None for v in values]
      values = [shapely.to_wkb(g) if g is not None else None for g in geoms]
      if name == "geometry":
        geo_columns[name] = _column_meta(geoms, _crs84_projjson())
      elif name == "geometry_pixel":
        geo_columns[name] = _column_meta(geoms, None)
      elif len(crs_values) == 1:
        geo_columns[name] = _column_meta(geoms, CRS.from_user_input(
            next(iter(crs_values))).to_json_dict())
    columns[name] = pa.array(values, schema.field(name).type)
  geo = {"version": GEOPARQUET_VERSION, "primary_column": PRIMARY, "columns": geo_columns}
  meta = {b"geo": json.dumps(geo).encode()}
  return pa.Table.from_pydict(columns, schema=schema.with_metadata(meta))


def feature_collection(rows: list[dict]) -> dict:
  """Region rows -> an RFC 7946 FeatureCollection (WGS84 lon/lat; null geometry without CRS)."""
  import shapely
  from shapely.geometry import mapping

  features = []
  for r in rows:
    geom = mapping(shapely.from_wkt(r["geometry"])) if r.get("geometry") else None
    props = {k: v for k, v in r.items() if k not in _NOT_PROPERTIES}
    features.append({"type": "Feature", "id": f"{r['pair_id']}-{r['region_id']}",
                     "geometry": geom, "properties": props})
  return {"type": "FeatureCollection", "features": features}


def write_geoparquet(rows: list[dict], path: str) -> str:
  """Writes the rows as one GeoParquet file (local or gs://). Returns `path`."""
  import pyarrow.parquet as pq

  with FileSystems.create(path) as f:
    pq.write_table(geoparquet_table(rows), f, compression="zstd")
  return path


def write_geojson(rows: list[dict], path: str) -> str:
  """Writes the rows as one GeoJSON FeatureCollection (local or gs://). Returns `path`."""
  with FileSystems.create(path) as f:
    f.write(json.dumps(feature_collection(rows), allow_nan=False).encode())
  return path


def write_jsonl(rows: list[dict], path: str) -> str:
  """Writes the rows as newline-delimited JSON (the BigQuery load format). Returns `path`."""
  with FileSystems.create(path) as f:
    f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())
  return path


def _sorted(rows: Iterable[dict]) -> list[dict]:
  return sorted(rows, key=lambda r: (r["pair_id"], r["region_id"]))


def write_shard(output: str, shard: int, num_shards: int, rows: Iterable[dict],
                jsonl: bool = True) -> list[str]:
  """Writes one shard's `.parquet`, `.geojson` (and `.jsonl`). Returns the paths written."""
  rows = _sorted(r for r in rows if r is not None)
  paths = [write_geoparquet(rows, shard_path(output, shard, num_shards, ".parquet")),
           write_geojson(rows, shard_path(output, shard, num_shards, ".geojson"))]
  if jsonl:
    paths.append(write_jsonl(rows, shard_path(output, shard, num_shards, ".jsonl")))
  return paths


def write_regions(output: str, rows: list[dict], num_shards: int = 1, jsonl: bool = True,
                  per_pair: bool = True) -> list[str]:
  """The pure twin of `WriteRegions`: all shards (and per-pair GeoJSON) in this process."""
  shards: dict[int, list[dict]] = {i: [] for i in range(num_shards)}
  by_pair: dict[str, list[dict]] = {}
  for r in rows:
    shards[shard_of(r["pair_id"], num_shards)].append(r)
    by_pair.setdefault(r["pair_id"], []).append(r)
  paths = [p for i, s in shards.items() for p in write_shard(output, i, num_shards, s, jsonl)]
  if per_pair:
    paths += [write_geojson(_sorted(rs), pair_geojson_path(output, pid))
              for pid, rs in sorted(by_pair.items())]
  return paths


class WriteRegions(beam.PTransform):
  """Region rows (dicts of `schemas.REGIONS`) -> GeoParquet, GeoJSON and JSONL shards.

  Writes `OUT/regions/regions-SSSSS-of-NNNNN.{parquet,geojson,jsonl}` through Beam's
  FileSystems (local or gs://), all `num_shards` of them even when empty, and
  `OUT/regions/pairs/<pair_id>.geojson` per pair with regions. Returns the written paths.

  Attributes:
    output: the sweep's output root.
    num_shards: files per format (>= 1).
    jsonl: also write the JSONL rows (then do not write the `regions` table with
      `sinks.WriteTables`, whose Parquet would take the same names).
    per_pair: also write one GeoJSON per pair.
  """

  def __init__(self, output: str, num_shards: int = 1, jsonl: bool = True,
               per_pair: bool = True):
    super().__init__()
    if num_shards < 1:
      raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    self.output = output
    self.num_shards = num_shards
    self.jsonl = jsonl
    self.per_pair = per_pair

  def expand(self, rows):
    output, n, jsonl = self.output, self.num_shards, self.jsonl
    keyed = rows | "KeyByShard" >> beam.Map(lambda r: (shard_of(r["pair_id"], n), r))
    every = rows.pipeline | "EveryShard" >> beam.Create([(i, None) for i in range(n)])
    written = ((keyed, every)
               | "FlattenShards" >> beam.Flatten()
               | "GroupByShard" >> beam.GroupByKey()
               | "WriteShard" >> beam.FlatMapTuple(
                   lambda shard, rs: write_shard(output, shard, n, rs, jsonl)))
    if not self.per_pair:
      return written
    per_pair = (rows
                | "KeyByPair" >> beam.Map(lambda r: (r["pair_id"], r))
                | "GroupByPair" >> beam.GroupByKey()
                | "WritePairGeoJson" >> beam.MapTuple(
                    lambda pid, rs: write_geojson(_sorted(rs), pair_geojson_path(output, pid))))
    return (written, per_pair) | "AllPaths" >> beam.Flatten()

"""Output tables, declared once: BigQuery schema JSON and Parquet (Arrow) schemas derive from here."""
from __future__ import annotations

import datetime as dt
from typing import NamedTuple


class Field(NamedTuple):
  name: str
  type: str  # BigQuery type: STRING, INTEGER, FLOAT, BOOLEAN, TIMESTAMP, DATE, RECORD, GEOGRAPHY
  mode: str  # REQUIRED, NULLABLE or REPEATED
  description: str
  fields: tuple["Field", ...] = ()


def _f(name, type_, mode, description, fields=()):
  return Field(name, type_, mode, description, tuple(fields))


REGION_FIELDS = (
    _f("row0", "INTEGER", "REQUIRED", "first pixel row of the bounding box"),
    _f("col0", "INTEGER", "REQUIRED", "first pixel column of the bounding box"),
    _f("row1", "INTEGER", "REQUIRED", "pixel row just past the box"),
    _f("col1", "INTEGER", "REQUIRED", "pixel column just past the box"),
    _f("area_pixels", "INTEGER", "REQUIRED", "changed pixels in the region"),
    _f("max_change_prob", "FLOAT", "NULLABLE", "highest change probability in the box"),
    _f("min_x", "FLOAT", "NULLABLE", "box in map units of the capture's CRS (null if none)"),
    _f("min_y", "FLOAT", "NULLABLE", "box in map units"),
    _f("max_x", "FLOAT", "NULLABLE", "box in map units"),
    _f("max_y", "FLOAT", "NULLABLE", "box in map units"),
)

_SCORES = (
    _f("valid_fraction", "FLOAT", "REQUIRED", "fraction of pixels usable in both captures"),
    _f("changed_fraction", "FLOAT", "NULLABLE", "changed pixels / usable pixels"),
    _f("changed_pixels", "INTEGER", "REQUIRED", "pixels at or above the model threshold"),
    _f("mean_change_prob", "FLOAT", "NULLABLE", "mean change probability over usable pixels"),
    _f("max_change_prob", "FLOAT", "NULLABLE", "highest change probability"),
    _f("change_score", "FLOAT", "NULLABLE",
       "scene-level change score: mean probability of the 1% most changed usable pixels"),
)

_RUN = (
    _f("model_id", "STRING", "REQUIRED", "model that scored the pair"),
    _f("model_version", "STRING", "REQUIRED", "its version"),
    _f("run_id", "STRING", "REQUIRED", "the sweep run"),
)

PAIRS = (
    _f("pair_id", "STRING", "REQUIRED", "deterministic id of the two captures"),
    _f("location", "STRING", "REQUIRED", "location id"),
    _f("capture_date", "DATE", "REQUIRED", "date of the later capture (partition column)"),
    _f("before_captured_at", "TIMESTAMP", "REQUIRED", "time of the earlier capture (UTC)"),
    _f("after_captured_at", "TIMESTAMP", "REQUIRED", "time of the later capture (UTC)"),
    _f("before_uri", "STRING", "REQUIRED", "earlier capture's file(s), ';'-joined"),
    _f("after_uri", "STRING", "REQUIRED", "later capture's file(s), ';'-joined"),
    _f("height", "INTEGER", "REQUIRED", "scene rows"),
    _f("width", "INTEGER", "REQUIRED", "scene columns"),
    _f("crs", "STRING", "NULLABLE", "CRS of the captures (EPSG code or WKT), null if none"),
    *_SCORES,
    _f("threshold", "FLOAT", "REQUIRED", "probability threshold of the model"),
    _f("num_chips", "INTEGER", "REQUIRED", "chips scored"),
    _f("regions", "RECORD", "REPEATED", "largest changed regions, largest first", REGION_FIELDS),
    _f("geometry", "GEOGRAPHY", "NULLABLE",
       "union of the pair's change regions, WGS84 WKT (null: no region or no CRS)"),
    _f("change_map_uri", "STRING", "NULLABLE", "GeoTIFF of the change probability"),
    _f("overlap_fraction", "FLOAT", "REQUIRED",
       "share of the scored grid both captures cover (1: one grid)"),
    _f("resampling", "STRING", "REQUIRED",
       "resampling of the warped capture onto the pair's grid ('none': one grid, no warp)"),
    _f("grid_crs", "STRING", "NULLABLE", "CRS (WKT) of the grid the pair was scored on"),
    _f("shift_px", "RECORD", "NULLABLE",
       "measured misregistration of the later capture against the earlier one, pixels of the "
       "scored grid, before any correction (null: not measured)",
       (_f("dx", "FLOAT", "REQUIRED", "content displacement east (columns)"),
        _f("dy", "FLOAT", "REQUIRED", "content displacement south (rows)"))),
    _f("coregistered", "BOOLEAN", "REQUIRED",
       "the later capture was read shifted back by shift_px before scoring (--coregister)"),
    _f("shift_flagged", "BOOLEAN", "REQUIRED",
       "|shift_px| is past the 8 px bound: not corrected, the score is not to be trusted"),
    _f("anomaly_score", "FLOAT", "NULLABLE",
       "how unusual this change is for the location at this time of year (null: short history)"),
    _f("anomaly_method", "STRING", "REQUIRED", "seasonal, robust or none (pipeline/history.py)"),
    _f("history_length", "INTEGER", "REQUIRED", "usable captures of the location before this pair"),
    *_RUN,
)

CHIPS = (
    _f("pair_id", "STRING", "REQUIRED", "the pair this chip belongs to"),
    _f("location", "STRING", "REQUIRED", "location id"),
    _f("capture_date", "DATE", "REQUIRED", "date of the later capture (partition column)"),
    _f("chip_index", "INTEGER", "REQUIRED", "row-major index in the pair's chip grid"),
    _f("row0", "INTEGER", "REQUIRED", "first scene row of the chip's core"),
    _f("col0", "INTEGER", "REQUIRED", "first scene column of the chip's core"),
    _f("row1", "INTEGER", "REQUIRED", "scene row just past the core"),
    _f("col1", "INTEGER", "REQUIRED", "scene column just past the core"),
    *_SCORES,
    *_RUN,
)

FIRST_CAPTURES = (
    _f("location", "STRING", "REQUIRED", "location id"),
    _f("captured_at", "TIMESTAMP", "REQUIRED", "its earliest usable capture"),
    _f("uri", "STRING", "REQUIRED", "the capture's file(s)"),
    _f("run_id", "STRING", "REQUIRED", "the sweep run"),
)

PLANNED_PAIRS = (
    _f("pair_id", "STRING", "REQUIRED", "the pair a real run would score"),
    _f("location", "STRING", "REQUIRED", "location id"),
    _f("before_captured_at", "TIMESTAMP", "REQUIRED", "the earlier capture"),
    _f("after_captured_at", "TIMESTAMP", "REQUIRED", "the later capture"),
    _f("before_uri", "STRING", "REQUIRED", "the earlier capture's file(s)"),
    _f("after_uri", "STRING", "REQUIRED", "the later capture's file(s)"),
    _f("height", "INTEGER", "REQUIRED", "pixel rows of the pair's grid"),
    _f("width", "INTEGER", "REQUIRED", "pixel columns of the pair's grid"),
    _f("num_chips", "INTEGER", "REQUIRED", "chips inference would score"),
    _f("run_id", "STRING", "REQUIRED", "the sweep run"),
)

DEAD_LETTERS = (
    _f("uri", "STRING", "REQUIRED", "the file(s) at fault"),
    _f("stage", "STRING", "REQUIRED", "listing, metadata, pairing, chips, scoring or aggregate"),
    _f("reason", "STRING", "REQUIRED", "why it was rejected"),
    _f("location", "STRING", "NULLABLE", "location id, when known"),
    _f("pair_id", "STRING", "NULLABLE", "pair id, when a pair was rejected"),
    _f("run_id", "STRING", "REQUIRED", "the sweep run"),
)

HISTORY = (
    _f("location", "STRING", "REQUIRED", "location id"),
    _f("captured_at", "TIMESTAMP", "REQUIRED", "a usable capture of the location"),
    _f("uri", "STRING", "REQUIRED", "the capture's file(s)"),
    _f("usable_fraction", "FLOAT", "REQUIRED", "share of valid (not nodata/cloud/masked) pixels"),
    _f("band_means", "FLOAT", "REPEATED", "mean of the valid pixels, per model band"),
    _f("band_stds", "FLOAT", "REPEATED", "standard deviation of the valid pixels, per model band"),
    _f("pair_id", "STRING", "NULLABLE", "the scored pair that ends at this capture"),
    _f("change_score", "FLOAT", "NULLABLE", "that pair's change score"),
    _f("anomaly_score", "FLOAT", "NULLABLE", "that pair's anomaly score"),
    _f("anomaly_method", "STRING", "NULLABLE", "how the anomaly was scored"),
    _f("run_id", "STRING", "REQUIRED", "the sweep run that wrote this history"),
)

# One row per change region (pipeline/polygons.py); GeoParquet and GeoJSON in pipeline/geoio.py.
REGIONS = (
    _f("pair_id", "STRING", "REQUIRED", "the pair the region belongs to"),
    _f("location", "STRING", "REQUIRED", "location id"),
    _f("capture_date", "DATE", "REQUIRED", "date of the later capture (partition column)"),
    _f("region_id", "INTEGER", "REQUIRED", "0-based rank in the pair, most changed pixels first"),
    _f("changed_pixels", "INTEGER", "REQUIRED", "pixels at or above the threshold in the region"),
    _f("cell_pixels", "INTEGER", "REQUIRED",
       "side in pixels of the cells outlined (1: per-pixel outlines; larger for big scenes)"),
    _f("area_pixels", "FLOAT", "REQUIRED", "polygon area in pixels of the pair grid"),
    _f("area_m2", "FLOAT", "NULLABLE",
       "polygon area in m^2: planar in a projected CRS, geodesic in a geographic one, null if none"),
    _f("mean_change_prob", "FLOAT", "NULLABLE",
       "mean change probability over the valid pixels of the region's cells"),
    _f("max_change_prob", "FLOAT", "NULLABLE", "highest change probability in the region"),
    _f("row0", "INTEGER", "REQUIRED", "first pixel row of the bounding box"),
    _f("col0", "INTEGER", "REQUIRED", "first pixel column of the bounding box"),
    _f("row1", "INTEGER", "REQUIRED", "pixel row just past the box"),
    _f("col1", "INTEGER", "REQUIRED", "pixel column just past the box"),
    _f("min_x", "FLOAT", "NULLABLE", "bounds in map units of the capture's CRS (null if none)"),
    _f("min_y", "FLOAT", "NULLABLE", "bounds in map units"),
    _f("max_x", "FLOAT", "NULLABLE", "bounds in map units"),
    _f("max_y", "FLOAT", "NULLABLE", "bounds in map units"),
    _f("geometry", "GEOGRAPHY", "NULLABLE",
       "the region, WGS84 lon/lat WKT (null when the capture has no CRS)"),
    _f("geometry_crs", "STRING", "NULLABLE", "the region as WKT in the capture's CRS"),
    _f("geometry_pixel", "STRING", "REQUIRED", "the region as WKT in pixels (x column, y row)"),
    _f("crs", "STRING", "NULLABLE", "CRS of the capture (EPSG code or WKT), null if none"),
    *_RUN,
)

TABLES = {"planned_pairs": PLANNED_PAIRS, "pairs": PAIRS, "chips": CHIPS, "first_captures": FIRST_CAPTURES,
          "dead_letter": DEAD_LETTERS, "history": HISTORY, "regions": REGIONS}


def bigquery_schema(fields: tuple[Field, ...]) -> list[dict]:
  """The schema as `bq load` and `WriteToBigQuery` take it (a JSON list of fields)."""
  out = []
  for f in fields:
    entry = {"name": f.name, "type": f.type, "mode": f.mode, "description": f.description}
    if f.fields:
      entry["fields"] = bigquery_schema(f.fields)
    out.append(entry)
  return out


def arrow_schema(fields: tuple[Field, ...]):
  import pyarrow as pa

  def arrow_type(f: Field):
    if f.type == "RECORD":
      return pa.struct([pa.field(s.name, arrow_type(s), s.mode != "REQUIRED")
                        for s in f.fields])
    return {"STRING": pa.string(), "INTEGER": pa.int64(), "FLOAT": pa.float64(),
            "BOOLEAN": pa.bool_(), "TIMESTAMP": pa.timestamp("us", tz="UTC"),
            "DATE": pa.date32(), "GEOGRAPHY": pa.string()}[f.type]

  return pa.schema([
      pa.field(f.name, pa.list_(arrow_type(f)) if f.mode == "REPEATED" else arrow_type(f),
               f.mode == "NULLABLE") for f in fields])


def to_arrow_row(row: dict, fields: tuple[Field, ...]) -> dict:
  """Converts a JSON row's ISO times and dates to Python values Arrow stores natively."""
  out = dict(row)
  for f in fields:
    value = out.get(f.name)
    if value is None:
      continue
    if f.type == "TIMESTAMP":
      out[f.name] = dt.datetime.fromisoformat(value).replace(tzinfo=dt.timezone.utc)
    elif f.type == "DATE":
      out[f.name] = dt.date.fromisoformat(value)
  return out


def check_row(row: dict, fields: tuple[Field, ...], where: str = "row") -> None:
  """Raises ValueError when a row does not fit the schema (missing, extra or mistyped fields)."""
  names = {f.name for f in fields}
  extra = set(row) - names
  if extra:
    raise ValueError(f"{where}: fields not in the schema: {sorted(extra)}")
  kinds = {"STRING": str, "INTEGER": int, "FLOAT": (float, int), "BOOLEAN": bool,
           "TIMESTAMP": str, "DATE": str, "GEOGRAPHY": str}
  for f in fields:
    value = row.get(f.name)
    if value is None:
      if f.mode == "REQUIRED":
        raise ValueError(f"{where}: required field {f.name!r} is missing")
      continue
    if f.mode == "REPEATED":
      if not isinstance(value, list):
        raise ValueError(f"{where}: {f.name!r} must be a list")
      for i, item in enumerate(value):
        if f.type == "RECORD":
          check_row(item, f.fields, f"{where}.{f.name}[{i}]")
        else:
          check_row({f.name: item}, (f._replace(mode="REQUIRED"),), f"{where}[{i}]")
      continue
    if f.type == "RECORD":
      check_row(value, f.fields, f"{where}.{f.name}")
    elif not isinstance(value, kinds[f.type]) or (f.type != "BOOLEAN" and isinstance(value, bool)):
      raise ValueError(f"{where}: {f.name!r}={value!r} is not {f.type}")

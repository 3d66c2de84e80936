"""Pair rows -> a BigQuery table partitioned by capture date and clustered by location.

Batch writes use file loads (no streaming-insert cost or quota). Re-runs never rewrite rows:
the table is append-only and keyed by `(pair_id, model_id, model_version)`; the view
`<table>_latest` (deploy/bigquery/) keeps one row per key, the one of the latest run. That is
safe whatever a night's captures are dated, where replacing "tonight's partition" is not: the
table is partitioned by *capture* date, and one night scores pairs of many capture dates whose
partitions already hold rows of other nights.
"""
from __future__ import annotations

import json
import math
import re

import apache_beam as beam
from apache_beam.io.gcp import bigquery_tools

from changesweep.pipeline import schemas

PARTITION_FIELD = "capture_date"
CLUSTER_FIELDS = ("location",)
DEDUP_KEY = ("pair_id", "model_id", "model_version")
_TABLE = re.compile(r"^(?P<project>[a-z][a-z0-9.:-]{4,61}[a-z0-9]):"
                    r"(?P<dataset>[A-Za-z0-9_]{1,1024})\.(?P<table>[A-Za-z0-9_-]{1,1024})$")


def parse_table(spec: str) -> tuple[str, str, str]:
  """`PROJECT:DATASET.TABLE` -> `(project, dataset, table)`.

  Raises:
    ValueError: not of that shape.
  """
  m = _TABLE.match(spec or "")
  if not m:
    raise ValueError(f"--bigquery_table must be PROJECT:DATASET.TABLE, got {spec!r}")
  return m["project"], m["dataset"], m["table"]


def table_parameters(fields: tuple[schemas.Field, ...] = schemas.PAIRS,
                     partition_field: str = PARTITION_FIELD,
                     cluster_fields: tuple[str, ...] = CLUSTER_FIELDS) -> dict:
  """The table's partitioning and clustering, as `additional_bq_parameters` takes them.

  Raises:
    ValueError: the partition column is not a REQUIRED DATE, or a cluster column is missing.
  """
  by_name = {f.name: f for f in fields}
  part = by_name.get(partition_field)
  if part is None or part.type != "DATE" or part.mode != "REQUIRED":
    raise ValueError(f"partition column {partition_field!r} must be a REQUIRED DATE field")
  missing = [c for c in cluster_fields if c not in by_name or by_name[c].mode == "REPEATED"]
  if missing:
    raise ValueError(f"cluster columns not in the schema: {missing}")
  return {"timePartitioning": {"type": "DAY", "field": partition_field},
          "clustering": {"fields": list(cluster_fields)}}


def to_bigquery_row(row: dict, fields: tuple[schemas.Field, ...] = schemas.PAIRS) -> dict:
  """A sweep row as a BigQuery JSON load takes it: only schema fields, no NaN/inf floats."""

  def clean(value, f):
    if f.mode == "REPEATED":
      return [clean_one(v, f) for v in (value or [])]
    return clean_one(value, f)

  def clean_one(value, f):
    if value is None:
      return None
    if f.type == "RECORD":
      return {s.name: clean(value.get(s.name), s) for s in f.fields}
    if f.type == "FLOAT" and not math.isfinite(value):
      return None
    return value

  return {f.name: clean(row.get(f.name), f) for f in fields}


def ddl(table: str, fields: tuple[schemas.Field, ...] = schemas.PAIRS,
        partition_field: str = PARTITION_FIELD,
        cluster_fields: tuple[str, ...] = CLUSTER_FIELDS) -> str:
  """`CREATE TABLE IF NOT EXISTS` for `table` (`project.dataset.table`), from the schema."""
  table_parameters(fields, partition_field, cluster_fields)

  def col_type(f, indent):
    if f.type == "RECORD":
      inner = ",\n".join(f"{indent}  {s.name} {col_type(s, indent + '  ')}" for s in f.fields)
      base = f"STRUCT<\n{inner}\n{indent}>"
    else:
      base = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}.get(f.type, f.type)
    if f.mode == "REPEATED":
      return f"ARRAY<{base}>"
    # NOT NULL is not allowed inside STRUCTs of ARRAYs in DDL; only top-level columns get it.
    return base + (" NOT NULL" if f.mode == "REQUIRED" and indent == "  " else "")

  def opt(f):
    return f"OPTIONS(description={json.dumps(f.description)})"

  cols = ",\n".join(f"  {f.name} {col_type(f, '  ')} {opt(f)}" for f in fields)
  return (f"CREATE TABLE IF NOT EXISTS `{table}` (\n{cols}\n)\n"
          f"PARTITION BY {partition_field}\n"
          f"CLUSTER BY {', '.join(cluster_fields)}\n"
          f"OPTIONS(description=\"changesweep pair rows; append-only, read through "
          f"{table.rsplit('.', 1)[-1]}_latest\");\n")


def dedup_view_ddl(table: str, key: tuple[str, ...] = DEDUP_KEY) -> str:
  """`CREATE OR REPLACE VIEW <table>_latest`: one row per key, from the latest run."""
  return (f"CREATE OR REPLACE VIEW `{table}_latest` AS\n"
          f"SELECT * EXCEPT(_n) FROM (\n"
          f"  SELECT *, ROW_NUMBER() OVER (\n"
          f"    PARTITION BY {', '.join(key)} ORDER BY run_id DESC) AS _n\n"
          f"  FROM `{table}`)\n"
          f"WHERE _n = 1;\n")


class WriteRowsToBigQuery(beam.PTransform):
  """Rows (dicts of `fields`) -> BigQuery, by load jobs, creating the table if needed.

  Attributes:
    table: `PROJECT:DATASET.TABLE`.
    fields: the table's schema (`schemas.PAIRS`).
    write_kwargs: extra `WriteToBigQuery` arguments (tests pass `test_client` and
      `custom_gcs_temp_location`).
  """

  def __init__(self, table: str, fields: tuple[schemas.Field, ...] = schemas.PAIRS,
               **write_kwargs):
    super().__init__()
    parse_table(table)
    self.table = table
    self.fields = fields
    self.parameters = table_parameters(fields)
    self.write_kwargs = write_kwargs

  def expand(self, rows):
    fields = self.fields
    return (rows
            | "ToBigQueryRow" >> beam.Map(to_bigquery_row, fields)
            | "WriteToBigQuery" >> beam.io.WriteToBigQuery(
                self.table,
                schema={"fields": schemas.bigquery_schema(fields)},
                method=beam.io.WriteToBigQuery.Method.FILE_LOADS,
                create_disposition=beam.io.BigQueryDisposition.CREATE_IF_NEEDED,
                write_disposition=beam.io.BigQueryDisposition.WRITE_APPEND,
                additional_bq_parameters=self.parameters,
                temp_file_format=bigquery_tools.FileFormat.JSON,
                **self.write_kwargs))


DDL_PLACEHOLDER = "PROJECT_ID.DATASET.TABLE"
DDL_FILES = {
    "pairs.sql": ("-- GENERATED from pipeline/schemas.py PAIRS by `python -m changesweep.pipeline.bigquery "
                  "deploy/bigquery`.\n"
                  "-- deploy/launch.sh --setup replaces PROJECT_ID.DATASET.TABLE and runs it "
                  "with `bq query`.\n"
                  "-- Append-only: every run adds its rows; read the table through the "
                  "_latest view.\n", ddl),
    "pairs_latest_view.sql": (
        "-- GENERATED by `python -m changesweep.pipeline.bigquery deploy/bigquery`.\n"
        "-- One row per (pair_id, model_id, model_version): the row of the latest run (run "
        "ids\n-- sort by time: the default is sweep-<UTC time>). Re-running a night or "
        "--force only\n-- adds rows this view hides.\n", dedup_view_ddl),
}


def ddl_files() -> dict[str, str]:
  """The text of deploy/bigquery/*.sql, generated from the schema."""
  return {name: header + make(DDL_PLACEHOLDER) for name, (header, make) in DDL_FILES.items()}


if __name__ == "__main__":
  import os
  import sys

  folder = sys.argv[1] if len(sys.argv) > 1 else "deploy/bigquery"
  for name, text in ddl_files().items():
    with open(os.path.join(folder, name), "w") as f:
      f.write(text)
    print(os.path.join(folder, name))

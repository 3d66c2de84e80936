"""Sharded outputs: newline-delimited JSON and Parquet per table, BigQuery schema JSON beside them."""
from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from changesweep.pipeline import schemas


def table_prefix(output: str, table: str) -> str:
  return FileSystems.join(output, table, table)


def write_schemas(output: str) -> None:
  """Writes `schema/<table>.json` for every table, as `bq load` takes it."""
  for name, fields in schemas.TABLES.items():
    with FileSystems.create(FileSystems.join(output, "schema", f"{name}.json")) as f:
      f.write(json.dumps(schemas.bigquery_schema(fields), indent=2).encode() + b"\n")


def clear_tables(output: str) -> list[str]:
  """Removes the row shards of an earlier run in `output` (any shard count); returns them.

  Shard file names carry the shard count, so a re-run with another `--num_shards` would leave
  the old shards beside the new ones, and summaries and reports would read both.
  """
  patterns = [f"{table_prefix(output, t)}-*-of-*.{ext}" for t in schemas.TABLES
              for ext in ("jsonl", "parquet", "geojson")]
  patterns.append(FileSystems.join(output, "regions", "pairs", "*.geojson"))
  stale = [m.path for r in FileSystems.match(patterns) for m in r.metadata_list]
  if stale:
    FileSystems.delete(stale)
  return stale


class WriteTable(beam.PTransform):
  """Rows (dicts) -> `OUT/<table>/<table>-SSSSS-of-NNNNN.{jsonl,parquet}`.

  File names are fixed by the shard count, so a re-run replaces a run's files rather than
  adding to them.
  """

  def __init__(self, output: str, table: str, num_shards: int = 1, parquet: bool = True):
    super().__init__()
    if table not in schemas.TABLES:
      raise ValueError(f"unknown table {table!r}")
    if num_shards < 0:
      raise ValueError(f"num_shards must be >= 0, got {num_shards}")
    self.prefix = table_prefix(output, table)
    self.fields = schemas.TABLES[table]
    self.num_shards = num_shards
    self.parquet = parquet

  def expand(self, rows):
    fields = self.fields
    _ = (rows
         | "ToJson" >> beam.Map(lambda r: json.dumps(r, sort_keys=True))
         | "WriteJsonl" >> beam.io.WriteToText(self.prefix, file_name_suffix=".jsonl",
                                               num_shards=self.num_shards))
    if self.parquet:
      _ = (rows
           | "ToArrow" >> beam.Map(schemas.to_arrow_row, fields)
           | "WriteParquet" >> beam.io.WriteToParquet(
               self.prefix, schemas.arrow_schema(fields), file_name_suffix=".parquet",
               num_shards=self.num_shards))
    return rows


def read_jsonl_rows(output: str, table: str) -> list[dict]:
  """All rows of a table written by a finished sweep (for summaries, reports and tests)."""
  match = FileSystems.match([table_prefix(output, table) + "-*.jsonl"])[0]
  rows = []
  for meta in sorted(match.metadata_list, key=lambda m: m.path):
    with FileSystems.open(meta.path) as f:
      rows += [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
  return rows

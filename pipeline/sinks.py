"""Sharded outputs: newline-delimited JSON and Parquet per table, BigQuery schema JSON beside them."""
from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.value_provider import StaticValueProvider

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


# the tables `WriteTables` writes in a sweep and in a dry run (regions: geoio.WriteRegions)
SWEEP_TABLES = ("pairs", "chips", "first_captures", "dead_letter", "history")
DRY_RUN_TABLES = ("planned_pairs", "first_captures", "dead_letter")


def tables_written(dry_run: bool) -> tuple[str, ...]:
  return DRY_RUN_TABLES if dry_run else SWEEP_TABLES


def prepare_tables(output: str, tables=SWEEP_TABLES) -> list[str]:
  """Clears an earlier run's shards and makes the tables' folders; returns what it removed.

  The folders must exist before the write: fileio moves finished files into them with a
  rename, which on a local disk needs the folder.
  """
  stale = clear_tables(output)
  for table in tables:
    folder = FileSystems.join(output, table)
    if not FileSystems.exists(folder):
      FileSystems.mkdirs(folder)
  return stale


PARQUET_ROW_GROUP = 10_000  # rows a Parquet file buffers before it writes a row group


class _TableSink(fileio.FileSink):
  """One table's file in one format; the `None` record (each table's marker) writes no row."""

  def __init__(self, fmt: str, fields):
    self.fmt = fmt
    self.fields = fields

  def open(self, fh):
    self._fh = fh
    self._rows = []
    self._writer = None
    if self.fmt == "parquet":
      import pyarrow.parquet as pq
      self._writer = pq.ParquetWriter(fh, schemas.arrow_schema(self.fields))

  def write(self, record):
    record = record[1]  # (destination, row)
    if record is None:
      return
    if self.fmt == "jsonl":
      self._fh.write(record.encode() + b"\n")
      return
    self._rows.append(record)
    if len(self._rows) >= PARQUET_ROW_GROUP:
      self._write_rows()

  def _write_rows(self):
    import pyarrow as pa
    if self._rows:
      self._writer.write_table(pa.Table.from_pylist(self._rows, self._writer.schema))
      self._rows = []

  def flush(self):
    if self._writer is not None:  # fileio flushes once, before it closes the file
      self._write_rows()
      self._writer.close()
      self._writer = None
    self._fh.flush()


class _SinkFor:
  """fileio's `sink` argument: the sink of a destination `<table>.<format>`."""

  def __call__(self, destination: str) -> _TableSink:
    table, fmt = destination.rsplit(".", 1)
    return _TableSink(fmt, schemas.TABLES[table])


def _table_file_name(window, pane, shard_index, total_shards, compression, destination) -> str:
  table, fmt = destination.rsplit(".", 1)
  return f"{table}/{table}-{shard_index:05d}-of-{total_shards:05d}.{fmt}"


def _encode(row: dict, table: str, formats: tuple[str, ...]):
  for fmt in formats:
    yield (f"{table}.{fmt}", json.dumps(row, sort_keys=True) if fmt == "jsonl"
           else schemas.to_arrow_row(row, schemas.TABLES[table]))


class WriteTables(beam.PTransform):
  """`{table: rows}` -> `OUT/<table>/<table>-SSSSS-of-NNNNN.{jsonl,parquet}`, in one write.

  One `fileio.WriteToFiles` with a destination per table and format. A Beam `WriteToText` or
  `WriteToParquet` per table costs five or six stages each (initialise, write, group,
  pre-finalise, finalise); the eight of a sweep were about 1.5 s of a one-pair run. Every
  table gets at least one file, empty or not, as `bq load` expects. `num_shards` N spreads a
  table's rows round robin over at most N files (fewer when it has fewer rows); 0 leaves it to
  the runner (a file per bundle). `prepare_tables` must have run on `output`.
  """

  def __init__(self, output: str, num_shards: int, parquet: tuple[str, ...] = ()):
    super().__init__()
    if num_shards < 0:
      raise ValueError(f"num_shards must be >= 0, got {num_shards}")
    self.output = output
    self.num_shards = num_shards
    self.parquet = tuple(parquet)

  def expand(self, tables: dict):
    unknown = set(tables) - set(schemas.TABLES)
    if unknown:
      raise ValueError(f"unknown tables {sorted(unknown)}")
    formats = {t: ("jsonl", "parquet") if t in self.parquet else ("jsonl",) for t in tables}
    records = [pcoll | f"Encode[{t}]" >> beam.FlatMap(_encode, t, formats[t])
               for t, pcoll in tables.items()]
    markers = (records[0].pipeline | "TableMarkers" >> beam.Create(
        [(f"{t}.{fmt}", None) for t in tables for fmt in formats[t]]))
    # temporary files beside the tables: a local rename cannot cross file systems
    temp = temp_folder(self.output)
    return ((*records, markers)
            | "FlattenTables" >> beam.Flatten()
            | "WriteFiles" >> fileio.WriteToFiles(
                self.output, file_naming=_table_file_name, destination=lambda kv: kv[0],
                sink=_SinkFor(), shards=self.num_shards or None,
                temp_directory=StaticValueProvider(str, temp),
                # with a shard count every record takes the sharded path (N files at most);
                # without, each bundle writes its own files
                max_writers_per_bundle=0 if self.num_shards else
                fileio.WriteToFiles.MAX_NUM_WRITERS_PER_BUNDLE)
            | "Written" >> beam.Map(lambda result: result.file_name))


def check_tables_written(output: str, tables) -> None:
  """Raises if a table has no file after a finished run (fileio logs a failed move, no more)."""
  missing = [t for t in tables
             if not FileSystems.match([table_prefix(output, t) + "-*.jsonl"])[0].metadata_list]
  if missing:
    raise IOError(f"{output}: no file was written for table(s) {', '.join(missing)}")


def temp_folder(output: str) -> str:
  return FileSystems.join(output, ".tables-tmp")


def remove_temp(output: str) -> None:
  """Removes the write's temporary folder, empty once its files are moved (a local folder)."""
  temp = temp_folder(output)
  if FileSystems.exists(temp):
    FileSystems.delete([temp])


def read_jsonl_rows(output: str, table: str) -> list[dict]:
  """All rows of a table written by a finished sweep (for summaries, reports and tests)."""
  match = FileSystems.match([table_prefix(output, table) + "-*.jsonl"])[0]
  rows = []
  for meta in sorted(match.metadata_list, key=lambda m: m.path):
    with FileSystems.open(meta.path) as f:
      rows += [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
  return rows

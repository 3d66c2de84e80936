"""Output tables: a re-run replaces an earlier run's shards, whatever their count."""
import os

import pytest

from apache_beam.options.pipeline_options import PipelineOptions

from changesweep.pipeline import main as sweep_main, sinks


def touch(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write('{"pair_id": "old"}\n')


def test_clear_tables_removes_every_shard_count_and_nothing_else(tmp_path):
  out = str(tmp_path)
  old = [f"{out}/pairs/pairs-00000-of-00002.jsonl", f"{out}/pairs/pairs-00001-of-00002.jsonl",
         f"{out}/chips/chips-00000-of-00003.parquet",
         f"{out}/regions/regions-00000-of-00001.geojson", f"{out}/regions/pairs/p.geojson"]
  keep = [f"{out}/maps/loc/p.tif", f"{out}/run.json", f"{out}/pairs/notes.txt"]
  for p in old + keep:
    touch(p)
  assert sorted(sinks.clear_tables(out)) == sorted(old)
  assert all(os.path.exists(p) for p in keep) and not any(os.path.exists(p) for p in old)
  assert sinks.read_jsonl_rows(out, "pairs") == []


def test_shards_default_to_one_locally_and_to_the_runner_on_dataflow():
  assert sweep_main.default_num_shards(None, PipelineOptions([])) == 1
  assert sweep_main.default_num_shards(None, PipelineOptions(["--runner", "DataflowRunner"])) == 0
  assert sweep_main.default_num_shards(3, PipelineOptions(["--runner", "DataflowRunner"])) == 3


def _write_tables(out, tables, num_shards, parquet=("pairs",)):
  import apache_beam as beam

  with beam.Pipeline() as p:
    _ = ({t: p | f"Rows[{t}]" >> beam.Create(rows) for t, rows in tables.items()}
         | sinks.WriteTables(out, num_shards, parquet=parquet))


def full_row(fields, i):
  """A row with every field of a table's schema filled (as a sweep's rows are)."""
  values = {"STRING": f"v{i}", "INTEGER": i, "FLOAT": i / 10, "BOOLEAN": True,
            "TIMESTAMP": "2020-01-02T00:00:00+00:00", "DATE": "2020-01-02",
            "GEOGRAPHY": "POINT(0 0)"}
  row = {}
  for f in fields:
    value = full_row(f.fields, i) if f.type == "RECORD" else values[f.type]
    row[f.name] = [value] if f.mode == "REPEATED" else value
  return {**row, "pair_id": f"p{i}"} if "pair_id" in row else row


def _pair_rows(n=5):
  from changesweep.pipeline import schemas
  return [full_row(schemas.PAIRS, i) for i in range(n)]


def test_every_table_gets_its_rows_and_a_file_even_when_empty(tmp_path):
  import glob

  import pyarrow.parquet as pq

  from changesweep.pipeline import schemas
  out = str(tmp_path)
  sinks.prepare_tables(out, ("pairs", "dead_letter"))
  _write_tables(out, {"pairs": _pair_rows(), "dead_letter": []}, num_shards=2)
  sinks.remove_temp(out)
  sinks.check_tables_written(out, ("pairs", "dead_letter"))
  assert sorted(os.listdir(out)) == ["dead_letter", "pairs"]  # no temporary folder left
  jsonl = sorted(glob.glob(f"{out}/pairs/pairs-*-of-00002.jsonl"))
  assert len(jsonl) == 2  # five rows, round robin over two shards
  assert sorted(r["pair_id"] for r in sinks.read_jsonl_rows(out, "pairs")) == [
      f"p{i}" for i in range(5)]
  table = pq.ParquetDataset(sorted(glob.glob(f"{out}/pairs/*.parquet"))).read()
  assert table.num_rows == 5 and table.schema.names == [f.name for f in schemas.PAIRS]
  assert os.listdir(f"{out}/dead_letter") == ["dead_letter-00000-of-00001.jsonl"]
  assert sinks.read_jsonl_rows(out, "dead_letter") == []


def test_a_table_with_no_file_after_the_run_is_an_error(tmp_path):
  out = str(tmp_path)
  sinks.prepare_tables(out, ("pairs", "chips"))
  _write_tables(out, {"pairs": _pair_rows()}, num_shards=1)
  sinks.check_tables_written(out, ("pairs",))
  with pytest.raises(IOError, match="chips"):
    sinks.check_tables_written(out, ("pairs", "chips"))

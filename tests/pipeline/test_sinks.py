"""Output tables: a re-run replaces an earlier run's shards, whatever their count."""
import os

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

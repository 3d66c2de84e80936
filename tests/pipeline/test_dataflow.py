"""Dataflow with GPU workers: the pipeline graph built with Dataflow options carries the
accelerator resource hint on the inference step only (checked in the runner API proto)."""
import json
import os

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import GoogleCloudOptions, WorkerOptions
from apache_beam.portability.common_urns import resource_hints as rh

from changesweep.pipeline import dataflow, launch, main, scoring
from tests.conftest import ROOT, SAMPLE_ARCHIVE

ACCEL = rh.ACCELERATOR.urn
DATAFLOW_ARGS = ["--runner", "DataflowRunner", "--project", "changesweep-test",
                 "--region", "us-central1", "--temp_location", "gs://changesweep-test/tmp",
                 "--sdk_container_image", "us-central1-docker.pkg.dev/p/changesweep/worker:t1"]


@pytest.fixture(autouse=True)
def no_gcs_calls(monkeypatch):
  # Pipeline(options) with DataflowRunner validates temp_location by calling GCS; no cloud here.
  monkeypatch.setattr(GoogleCloudOptions, "_warn_if_soft_delete_policy_enabled",
                      lambda self, name: None)


def build(tmp_path, *args):
  cfg, options = main.parse_args([*DATAFLOW_ARGS, "--input", SAMPLE_ARCHIVE,
                                  "--output", str(tmp_path / "out"), *args])
  p = beam.Pipeline(options=options)
  main.build_sweep(p, cfg, str(tmp_path / "tft"))
  return cfg, options, p.to_runner_api()


def hinted(proto) -> dict[str, bytes]:
  """Leaf transforms (no subtransforms) whose environment carries an accelerator hint."""
  out = {}
  for t in proto.components.transforms.values():
    env = proto.components.environments.get(t.environment_id)
    if not t.subtransforms and env is not None and ACCEL in env.resource_hints:
      out[t.unique_name] = env.resource_hints[ACCEL]
  return out


def leaf_names(proto) -> list[str]:
  return [t.unique_name for t in proto.components.transforms.values() if not t.subtransforms]


@pytest.mark.parametrize("args,expected", [
    (("nvidia-tesla-t4",), "type:nvidia-tesla-t4;count:1;install-nvidia-driver"),
    (("nvidia-l4", 2, "g2-standard-24"),
     "type:nvidia-l4;count:2;machine_type:g2-standard-24;install-nvidia-driver"),
])
def test_accelerator_spec(args, expected):
  assert dataflow.accelerator_spec(*args) == expected
  assert dataflow.parse_accelerator_count(expected) == (args[1] if len(args) > 1 else 1)


@pytest.mark.parametrize("args", [("tesla-t4",), ("nvidia-l4", 0), ("nvidia-l4", 1, "G2 big")])
def test_accelerator_spec_rejects_bad_values(args):
  with pytest.raises(ValueError):
    dataflow.accelerator_spec(*args)


def test_gpu_hint_sits_on_the_inference_step_only(tmp_path):
  cfg, options, proto = build(tmp_path, "--gpu_type", "nvidia-l4",
                              "--gpu_machine_type", "g2-standard-8", "--max_batch_bytes",
                              str(3 * 256 * 256 * 9 * 4))
  spec = b"type:nvidia-l4;count:1;machine_type:g2-standard-8;install-nvidia-driver"
  hints = hinted(proto)
  inference = [n for n in hints if "BeamML_RunInference" in n]
  # without --model every default model scores (per-pair choice): each inference step is hinted
  assert {n.split("/")[0] for n in inference} == {
      "Score[changesweep-siamdiff-oscd-rgb-v1]", "Score[changesweep-ensemble-s2-v1]",
      "Score[changesweep-anyband-s2-v3]"}
  assert all(hints[n] == spec for n in inference)
  assert set(hints) - set(inference) == {"CheckGpu/Check"}
  # CPU work stays on the CPU pool: listing, chip reads, tf.Transform, aggregation, sinks.
  for name in leaf_names(proto):
    if any(part in name for part in ("ListCaptures", "ReadChips", "ComputeStatistics",
                                     "Normalize", "ReduceChips", "FinishPairs", "Write[",
                                     "RunInference/BatchElements", "BandStatistics")):
      assert name not in hints, name
  # one model copy per GPU, shared across the worker's processes; the job has no job-wide GPU
  assert cfg.model_copies == 1
  assert not options.view_as(GoogleCloudOptions).dataflow_service_options
  assert options.view_as(WorkerOptions).sdk_container_image.endswith("worker:t1")
  assert options.get_all_options()["runner"] == "DataflowRunner"


def test_job_wide_gpu_uses_the_service_option_and_no_hints(tmp_path):
  cfg, options, proto = build(tmp_path, "--gpu_type", "nvidia-tesla-t4", "--gpu_count", "2",
                              "--gpu_mode", "job")
  assert hinted(proto) == {}
  assert options.view_as(GoogleCloudOptions).dataflow_service_options == [
      "worker_accelerator=type:nvidia-tesla-t4;count:2;install-nvidia-driver"]
  assert cfg.model_copies == 2 and "CheckGpu/Check" in leaf_names(proto)


def test_cpu_run_has_no_hints_and_no_gpu_check(tmp_path):
  cfg, _, proto = build(tmp_path)
  assert hinted(proto) == {} and cfg.accelerator is None
  assert not any(n.startswith("CheckGpu") for n in leaf_names(proto))


def test_flex_template_parameters_are_sweep_options(tmp_path):
  """The launcher passes each template parameter as --NAME=VALUE: all must parse."""
  with open(os.path.join(ROOT, "deploy", "metadata.json")) as f:
    params = {p["name"]: p for p in json.load(f)["parameters"]}
  values = {"input": SAMPLE_ARCHIVE, "output": str(tmp_path / "out"), "layout": "{location}/{date}.tif",
            "model": os.path.join(ROOT, "model", "shipped", "cva-s2"), "statistics": "model",
            "batch_size": "4", "max_batch_bytes": "100000000", "model_copies": "1",
            "num_shards": "0", "run_id": "night-1", "bigquery_table": "p-123456:ds.pairs",
            "state": str(tmp_path / "state.jsonl"), "since": "2017-01-01", "force": "true",
            "gpu_type": "nvidia-l4", "gpu_count": "1", "gpu_machine_type": "g2-standard-8",
            "gpu_mode": "hints", "statistics_chips": "8", "grid": "EPSG:32633,10",
            "min_overlap": "0.3", "resampling": "cubic", "coregister": "true"}
  skip = {"manifest", "bands"}  # exclusive with input / model-dependent
  assert set(params) - skip <= set(values), set(params) - skip - set(values)
  argv = DATAFLOW_ARGS + [f"--{k}={v}" for k, v in values.items() if k in params]
  cfg, _ = main.parse_args(argv)
  assert (cfg.force, cfg.since, cfg.state, cfg.bigquery_table) == (
      True, "2017-01-01", str(tmp_path / "state.jsonl"), "p-123456:ds.pairs")
  assert cfg.accelerator.startswith("type:nvidia-l4;count:1")
  assert (cfg.statistics_chips, cfg.coregister, cfg.grids.resampling) == (8, True, "cubic")
  required = {n for n, p in params.items() if not p["isOptional"]}
  assert required == {"output"}


def test_run_date_fills_output_and_run_id_but_not_layout():
  argv = ["--output", "gs://b/sweeps/{date}", "--run_id=night-{date}",
          "--layout", "{location}/{date}.tif"]
  assert launch.expand_run_date(argv, "2026-11-24") == [
      "--output", "gs://b/sweeps/2026-11-24", "--run_id=night-2026-11-24",
      "--layout", "{location}/{date}.tif"]


def test_capped_batch_size_counts_chip_bytes():
  chip = 256 * 256 * 9 * 4
  assert scoring.capped_batch_size(8, None, 256, 4) == 8
  assert scoring.capped_batch_size(8, 3 * chip + 1, 256, 4) == 3
  assert scoring.capped_batch_size(8, 10, 256, 4) == 1


def _gpus():
  import tensorflow as tf

  return tf.config.list_physical_devices("GPU")


@pytest.mark.skipif(bool(_gpus()), reason="this machine has a GPU")
def test_gpu_guard_fails_fast_without_a_gpu():
  with pytest.raises(dataflow.NoGpuError, match="sees none"):
    dataflow.check_gpu(None)
  handler = scoring.SavedModelHandler(os.path.join(ROOT, "model", "shipped", "cva-s2",
                                                   "saved_model"), require_gpu=True)
  with pytest.raises(dataflow.NoGpuError):
    handler.load_model()


@pytest.mark.skipif(not _gpus(), reason="needs a GPU")
def test_gpu_guard_passes_on_a_gpu():
  assert dataflow.check_gpu(None) >= 1

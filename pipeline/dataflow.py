"""Dataflow with GPU workers: the accelerator spec, GPU flags and the GPU guard.

The submit-only launcher is `pipeline.launch`; this module imports no other stage.

Two ways to give the inference step a GPU (see deploy/README.md):

- ``gpu_mode="hints"`` (default): right fitting. Only the RunInference step carries the resource
  hint ``accelerator=type:T;count:N;install-nvidia-driver``, so listing, chip reads and
  tf.Transform run on the CPU pool (``--machine_type``) and inference on a GPU pool.
- ``gpu_mode="job"``: every worker gets the GPU through the job-wide service option
  ``--dataflow_service_options=worker_accelerator=...`` and no step carries a hint (Dataflow
  refuses the two together).
"""
from __future__ import annotations

import logging
import re

import apache_beam as beam

log = logging.getLogger("changesweep")

GPU_MODES = ("hints", "job")
_GPU_TYPE = re.compile(r"^nvidia-[a-z0-9-]+$")
_MACHINE_TYPE = re.compile(r"^[a-z][a-z0-9-]*$")


def accelerator_spec(gpu_type: str, count: int = 1, machine_type: str | None = None,
                     install_driver: bool = True) -> str:
  """The Dataflow accelerator string, e.g. ``type:nvidia-l4;count:1;install-nvidia-driver``.

  Args:
    gpu_type: a Dataflow GPU type (nvidia-tesla-t4, nvidia-l4, nvidia-tesla-a100, ...).
    count: GPUs per worker.
    machine_type: machine type of the GPU pool (right fitting only; e.g. g2-standard-8 for L4).
    install_driver: let Dataflow install the NVIDIA driver on the worker VM.

  Raises:
    ValueError: a malformed type, count or machine type.
  """
  if not _GPU_TYPE.match(gpu_type or ""):
    raise ValueError(f"GPU type must look like nvidia-tesla-t4 or nvidia-l4, got {gpu_type!r}")
  if count < 1:
    raise ValueError(f"GPU count must be >= 1, got {count}")
  if machine_type is not None and not _MACHINE_TYPE.match(machine_type):
    raise ValueError(f"bad GPU machine type {machine_type!r}")
  parts = [f"type:{gpu_type}", f"count:{count}"]
  if machine_type:
    parts.append(f"machine_type:{machine_type}")
  if install_driver:
    parts.append("install-nvidia-driver")
  return ";".join(parts)


def parse_accelerator_count(spec: str) -> int:
  """The ``count:N`` of an accelerator spec (1 when absent)."""
  for part in spec.split(";"):
    if part.startswith("count:"):
      return int(part[len("count:"):])
  return 1


def gpu_pipeline_args(spec: str, mode: str = "hints") -> list[str]:
  """The Beam/Dataflow flags a GPU run adds to the command line.

  In ``job`` mode the accelerator goes job-wide as a Dataflow service option (and the
  ``machine_type:`` part, which only right fitting reads, is dropped). In ``hints`` mode no
  flag is needed: the hint travels in the pipeline graph on the inference step.
  """
  if mode not in GPU_MODES:
    raise ValueError(f"gpu mode must be one of {GPU_MODES}, got {mode!r}")
  if mode == "hints":
    return []
  job_spec = ";".join(p for p in spec.split(";") if not p.startswith("machine_type:"))
  return [f"--dataflow_service_options=worker_accelerator={job_spec}"]


def configure_gpu_memory() -> int:
  """Lets TensorFlow grow GPU memory instead of taking it all; returns the GPUs visible.

  Must run before TensorFlow first touches the GPU in this process; later it is a no-op (the
  worker image also sets TF_FORCE_GPU_ALLOW_GROWTH=true for every process).
  """
  import tensorflow as tf

  gpus = tf.config.list_physical_devices("GPU")
  for gpu in gpus:
    try:
      tf.config.experimental.set_memory_growth(gpu, True)
    except (RuntimeError, ValueError):  # already initialised: the env var covered it
      pass
  return len(gpus)


class NoGpuError(RuntimeError):
  """A GPU run landed on a worker that sees no GPU (driver not installed, wrong pool or image)."""


def require_gpu(what: str = "inference") -> int:
  """Configures memory growth and raises NoGpuError when no GPU is visible.

  Returns:
    The number of GPUs visible.
  """
  n = configure_gpu_memory()
  if n == 0:
    import tensorflow as tf

    raise NoGpuError(
        f"{what} was asked to run on a GPU but TensorFlow sees none (built with CUDA: "
        f"{tf.test.is_built_with_cuda()}). Check the worker image (deploy/Dockerfile), the "
        "accelerator hint / worker_accelerator option and install-nvidia-driver.")
  return n


def check_gpu(_) -> int:
  """The body of the CheckGpu step: how many GPUs this worker sees (raises when none)."""
  n = require_gpu("the CheckGpu step")
  log.info("GPU check: %d GPU(s) visible", n)
  return n


class CheckGpu(beam.PTransform):
  """A one-element step on a GPU worker that fails the job early when it sees no GPU.

  It starts with the pipeline, so a misconfigured GPU pool fails the job in minutes rather
  than after listing and tf.Transform analysis are done.
  """

  def __init__(self, accelerator: str | None):
    super().__init__()
    self.accelerator = accelerator

  def expand(self, pbegin):
    check = beam.Map(check_gpu)
    if self.accelerator:
      check = check.with_resource_hints(accelerator=self.accelerator)
    return pbegin | "One" >> beam.Create([None]) | "Check" >> check


def configure_gpu_options(options, opts) -> str | None:
  """Turns `--gpu_type/--gpu_count/--gpu_machine_type/--gpu_mode` into the run's GPU settings.

  In ``job`` mode it adds the ``worker_accelerator`` service option to `options` (in place).

  Args:
    options: the run's PipelineOptions.
    opts: `options.view_as(SweepOptions)`.

  Returns:
    The accelerator spec, or None for a CPU-only run.

  Raises:
    ValueError: bad GPU flags.
  """
  if not opts.gpu_type:
    if opts.gpu_machine_type:
      raise ValueError("--gpu_machine_type needs --gpu_type")
    return None
  if opts.gpu_mode == "job" and opts.gpu_machine_type:
    raise ValueError("--gpu_machine_type is for --gpu_mode hints; with --gpu_mode job the GPU "
                     "goes on every worker of --machine_type")
  spec = accelerator_spec(opts.gpu_type, opts.gpu_count, opts.gpu_machine_type)
  from apache_beam.options.pipeline_options import GoogleCloudOptions

  gcp = options.view_as(GoogleCloudOptions)
  for arg in gpu_pipeline_args(spec, opts.gpu_mode):
    service_option = arg.split("=", 1)[1]
    if service_option not in (gcp.dataflow_service_options or []):
      gcp.dataflow_service_options = [*(gcp.dataflow_service_options or []), service_option]
  return spec

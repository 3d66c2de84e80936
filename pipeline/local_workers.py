"""Local multi-process sweeps: what Beam's worker processes need to share one machine well.

With `--direct_running_mode multi_processing` Beam's local runner starts `--direct_num_workers`
Python SDK worker processes, and each loads TensorFlow. Two costs of that are the sweep's to fix,
not the runner's:

- each worker's TensorFlow sizes its thread pools to every core of the machine, so N workers run
  N x cores compute threads on the cores; `worker_environment` gives each worker its share;
- a worker that loaded TensorFlow spends about 2 s tearing its interpreter down after its work is
  done (measured on 2 cores, Beam 2.77, TF 2.21), and the runner stops its workers one after the
  other, so every local 2-worker sweep ended about 4 s after its last bundle. A worker that ends
  normally now skips that teardown (`install_in_worker`); one that fails keeps Python's own exit.

One defect is Beam's, and it loses data silently (Beam 2.77, `runners/worker/data_plane.py`):
`TimeBasedBufferingClosableOutputStream` flushes from a timer thread with `callback(get())`
then `_clear()`, and `write()` does not take its lock, so whatever the writer adds between the
two is discarded. The local runner sends every worker input through such a stream (its data
servicer is built with `worker_handlers.DATA_BUFFER_TIME_LIMIT_MS` = 1000 ms), and
`multi_threading` workers write their outputs through one too. An input that takes the runner
over a second to write (a Flatten or CoGroupByKey input of hundreds of MB) loses whole chunks
(`bench/flush_race.py` reproduces it with a Flatten and 2 worker processes). The
multi-worker chip losses of earlier graphs were this. `untimed_data_plane` sets the limit to 0
for a run, Beam's own default for SDK workers: streams then flush by size or at close only.

Only the local runner's subprocess workers are touched: the flag travels in the environment the
runner hands its workers, so Dataflow workers and in-process runs never see it. Setting
`CHANGESWEEP_LOCAL_WORKER_FAST_EXIT=0` (or TensorFlow's thread variables) before a sweep keeps
the user's choice.
"""
from __future__ import annotations

import contextlib
import os
import sys

# Set by the runner process for its subprocess workers; read by `install_in_worker`.
FAST_EXIT_ENV = "CHANGESWEEP_LOCAL_WORKER_FAST_EXIT"
# TensorFlow's own variables for its thread pools (read when its runtime starts).
TF_THREAD_ENVS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
# Beam's SubprocessSdkWorker sets this for every worker process it starts.
_WORKER_MARK = "CONTROL_API_SERVICE_DESCRIPTOR"
# The local runners (None: the default, in-process FnApiRunner).
_LOCAL_RUNNERS = (None, "", "DirectRunner", "SwitchingDirectRunner", "FnApiRunner")


def starts_worker_processes(runner: str | None, running_mode: str | None) -> bool:
  """Whether these `--runner` and `--direct_running_mode` start Beam's local worker processes."""
  return running_mode == "multi_processing" and runner in _LOCAL_RUNNERS


def worker_settings(runner: str | None, running_mode: str | None, num_workers: int | None,
                    cores: int | None = None) -> dict[str, str]:
  """The environment the local runner's worker processes get, beside the runner's own.

  Args:
    runner: `--runner` (None for the default local runner).
    running_mode: `--direct_running_mode`.
    num_workers: `--direct_num_workers` (0 means one per core, as in Beam).
    cores: the machine's cores (default `os.cpu_count()`).

  Returns:
    Variable -> value; empty unless the local runner starts worker processes.
  """
  if not starts_worker_processes(runner, running_mode):
    return {}
  cores = cores or os.cpu_count() or 1
  workers = num_workers or cores
  threads = str(max(1, cores // workers))
  return {FAST_EXIT_ENV: "1", **{name: threads for name in TF_THREAD_ENVS}}


@contextlib.contextmanager
def untimed_data_plane():
  """While the pipeline runs, the local runner's data-plane streams flush without a timer
  thread (see the module docstring: Beam's timed flush drops concurrent writes).

  Beam reads `DATA_BUFFER_TIME_LIMIT_MS` when the run builds its data servicer and its
  in-process gRPC workers, so the setting only needs to hold for the run. Dataflow's workers
  use Beam's default of 0 already and never read it.
  """
  from apache_beam.runners.portability.fn_api_runner import worker_handlers

  before = worker_handlers.DATA_BUFFER_TIME_LIMIT_MS
  worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0
  try:
    yield
  finally:
    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = before


@contextlib.contextmanager
def worker_environment(options):
  """While the pipeline runs, the environment its local worker processes inherit, and a data
  plane that keeps every byte (`untimed_data_plane`).

  Beam's subprocess workers copy the runner's `os.environ` when they start, so the settings are
  put there for the run and taken out after it. A TensorFlow thread count the user set is kept.
  """
  from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

  direct = options.view_as(DirectOptions)
  settings = worker_settings(options.view_as(StandardOptions).runner,
                             direct.direct_running_mode, direct.direct_num_workers)
  added = {k: v for k, v in settings.items() if k not in os.environ}
  os.environ.update(added)
  try:
    with untimed_data_plane():
      yield added
  finally:
    for name in added:
      os.environ.pop(name, None)


def install_in_worker() -> None:
  """In a local subprocess worker (`FAST_EXIT_ENV` set), end the process without interpreter
  teardown once its harness has returned normally.

  Registered with `atexit` when this package is first imported in the worker (when the first
  of its DoFns is unpickled), so exit handlers registered later, TensorFlow's among them, still
  run first. A worker leaving on an unhandled exception (Python has set `sys.last_value`)
  keeps the normal teardown and its failing status.
  """
  if os.environ.get(FAST_EXIT_ENV) != "1" or not os.environ.get(_WORKER_MARK):
    return
  import atexit

  atexit.register(_exit_now)


def _exit_now() -> None:
  if getattr(sys, "last_value", None) is not None:
    return
  exit_now(0)


def exit_now(code: int) -> None:
  """Ends this worker process with `code` after flushing its logs and streams, without the
  interpreter's teardown."""
  import logging

  logging.shutdown()
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  os._exit(code)

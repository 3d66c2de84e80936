"""Local multi-process sweeps: each worker's share of the cores, and a worker's quick exit."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

from apache_beam.options.pipeline_options import PipelineOptions

from changesweep.pipeline import local_workers
from changesweep.pipeline.local_workers import FAST_EXIT_ENV


def test_each_local_worker_gets_its_share_of_the_cores():
  got = local_workers.worker_settings(None, "multi_processing", 2, cores=8)
  assert got == {FAST_EXIT_ENV: "1", "TF_NUM_INTRAOP_THREADS": "4",
                 "TF_NUM_INTEROP_THREADS": "4"}
  # more workers than cores: one thread each, never zero
  assert local_workers.worker_settings(None, "multi_processing", 3, cores=2)[
      "TF_NUM_INTRAOP_THREADS"] == "1"
  # 0 workers is Beam's "one per core"
  assert local_workers.worker_settings("DirectRunner", "multi_processing", 0, cores=4)[
      "TF_NUM_INTRAOP_THREADS"] == "1"


def test_no_settings_where_no_local_worker_process_starts():
  assert local_workers.worker_settings(None, "in_memory", 2, cores=8) == {}
  assert local_workers.worker_settings(None, "multi_threading", 2, cores=8) == {}
  assert local_workers.worker_settings("DataflowRunner", "multi_processing", 2, cores=8) == {}


def test_worker_environment_is_set_for_the_run_only_and_keeps_the_users_choice(monkeypatch):
  for name in (FAST_EXIT_ENV, *local_workers.TF_THREAD_ENVS):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "3")  # the user's own
  options = PipelineOptions(["--direct_num_workers", "2",
                             "--direct_running_mode", "multi_processing"])
  with local_workers.worker_environment(options):
    assert os.environ[FAST_EXIT_ENV] == "1"
    assert os.environ["TF_NUM_INTRAOP_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert os.environ["TF_NUM_INTEROP_THREADS"] == "3"
  assert FAST_EXIT_ENV not in os.environ and "TF_NUM_INTRAOP_THREADS" not in os.environ
  assert os.environ["TF_NUM_INTEROP_THREADS"] == "3"


def _worker(code: str, fast: str = "1") -> subprocess.CompletedProcess:
  """A process that looks like a local subprocess worker and imports the package."""
  env = dict(os.environ, **{FAST_EXIT_ENV: fast, "CONTROL_API_SERVICE_DESCRIPTOR": "url: ''"})
  script = ("import atexit, sys\n"
            "import changesweep.pipeline\n"
            # registered after the package import, so it runs before the quick exit
            "atexit.register(lambda: print('later handler ran', flush=True))\n"
            "print('done', end='')\n" + code)
  return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                        text=True, timeout=120)


def test_a_worker_that_ends_normally_exits_zero_with_its_output_and_later_handlers():
  got = _worker("")
  assert got.returncode == 0, got.stderr
  assert got.stdout.startswith("done")  # unflushed output is not lost
  assert "later handler ran" in got.stdout


def test_a_failing_worker_keeps_its_failing_status_and_traceback():
  got = _worker("raise RuntimeError('harness failed')")
  assert got.returncode == 1
  assert "RuntimeError: harness failed" in got.stderr


def test_the_quick_exit_skips_the_interpreter_teardown_only_when_asked():
  # An object finalised at interpreter teardown shows whether the teardown ran.
  code = ("class Finalised:\n"
          "  def __del__(self):\n"
          "    print('teardown ran', flush=True)\n"
          "keep = Finalised()\n")
  assert "teardown ran" not in _worker(code).stdout
  assert "teardown ran" in _worker(code, fast="0").stdout


def _runner_stream():
  """A data-plane stream made the way Beam's local runner makes one for a worker's input."""
  from apache_beam.runners.portability.fn_api_runner import worker_handlers

  server = worker_handlers.GrpcServer(None, None, None)
  try:
    return server.data_plane_handler.get_conn_by_worker_id("w").output_stream("bundle", "read")
  finally:
    server.close()


def test_beams_timed_stream_drops_what_is_written_during_its_flush():
  """Beam 2.77's defect, kept as a canary: when this fails, Beam has fixed it and
  `untimed_data_plane` can go (the local runner uses the same class, with a 1000 ms timer).

  Deterministic: the timer thread is held inside its flush, after `get()` and before
  `_clear()`, while the writer writes; that write is never delivered."""
  from apache_beam.runners.worker import data_plane

  delivered, in_flush, written = [], threading.Event(), threading.Event()

  def flush_callback(data: bytes) -> None:
    delivered.append(data)
    in_flush.set()
    written.wait(30)

  stream = data_plane.TimeBasedBufferingClosableOutputStream(
      delivered.append, flush_callback=flush_callback, time_flush_threshold_ms=10)
  stream.write(b"early ")
  assert in_flush.wait(30)
  stream.write(b"late")  # the timer thread has taken its copy and will clear the buffer
  written.set()
  stream.close()
  assert b"".join(delivered) == b"early "


def test_a_local_run_sends_worker_inputs_through_streams_without_the_timed_flush():
  from apache_beam.runners.worker import data_plane

  # Beam's own setting: the runner's input streams flush from a timer thread
  assert isinstance(_runner_stream(), data_plane.TimeBasedBufferingClosableOutputStream)
  for mode in ("multi_processing", "multi_threading", "in_memory"):
    options = PipelineOptions(["--direct_num_workers", "2", "--direct_running_mode", mode])
    with local_workers.worker_environment(options):
      stream = _runner_stream()
      # flushed by size or at close only, as Beam's SDK workers' streams are by default
      assert isinstance(stream, data_plane.SizeBasedBufferingClosableOutputStream), mode
      assert not isinstance(stream, data_plane.TimeBasedBufferingClosableOutputStream), mode
  # the setting holds for the run only
  assert isinstance(_runner_stream(), data_plane.TimeBasedBufferingClosableOutputStream)

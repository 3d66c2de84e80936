"""Local worker processes that import their libraries while the runner builds the graph.

With `--direct_running_mode multi_processing`, Beam's local runner starts its SDK worker
processes when the first stage runs, after the runner has imported TensorFlow and built the
graph. Each worker then imports Beam, TensorFlow and tf.Transform before it runs anything:
about 5.6 s on 2 cores (timed in a 1-pair sweep), while the runner waits. `changesweep sweep`
therefore starts those processes first (`start`, before the runner's own imports; one after
the other, so one imports beside the runner at a time), and the runner's workers are started
by a small client (`warm_client.py`) that hands each one's environment to a waiting process,
which then runs Beam's own harness (`sdk_worker_main`) exactly as a fresh worker would.

Nothing else changes: the same harness, data plane and environment (the client sends the
variables Beam gave it; the waiting process takes them as its own). When no waiting process is
left (more workers than were started, or one failed to start), the client starts Beam's own
worker instead. Only `changesweep sweep` on the local runner does this; `pipeline.main.run`
called directly, Dataflow and the in-process runner never see it. `CHANGESWEEP_WARM_WORKERS=0`
turns it off.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from changesweep.pipeline import local_workers

# Set to 0 to start workers the way Beam does.
ENABLE_ENV = "CHANGESWEEP_WARM_WORKERS"
CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "warm_client.py")
# What a sweep's workers import before their first bundle (each one optional).
PRELOAD = ("apache_beam.runners.worker.sdk_worker_main", "tensorflow", "tensorflow_transform",
           "tensorflow_transform.beam", "changesweep.pipeline.sweep",
           "skimage.registration", "skimage.filters")
_POOL: list[WarmPool | None] = [None]


def _local_processes(argv: list[str]) -> tuple[str | None, int]:
  """`(runner, workers)` of a sweep with these arguments: how many worker processes it will
  ask the local runner for (0: none, it runs in process or elsewhere). Beam itself reports
  malformed options; here they mean none."""
  if os.environ.get(ENABLE_ENV, "1") == "0" or "--dry_run" in argv:
    return None, 0
  parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
  parser.add_argument("--runner")
  parser.add_argument("--direct_running_mode")
  parser.add_argument("--direct_num_workers", type=int, default=1)
  try:
    known, _ = parser.parse_known_args(argv)
  except argparse.ArgumentError:
    return None, 0
  if not local_workers.starts_worker_processes(known.runner, known.direct_running_mode):
    return known.runner, 0
  return known.runner, known.direct_num_workers or os.cpu_count() or 1


def wanted_workers(argv: list[str]) -> int:
  """How many worker processes a sweep with these arguments will ask the local runner for
  (0: none, it runs in process or elsewhere)."""
  return _local_processes(argv)[1]


class WarmPool:
  """`n` waiting worker processes, one Unix socket each in a private folder.

  They are started one after the other, each once the one before has imported what it needs:
  the runner's own imports run on one core, so one worker importing beside it uses the other;
  all of them at once (tried: 2 workers and the runner on 2 cores) slowed the runner's imports
  from 6 to 11 s and the first stage started later than with Beam's own workers.
  """

  def __init__(self, n: int, env: dict[str, str]):
    self.folder = tempfile.mkdtemp(prefix="changesweep-workers-")
    self.procs: list[subprocess.Popen] = []
    self._env = env
    self._closed = threading.Event()
    # Every socket listens from now on, so a client that comes before its process waits for it.
    self._listeners = []
    for i in range(n):
      listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
      listener.bind(self._socket(i))
      listener.listen(8)
      self._listeners.append(listener)
    self._starter = threading.Thread(target=self._start_all, name="warm-workers", daemon=True)
    self._starter.start()

  def _socket(self, i: int) -> str:
    return os.path.join(self.folder, f"worker-{i}.sock")

  def _start_all(self) -> None:
    for i, listener in enumerate(self._listeners):
      if not self._closed.is_set():
        proc = subprocess.Popen([sys.executable, "-m", "changesweep.pipeline.warm_workers",
                                 self._socket(i), str(listener.fileno())],
                                env=self._env, pass_fds=(listener.fileno(),))
        self.procs.append(proc)
      listener.close()  # the process holds it now (else a waiting client would never be told)
      ready = self._socket(i) + ".ready"
      while (self.procs and not os.path.exists(ready) and self.procs[-1].poll() is None
             and not self._closed.is_set()):
        time.sleep(0.05)

  def command(self) -> str:
    """The worker command line Beam runs (`sh -c`): the client, without `site` (~20 ms)."""
    return " ".join(shlex.quote(a) for a in (sys.executable, "-S", CLIENT, self.folder))

  def close(self, grace_s: float = 5.0) -> None:
    """Ends the processes: at once those still waiting, after `grace_s` those that ran a
    worker (their harness ends when the runner closes its channels)."""
    self._closed.set()
    self._starter.join()
    deadline = time.monotonic() + grace_s
    for i, proc in enumerate(self.procs):
      if proc.poll() is None and not os.path.exists(self._socket(i)):
        try:
          proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
          pass
      if proc.poll() is None:
        proc.kill()
        proc.wait()
    shutil.rmtree(self.folder, ignore_errors=True)


def start(argv: list[str]) -> WarmPool | None:
  """Starts the waiting workers a `changesweep sweep` with `argv` will use, if any.

  Call before the runner imports TensorFlow: the point is that both import at once. The
  workers get this process's environment and what `local_workers` gives Beam's own workers.
  """
  runner, n = _local_processes(argv)
  if not n or _POOL[0] is not None:
    return _POOL[0]
  settings = local_workers.worker_settings(runner, "multi_processing", n)
  env = {**settings, **os.environ}  # the user's values win
  _POOL[0] = WarmPool(n, env)
  return _POOL[0]


def stop() -> None:
  """Ends the waiting workers, if any were started."""
  pool, _POOL[0] = _POOL[0], None
  if pool is not None:
    pool.close()


def runner_for(options):
  """An FnApiRunner whose subprocess workers come from the waiting ones, when they were
  started for this run's options; else None (the runner the options name)."""
  from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

  pool = _POOL[0]
  if pool is None or not local_workers.starts_worker_processes(
      options.view_as(StandardOptions).runner,
      options.view_as(DirectOptions).direct_running_mode):
    return None
  return _warm_start_runner(pool.command())


def _warm_start_runner(command: str):
  from apache_beam.portability import python_urns
  from apache_beam.runners.portability.fn_api_runner import FnApiRunner

  class WarmStartRunner(FnApiRunner):
    """FnApiRunner that starts its subprocess workers with the pool's client.

    The runner writes its own worker command into the portable pipeline's subprocess
    environment; this one swaps that command and changes nothing else.
    """

    def run_via_runner_api(self, pipeline_proto, options):
      for env in pipeline_proto.components.environments.values():
        if env.urn == python_urns.SUBPROCESS_SDK:
          env.payload = command.encode()
      return super().run_via_runner_api(pipeline_proto, options)

  return WarmStartRunner()


# ---------------------------------------------------------------------------------------------
# The waiting process: `python -m changesweep.pipeline.warm_workers SOCKET`


def _exit_with_parent() -> None:
  parent = os.getppid()

  def watch():
    while os.getppid() == parent:
      time.sleep(1.0)
    os._exit(1)

  threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _read_line(conn: socket.socket) -> bytes:
  data = b""
  while not data.endswith(b"\n"):
    chunk = conn.recv(1 << 16)
    if not chunk:
      raise ConnectionError("client left before sending its environment")
    data += chunk
  return data


def serve(path: str, fd: int) -> None:
  """Imports `PRELOAD`, then runs Beam's harness for the first client of the socket `path`
  (listening on `fd`, from the pool) with that client's environment, and exits."""
  import importlib
  import logging

  _exit_with_parent()
  listener = socket.socket(fileno=fd)
  # TensorFlow gives its logger a stderr handler when it is first asked for it and the root
  # logger has none; Beam's worker has its own handler by then, so TensorFlow's lines go to the
  # runner. Here TensorFlow comes first: a handler that does nothing keeps it from adding one.
  logging.getLogger().addHandler(logging.NullHandler())
  for name in PRELOAD:
    try:
      importlib.import_module(name)
    except Exception:  # a module that does not import here is imported (or fails) in the run
      pass
  with open(path + ".ready", "w"):  # the pool starts the next process
    pass
  conn, _ = listener.accept()
  listener.close()
  os.unlink(path)  # taken: later clients try the next process
  code = 1
  try:
    conn.sendall(b"R")
    env = json.loads(_read_line(conn))
    os.environ.clear()
    os.environ.update(env)
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main([])
    code = 0
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  except BaseException:  # noqa: B036 -- reported, then the status says it failed
    import traceback

    traceback.print_exc()
  finally:
    try:
      conn.sendall(f"{code}\n".encode())
    except OSError:
      pass
    local_workers.exit_now(code)  # no interpreter teardown, as for Beam's own workers


if __name__ == "__main__":
  serve(sys.argv[1], int(sys.argv[2]))

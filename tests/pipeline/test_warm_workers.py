"""Local worker processes started before the graph (pipeline.warm_workers): who gets them, that
a sweep through them gives the rows of one without, and that none is left behind."""
from __future__ import annotations

import os
import socket
import sys

import pytest

from changesweep.pipeline import main as sweep_main
from changesweep.pipeline import warm_client, warm_workers
from changesweep.pipeline.sinks import read_jsonl_rows
from tests.conftest import SAMPLE_ARCHIVE

TWO_WORKERS = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
DROP = ("change_map_uri", "scored_at", "written_at")


@pytest.fixture(autouse=True)
def no_pool_left():
  yield
  warm_workers.stop()


def test_only_a_local_multi_process_sweep_starts_waiting_workers(monkeypatch):
  monkeypatch.delenv(warm_workers.ENABLE_ENV, raising=False)
  assert warm_workers.wanted_workers(["--input", "x"] + TWO_WORKERS) == 2
  assert warm_workers.wanted_workers(["--direct_num_workers=3",
                                      "--direct_running_mode=multi_processing"]) == 3
  assert warm_workers.wanted_workers(["--direct_num_workers", "0", "--direct_running_mode",
                                      "multi_processing"]) == os.cpu_count()
  assert warm_workers.wanted_workers(["--input", "x"]) == 0  # in process
  assert warm_workers.wanted_workers(["--direct_num_workers", "2", "--direct_running_mode",
                                      "multi_threading"]) == 0
  assert warm_workers.wanted_workers(["--runner", "DataflowRunner"] + TWO_WORKERS) == 0
  assert warm_workers.wanted_workers(["--dry_run"] + TWO_WORKERS) == 0  # loads no model
  # malformed: Beam says so when it parses them
  assert warm_workers.wanted_workers(["--direct_num_workers", "two", "--direct_running_mode",
                                      "multi_processing"]) == 0
  monkeypatch.setenv(warm_workers.ENABLE_ENV, "0")
  assert warm_workers.wanted_workers(TWO_WORKERS) == 0


def test_a_worker_tries_its_own_process_first_then_the_others(tmp_path):
  for i in range(3):
    (tmp_path / f"worker-{i}.sock").touch()
  (tmp_path / "worker-0.sock.ready").touch()
  names = lambda worker_id: [os.path.basename(p) for p in  # noqa: E731
                             warm_client.candidates(str(tmp_path), worker_id)]
  assert names("worker_1") == ["worker-1.sock", "worker-2.sock", "worker-0.sock"]
  assert names("worker_5") == ["worker-2.sock", "worker-0.sock", "worker-1.sock"]
  assert names(None) == ["worker-0.sock", "worker-1.sock", "worker-2.sock"]
  assert warm_client.candidates(str(tmp_path / "gone"), "worker_1") == []


def test_a_client_whose_process_is_gone_tries_the_next(tmp_path):
  listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  listener.bind(str(tmp_path / "worker-0.sock"))
  listener.listen(1)
  listener.close()  # bound but nobody listens: a process that died
  assert warm_client.hand_over(str(tmp_path / "worker-0.sock"), b"{}\n") is None


def rows(out, table):
  return sorted(({k: v for k, v in r.items() if k not in DROP}
                 for r in read_jsonl_rows(str(out), table)),
                key=lambda r: (r["pair_id"], r.get("chip_index")))


def sweep(out, *extra):
  return sweep_main.run(["--input", SAMPLE_ARCHIVE, "--output", str(out), "--no_report",
                         "--statistics", "model", "--run_id", "warm", *extra])


def test_a_sweep_through_waiting_workers_gives_the_rows_of_one_in_process(tmp_path):
  pool = warm_workers.start(["--input", SAMPLE_ARCHIVE] + TWO_WORKERS)
  assert pool is not None and warm_workers.start(TWO_WORKERS) is pool  # one pool per process
  warm = sweep(tmp_path / "warm", *TWO_WORKERS)
  warm_workers.stop()
  # both processes ran a worker and ended by themselves (a waiting one is killed: -9)
  assert [p.returncode for p in pool.procs] == [0, 0]
  assert not os.path.exists(pool.folder)
  sweep(tmp_path / "one")
  assert warm["counts"]["pairs"] == 4 and warm["counts"]["chips"] == 16
  for table in ("pairs", "chips"):
    assert rows(tmp_path / "warm", table) == rows(tmp_path / "one", table) != []


def test_more_workers_than_waiting_processes_start_the_rest_as_beam_does(tmp_path):
  warm_workers._POOL[0] = pool = warm_workers.WarmPool(1, dict(os.environ))
  summary = sweep(tmp_path / "out", *TWO_WORKERS)
  warm_workers.stop()
  assert summary["counts"]["pairs"] == 4 and summary["failure"] is None
  assert [p.returncode for p in pool.procs] == [0]


def test_a_sweep_that_never_runs_leaves_no_process_behind():
  import time

  pool = warm_workers.start(TWO_WORKERS)
  deadline = time.monotonic() + 30
  while not pool.procs and time.monotonic() < deadline:
    time.sleep(0.05)
  warm_workers.stop()
  assert [p.returncode for p in pool.procs] == [-9]  # the first was waiting; the second unborn
  assert not os.path.exists(pool.folder)
  assert warm_workers.runner_for(sweep_main.PipelineOptions(TWO_WORKERS)) is None  # stopped


def test_the_client_runs_without_site_packages():
  # Beam runs it as `python -S warm_client.py FOLDER`: standard library only
  import subprocess

  done = subprocess.run([sys.executable, "-S", "-c",
                         f"import runpy; runpy.run_path({warm_client.__file__!r})"],
                        capture_output=True, text=True, timeout=60)
  assert done.returncode == 0, done.stderr


# `changesweep sweep` in a subprocess, saying at the end how its waiting workers ended.
CLI_PROBE = """
import sys
from changesweep.pipeline import warm_workers
close = warm_workers.WarmPool.close

def closed(self, *args, **kwargs):
  close(self, *args, **kwargs)
  print("POOL:" + ",".join(str(p.returncode) for p in self.procs), flush=True)

warm_workers.WarmPool.close = closed
from changesweep.pipeline.cli import main
main(sys.argv[1:])
"""


def test_changesweep_sweep_with_two_worker_processes_runs_them_on_the_waiting_ones(tmp_path):
  import subprocess

  env = {k: v for k, v in os.environ.items() if k != warm_workers.ENABLE_ENV}
  done = subprocess.run([sys.executable, "-c", CLI_PROBE, "sweep", "--input", SAMPLE_ARCHIVE,
                         "--output", str(tmp_path / "out"), "--no_report", *TWO_WORKERS],
                        capture_output=True, text=True, env=env, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "4 pairs scored" in done.stdout
  assert "POOL:0,0" in done.stdout  # each ran a worker and ended by itself

"""The multi-worker loss, reproduced without the sweep: Beam's timed data-plane flush.

Beam 2.77's `TimeBasedBufferingClosableOutputStream` (`runners/worker/data_plane.py`) flushes
from a timer thread as `callback(self.get())` then `self._clear()`, and `write()` does not
take the flush lock: bytes written between the two are dropped, with no error and no log.
Beam's local runner sends every input it hands a worker through such a stream (its data
servicer is built with `worker_handlers.DATA_BUFFER_TIME_LIMIT_MS` = 1000 ms), so an input
the runner takes more than a second to write loses whole chunks of elements.

This runs the smallest pipeline that shows it, on Beam's FnApiRunner with 2 worker processes:
two sources of `--elements` payloads of `--payload` bytes each, a Flatten (the runner
materialises a multi-input Flatten and sends it back to a worker: the step where the old
sweep's chip scores went missing before `JoinChipsToPairs`), and a count. It counts elements
in and out with Beam's default and with `changesweep.pipeline.local_workers.untimed_data_plane`
(the sweep's guard), alternated, `--runs` times each. The defaults, 2 x 10,000 payloads of
50,000 bytes (1 GB through the Flatten), take the runner several timer periods to write, so a
flush lands during the writes in every run; the old sweep's case, the 2,116 chip scores of one
10980^2 pair at 131,072 bytes each (`--elements 2116 --payload 131072`), is a quarter of that,
so a flush lands during its writes less often (the old graph lost chips in 1 of 10 runs,
`results/loss_old_graph_rerun.json`).

    python bench/flush_race.py              # 3 runs each, about 3 minutes
    python bench/flush_race.py --smoke      # one small run each (may lose nothing: too small)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402

# One run in a fresh process: the pipeline, its counts as one JSON line on stdout.
_RUN = r"""
import contextlib, json, sys, time
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from changesweep.pipeline import local_workers

elements, payload, guarded = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
SOURCES = 2


def payloads(_):
  for _ in range(elements):
    yield bytes(payload)


options = PipelineOptions(["--direct_num_workers", "2",
                           "--direct_running_mode", "multi_processing"])
start = time.perf_counter()
with (local_workers.untimed_data_plane() if guarded else contextlib.nullcontext()):
  with beam.Pipeline(options=options) as p:
    sources = [p | f"Seed{i}" >> beam.Create([i]) | f"Payloads{i}" >> beam.FlatMap(payloads)
               for i in range(SOURCES)]
    counted = (sources | "Flatten" >> beam.Flatten() | "One" >> beam.Map(lambda _: 1)
               | "Count" >> beam.CombineGlobally(sum))
    counted | "Print" >> beam.Map(lambda n: print(json.dumps(
        {"sent": SOURCES * elements, "received": n}), flush=True))
print(json.dumps({"wall_s": round(time.perf_counter() - start, 2)}), flush=True)
"""


def run_once(elements: int, payload: int, guarded: bool) -> dict:
  proc = subprocess.run([common.PYTHON, "-c", _RUN, str(elements), str(payload),
                         "1" if guarded else "0"],
                        env=common.ENV, capture_output=True, text=True, timeout=1800)
  if proc.returncode != 0:
    raise RuntimeError(proc.stderr[-3000:])
  got = {}
  for line in proc.stdout.splitlines():
    with contextlib.suppress(ValueError):
      got.update(json.loads(line))
  got["lost"] = got["sent"] - got["received"]
  got["lost_mb"] = round(got["lost"] * payload / 1e6, 1)
  return got


def class_level(chunks: int = 30_000, chunk: int = 10_000) -> dict:
  """The class alone: one thread writes while the timer flushes (1 ms timer, as in Beam's
  own tests of the class)."""
  from apache_beam.runners.worker import data_plane

  delivered = []
  stream = data_plane.TimeBasedBufferingClosableOutputStream(
      delivered.append, flush_callback=delivered.append, time_flush_threshold_ms=1)
  block = b"x" * chunk
  for _ in range(chunks):
    stream.write(block)
  stream.close()
  got = sum(map(len, delivered))
  return {"written_bytes": chunks * chunk, "delivered_bytes": got,
          "lost_fraction": round(1 - got / (chunks * chunk), 4), "flushes": len(delivered)}


def run(smoke: bool = False, runs: int = 3, elements: int = 10_000, payload: int = 50_000) -> dict:
  if smoke:
    runs, elements, payload = 1, 200, 10_000
  rows = {"beam_default": [], "untimed_data_plane": []}
  for r in range(runs):
    order = (False, True) if r % 2 == 0 else (True, False)
    for guarded in order:
      row = run_once(elements, payload, guarded)
      rows["untimed_data_plane" if guarded else "beam_default"].append(row)
      print(("guarded " if guarded else "default ") + json.dumps(row), file=sys.stderr)
  lost = {name: sum(r["lost"] for r in rs) for name, rs in rows.items()}
  return {"benchmark": "flush_race", "smoke": smoke, "workers": 2,
          "mode": "multi_processing", "elements_per_source": elements, "sources": 2,
          "payload_bytes": payload, "runs": rows,
          "runs_losing": {name: sum(r["lost"] > 0 for r in rs) for name, rs in rows.items()},
          "elements_lost": lost,
          # the fields every bench JSON carries: here an element stands for a chip's scores
          "pairs_scored": None, "chips_lost": lost["untimed_data_plane"],
          "class_level": class_level(3_000 if smoke else 30_000)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true")
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--elements", type=int, default=10_000, help="payloads per source")
  parser.add_argument("--payload", type=int, default=50_000, help="bytes per payload")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  result = run(args.smoke, args.runs, args.elements, args.payload)
  result["seconds"] = round(time.perf_counter() - start, 1)
  result["machine"] = common.machine()
  print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
  print("wrote", common.save("flush_race", result, args.smoke))
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Progress of a sweep: `<what> done N/TOTAL, rate` on stderr as it goes, and Beam counters.

`ReportProgress(what, planned)` is applied to a finished-work PCollection (pair rows, chip
scores); `planned` is the PCollection of work items planned, counted once into a side input.
Each element adds 1 to the counter `changesweep.progress/<what>_done` and the plan to
`<what>_planned`, so the same numbers show in a Dataflow job's page and in run.json. Locally a
line is written to stderr at the first element, then at most every `interval_s` seconds, and at
the last one. It costs a counter increment and a clock read per element.

Counts are per worker process: on the in-process runner that is the whole sweep; with several
workers each prints its own share (the Beam counters add them up).
"""
from __future__ import annotations

import sys
import threading
import time
import uuid

import apache_beam as beam

from changesweep.pipeline.metrics import inc_counter

STAGE = "progress"

# Per process and per transform: the DoFn copies of one ReportProgress in a process share a tally.
_LOCK = threading.Lock()
_TALLIES: dict[str, dict] = {}


def progress_line(what: str, done: int, total: int | None, elapsed_s: float) -> str:
  """`changesweep: chips done 8/16 (50%), 3.1/s`; no rate before a second element is done.

  Args:
    what: the work's plural noun.
    done: items done so far.
    total: items planned (None or 0: unknown).
    elapsed_s: seconds since the first item was done.
  """
  line = f"changesweep: {what} done {done}"
  if total:
    line += f"/{total} ({100 * done // total}%)"
  if done > 1 and elapsed_s > 0:
    line += f", {(done - 1) / elapsed_s:.1f}/s"
  return line


def _record_plan(total: int, what: str) -> int:
  inc_counter(STAGE, f"{what}_planned", total)
  print(f"changesweep: planned {total} {what}", file=sys.stderr, flush=True)
  return total


class _Tick(beam.DoFn):
  """Counts elements; prints a progress line when due. Emits nothing."""

  def __init__(self, what: str, interval_s: float):
    self.what = what
    self.interval_s = interval_s
    self.key = f"{what}-{uuid.uuid4().hex}"  # pickled with the DoFn: one tally per transform

  def process(self, element, total):
    inc_counter(STAGE, f"{self.what}_done")
    now = time.monotonic()
    with _LOCK:
      t = _TALLIES.setdefault(self.key, {"done": 0, "start": now, "last": None})
      t["done"] += 1
      due = (t["last"] is None or now - t["last"] >= self.interval_s
             or (total and t["done"] == total))
      if due:
        t["last"] = now
        line = progress_line(self.what, t["done"], total, now - t["start"])
    if due:
      print(line, file=sys.stderr, flush=True)
    return ()


class ReportProgress(beam.PTransform):
  """Counts finished work against the plan; see the module docstring.

  Attributes:
    what: plural noun of the work ("pairs", "chips"), used in counter names and log lines.
    planned: PCollection with one element per planned work item.
    interval_s: least seconds between two progress lines.
  """

  def __init__(self, what: str, planned: beam.PCollection, interval_s: float = 5.0):
    super().__init__()
    if not what.isidentifier():
      raise ValueError(f"what must be a snake_case word, got {what!r}")
    if interval_s < 0:
      raise ValueError(f"interval_s must be >= 0, got {interval_s}")
    self.what, self.planned, self.interval_s = what, planned, interval_s

  def expand(self, done):
    total = (self.planned
             | "CountPlanned" >> beam.combiners.Count.Globally()
             | "RecordPlan" >> beam.Map(_record_plan, self.what))
    return done | "Tick" >> beam.ParDo(_Tick(self.what, self.interval_s),
                                       beam.pvalue.AsSingleton(total))

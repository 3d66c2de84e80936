"""Where do chips go missing with 2 local workers? Counts every element the runner buffers.

Runs one sweep in this process on Beam's FnApiRunner with `--direct_num_workers N
--direct_running_mode multi_threading` (workers are threads here, so the runner's buffers can be
watched), over one synthetic pair, and records for every runner-side buffer (the data that
moves between fused stages):

- elements appended, and elements appended *after* a consumer had already read the buffer
  (those are never processed: `ListBuffer.partition` hands out slices of what is there);
- elements handed to consumers when they read it.

It also reports the sweep's own accounting (chips planned, scored, in the pair row). A buffer
whose appended count exceeds what its consumers read names the step where elements are lost.

    python bench/loss_probe.py --size 10980 --runs 3      # the issue's case (minutes a run)
    python bench/loss_probe.py --smoke                     # tiny, proves the script runs
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402


class BufferWatch:
  """Counts elements into and out of the FnApiRunner's ListBuffer/GroupingBuffer objects."""

  def __init__(self):
    self.lock = threading.Lock()
    self.appended = collections.Counter()
    self.appended_after_read = collections.Counter()
    self.read = collections.Counter()

  @staticmethod
  def name(buf) -> str:
    # Tagged on the object itself: ids are reused once the runner frees a buffer.
    return getattr(buf, "_probe_name", None) or f"unnamed {type(buf).__name__}"

  def report(self) -> list[dict]:
    return [{"buffer": n, "appended": self.appended[n], "read": self.read[n],
             "appended_after_read": self.appended_after_read[n]}
            for n in sorted(set(self.appended) | set(self.read))]


def _count_in(buf, data: bytes) -> int:
  from apache_beam.coders.coder_impl import create_InputStream

  coder = getattr(buf, "_coder_impl", None) or buf._pre_grouped_coder.get_impl()
  stream, n = create_InputStream(data), 0
  while stream.size() > 0:
    coder.decode_from_stream(stream, True)
    n += 1
  return n


def _count_out(buf, data: bytes) -> int:
  from apache_beam.coders.coder_impl import create_InputStream

  if not hasattr(buf, "_post_grouped_coder"):
    return _count_in(buf, data)
  coder = buf._post_grouped_coder.get_impl()  # grouped: one element per key, values inside
  stream, n = create_InputStream(data), 0
  while stream.size() > 0:
    n += len(list(coder.decode_from_stream(stream, True).value[1]))
  return n


_WATCH: list = [None]


def install(watch: BufferWatch) -> None:
  """Makes `watch` the one the runner reports to; the patches go in once per process."""
  first = _WATCH[0] is None
  _WATCH[0] = watch
  if not first:
    return
  from apache_beam.runners.portability.fn_api_runner import execution

  get_buffer = execution.BundleContextManager.get_buffer

  def named_get_buffer(self, buffer_id, transform_id):
    buf = get_buffer(self, buffer_id, transform_id)
    name = buffer_id.decode(errors="replace") if isinstance(buffer_id, bytes) else buffer_id
    if getattr(buf, "_probe_name", None) is None:
      try:
        buf._probe_name = str(name)
      except AttributeError:  # a buffer type without a __dict__: left unnamed
        pass
    return buf

  def on_append(original):
    def append(self, data):
      w = _WATCH[0]
      try:
        n = _count_in(self, data)
      except Exception:  # timers and odd coders: one chunk
        n = 1
      with w.lock:
        w.appended[w.name(self)] += n
        if getattr(self, "_probe_read", False):
          w.appended_after_read[w.name(self)] += n
      return original(self, data)
    return append

  def on_partition(original):
    def partition(self, n):
      parts = original(self, n)
      w = _WATCH[0]
      with w.lock:
        if not getattr(self, "_probe_read", False):
          self._probe_read = True
          total = 0
          for part in parts:
            for chunk in part:
              try:
                total += _count_out(self, chunk)
              except Exception:
                total += 1
          w.read[w.name(self)] += total
      return parts
    return partition

  execution.BundleContextManager.get_buffer = named_get_buffer
  for cls in (execution.ListBuffer, execution.GroupingBuffer):
    cls.append = on_append(cls.append)
    cls.partition = on_partition(cls.partition)


def run_once(size: int, workers: int, model: str, tmp: str) -> dict:
  from changesweep.pipeline import main as sweep_main

  archive = common.write_archive(os.path.join(tmp, "archive"), 1, size)
  watch = BufferWatch()
  install(watch)
  summary = sweep_main.run(["--input", archive, "--output", os.path.join(tmp, "out"),
                            "--model", model, "--run_id", "probe", "--no_maps",
                            "--direct_num_workers", str(workers),
                            "--direct_running_mode", "multi_threading"])
  buffers = watch.report()
  from changesweep.pipeline.sinks import read_jsonl_rows

  dead = read_jsonl_rows(os.path.join(tmp, "out"), "dead_letter")
  return {"size": size, "workers": workers, **common.losses(summary),
          "dead_letters": [f"{d['stage']}: {d['reason'][:300]}" for d in dead[:3]],
          "buffers_losing": [b for b in buffers if b["appended_after_read"]
                             or (b["read"] and b["read"] < b["appended"])],
          "buffers": len(buffers),
          # the per-pair groupings, old (JoinChipsToPairs) and new (CombinePerPair, JoinSummaries)
          "pair_groupings": [b for b in buffers if any(
              k in b["buffer"] for k in ("JoinChipsToPairs", "CombinePerPair", "JoinSummaries"))]}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", type=int, default=10980)
  parser.add_argument("--runs", type=int, default=1)
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args(argv)
  if args.smoke:
    args.size, args.runs = 512, 1
  runs = []
  for i in range(args.runs):
    tmp = common.scratch(f"probe{args.size}-{i}")
    try:
      runs.append(run_once(args.size, args.workers, common.CVA_MODEL, tmp))
    finally:
      common.remove(tmp)
    print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
  result = {"benchmark": "loss_probe", "smoke": args.smoke, "model": "model/shipped/cva-s2",
            "runs": runs, "runs_losing_chips": sum(1 for r in runs if r["chips_lost"]),
            "machine": common.machine()}
  print("wrote", common.save("loss_probe", result, args.smoke))
  return 0


if __name__ == "__main__":
  sys.exit(main())

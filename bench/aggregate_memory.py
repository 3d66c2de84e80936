"""Where a pair's aggregation holds memory: the steps of `AggregatePair` on one scene size.

Builds the chip scores of one pair (as `ScoreChips` emits them) and runs the aggregation steps
of `pipeline.sweep.AggregatePair` one by one under tracemalloc (numpy allocations are traced),
reporting the bytes each step holds at its peak. This names the scene-sized part of a worker's
memory in benchmark 3; it needs no Beam and no TensorFlow.

    python bench/aggregate_memory.py --size 10980
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402


def measure(size: int, chip: int = 256, overlap: int = 16) -> dict:
  from changesweep.pipeline import aggregate
  from changesweep.pipeline.scoring import ChipScore
  from changesweep.transforms import tiling

  grid = tiling.chip_grid(size, size, chip, overlap)
  rng = np.random.default_rng(0)
  out = {"scene_px": size, "chips": len(grid)}
  tracemalloc.start()
  base = tracemalloc.get_traced_memory()[0]
  scores = [ChipScore(c.index, rng.integers(0, 255, (chip, chip), dtype=np.uint8),
                      np.ones((chip, chip), bool)) for c in grid]
  out["chip_scores_mb"] = common.mb(tracemalloc.get_traced_memory()[0] - base)

  class _After:  # the two fields stitch() reads
    height = width = size

  class _Pair:
    after = _After()
    pair_id = "bench"

  steps = {}
  tracemalloc.reset_peak()
  held = tracemalloc.get_traced_memory()[0]
  prob, valid, placed = aggregate.stitch(_Pair(), scores, chip, overlap)
  steps["stitch"] = tracemalloc.get_traced_memory()[1] - held
  for name, fn in (("summarize", lambda: aggregate.summarize(prob, valid, 0.5)),
                   ("change_regions", lambda: aggregate.change_regions(prob, valid, 0.5, None,
                                                                       20, 4)),
                   ("encode_map", lambda: aggregate.encode_map(prob, valid))):
    tracemalloc.reset_peak()
    held = tracemalloc.get_traced_memory()[0]
    fn()
    steps[name] = tracemalloc.get_traced_memory()[1] - held
  tracemalloc.stop()
  out["step_peak_mb"] = {k: common.mb(v) for k, v in steps.items()}
  out["held_while_aggregating_mb"] = common.mb(
      out["chip_scores_mb"] * 2 ** 20 + steps["stitch"] + max(
          steps["summarize"], steps["change_regions"], steps["encode_map"]))
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", type=int, default=10980)
  args = parser.parse_args(argv)
  print(json.dumps(measure(args.size), indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Where a pair's aggregation holds memory: the streaming steps on one scene size.

Runs the per-chip reduction (`pair_summary.chip_partial`, what `aggregate.ReduceChip` does per
chip), the per-pair combine (`merge_partials`) and the pair's finish (`summary_from_histogram`,
`pooled_map`, `regions_from_pooled`) under tracemalloc (numpy allocations are traced), and
reports what each holds at its peak. Chip scores are never held together: each is made, reduced
and dropped, as on a worker. It needs no Beam and no TensorFlow.

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
  from changesweep.pipeline import pair_summary
  from changesweep.transforms import tiling

  grid = tiling.chip_grid(size, size, chip, overlap)
  rng = np.random.default_rng(0)
  out = {"scene_px": size, "chips": len(grid)}
  factor = pair_summary.pool_factor(size, size)
  flags = pair_summary.flag_levels(0.5)
  tracemalloc.start()
  steps = {}
  held = tracemalloc.get_traced_memory()[0]
  acc = pair_summary.empty_partial()
  chip_peak = 0
  for c in grid:
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    prob = rng.integers(0, 255, (c.core_row1 - c.core_row0, c.core_col1 - c.core_col0),
                        dtype=np.uint8)
    part = pair_summary.chip_partial(c, prob, np.ones(prob.shape, bool), factor, flags)
    chip_peak = max(chip_peak, tracemalloc.get_traced_memory()[1] - before)
    acc = pair_summary.merge_partials([acc, part])
    del prob
  steps["chip_partial"] = chip_peak
  steps["partials_held"] = tracemalloc.get_traced_memory()[0] - held
  tracemalloc.reset_peak()
  base = tracemalloc.get_traced_memory()[0]
  pair_summary.summary_from_histogram(acc.hist, size * size, 0.5)
  pooled = pair_summary.pooled_map(acc, size, size, factor)
  pair_summary.regions_from_pooled(pooled, None, 20, 4)
  steps["finish_pair"] = tracemalloc.get_traced_memory()[1] - base
  tracemalloc.stop()
  out["pool_factor"] = factor
  out["step_peak_mb"] = {k: common.mb(v) for k, v in steps.items()}
  out["held_while_aggregating_mb"] = common.mb(steps["partials_held"] + steps["finish_pair"])
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", type=int, default=10980)
  args = parser.parse_args(argv)
  print(json.dumps(measure(args.size), indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())

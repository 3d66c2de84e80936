"""Beam's local running modes side by side: one process, two worker threads, two processes.

The same sweep (the learned model, maps on, no report) of a 1-pair and an N-pair archive of
1024^2 scenes, run `--repeats` times in each mode, the modes in a rotated order per repeat so
all see the same machine:

- `in_memory`: Beam's in-process runner with one worker (the sweep's default);
- `multi_threading`: `--direct_num_workers 2 --direct_running_mode multi_threading`, two worker
  threads in the runner's process (one TensorFlow import, one model load; TensorFlow and
  GDAL release the GIL while they work);
- `multi_processing`: `--direct_num_workers 2 --direct_running_mode multi_processing`, two
  worker processes (started before the runner's imports, `pipeline/warm_workers.py`).

Each mode's figure is its median wall time; every run records `pairs_scored` and
`chips_lost`, and the rows of each mode are compared with `in_memory`'s (equal but for the
floats that the archive statistics feed, summed in the order bundles end, `max_row_diff`).

    python bench/running_modes.py            # full (bench/README figures)
    python bench/running_modes.py --smoke    # one 256^2 pair, one repeat
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402
from bench.warm_workers import row_difference, table_rows  # noqa: E402

MODES = {
    "in_memory": (1, []),
    "multi_threading": (1, ["--direct_num_workers", "2", "--direct_running_mode",
                            "multi_threading"]),
    "multi_processing": (2, []),  # run_sweep's own 2-worker flags
}


def run(smoke: bool = False, pairs: int = 12, size: int = 1024, repeats: int = 3) -> dict:
  model, model_note = common.model_for_throughput()
  if smoke:
    pairs, size, repeats = 1, 256, 1
  tmp = common.scratch("running-modes")
  archives = {"small": 1, "big": pairs} if not smoke else {"small": 1}
  result = {"benchmark": "running_modes", "smoke": smoke,
            "model": os.path.relpath(model, common.ROOT), "model_note": model_note,
            "scene_px": size, "repeats": repeats, "archives": {}}
  names = list(MODES)
  try:
    for name, n in archives.items():
      archive = common.write_archive(os.path.join(tmp, name), n, size)
      runs = {mode: [] for mode in MODES}
      diffs = {mode: [] for mode in MODES if mode != "in_memory"}
      for r in range(repeats):
        outs = {}
        for mode in names[r % len(names):] + names[:r % len(names)]:
          workers, extra = MODES[mode]
          outs[mode] = os.path.join(tmp, f"out-{name}-{mode}-{r}")
          runs[mode].append(common.run_sweep(archive, outs[mode], model, workers=workers,
                                             maps=True, extra=extra))
        for mode in diffs:
          diffs[mode] += [row_difference(table_rows(outs["in_memory"], t),
                                         table_rows(outs[mode], t)) for t in ("pairs", "chips")]
        for out in outs.values():
          common.remove(out)
      result["archives"][name] = {
          "pairs": n,
          "same_rows_as_in_memory": {m: None not in d for m, d in diffs.items()},
          "max_row_diff": {m: max(d) if None not in d else None for m, d in diffs.items()},
          **{mode: {**common.median_run(rs),
                    "pairs_scored_runs": [r["pairs_scored"] for r in rs],
                    "chips_lost_runs": [r["chips_lost"] for r in rs]}
             for mode, rs in runs.items()}}
  finally:
    common.remove(tmp)
  modes = [a[m] for a in result["archives"].values() for m in MODES]
  result["pairs_scored"] = sum(sum(m["pairs_scored_runs"]) for m in modes)
  result["pairs_planned"] = sum(a["pairs"] * repeats * len(MODES)
                                for a in result["archives"].values())
  result["chips_lost"] = sum(sum(m["chips_lost_runs"]) for m in modes)
  return result


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true")
  parser.add_argument("--pairs", type=int, default=12)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  result = run(args.smoke, args.pairs, repeats=args.repeats)
  result["machine"] = common.machine()
  print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
  print("wrote", common.save("running_modes", result, args.smoke))
  return 0


if __name__ == "__main__":
  sys.exit(main())

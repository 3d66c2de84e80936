"""Waiting worker processes (pipeline/warm_workers.py) against Beam's own, paired runs.

The same 2-worker sweep (`--direct_num_workers 2 --direct_running_mode multi_processing`, the
learned model, maps on, no report) of a 1-pair and an N-pair archive of 1024^2 scenes, with
`CHANGESWEEP_WARM_WORKERS=1` (the default) and `=0` (workers started the way Beam does),
alternated `--repeats` times so both see the same machine. The figure is the median of the
paired differences of wall time. Rows are compared as well: equal but for the floats that the
archive statistics feed, which two workers sum in the order their bundles end (a few 1e-6,
`max_row_diff`), the same with Beam's workers in two runs.

    python bench/warm_workers.py            # full (bench/README figures)
    python bench/warm_workers.py --smoke    # one 256^2 pair, one repeat
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402

VARIANTS = (("beam", "0"), ("warm", "1"))
DROP = ("change_map_uri", "scored_at", "written_at")
FLOAT_TOLERANCE = 1e-4


def table_rows(out: str, table: str) -> list[dict]:
  from changesweep.pipeline.sinks import read_jsonl_rows

  return sorted(({k: v for k, v in r.items() if k not in DROP}
                 for r in read_jsonl_rows(out, table)),
                key=lambda r: (r["pair_id"], r.get("chip_index", -1)))


def row_difference(a: list[dict], b: list[dict]) -> float | None:
  """The largest difference of a float field between two tables' rows; None when anything
  else differs (row count, keys, a non-float value, a float beyond FLOAT_TOLERANCE)."""
  if len(a) != len(b):
    return None
  largest = 0.0
  for x, y in zip(a, b):
    if x.keys() != y.keys():
      return None
    for k, v in x.items():
      if v == y[k]:
        continue
      if not (isinstance(v, float) and isinstance(y[k], float)):
        return None
      largest = max(largest, abs(v - y[k]))
  return largest if largest <= FLOAT_TOLERANCE else None


def run(smoke: bool = False, pairs: int = 12, size: int = 1024, repeats: int = 3) -> dict:
  model, model_note = common.model_for_throughput()
  if smoke:
    pairs, size, repeats = 1, 256, 1
  tmp = common.scratch("warm-workers")
  archives = {"small": 1, "big": pairs} if not smoke else {"small": 1}
  result = {"benchmark": "warm_workers", "smoke": smoke,
            "model": os.path.relpath(model, common.ROOT), "model_note": model_note,
            "scene_px": size, "workers": 2, "repeats": repeats, "archives": {}}
  try:
    for name, n in archives.items():
      archive = common.write_archive(os.path.join(tmp, name), n, size)
      runs = {variant: [] for variant, _ in VARIANTS}
      diffs = []
      for r in range(repeats):
        outs = {}
        for variant, flag in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
          outs[variant] = os.path.join(tmp, f"out-{name}-{variant}-{r}")
          runs[variant].append(common.run_sweep(archive, outs[variant], model, workers=2,
                                                maps=True, env={"CHANGESWEEP_WARM_WORKERS": flag}))
        diffs += [row_difference(table_rows(outs["beam"], t), table_rows(outs["warm"], t))
                  for t in ("pairs", "chips")]
        for out in outs.values():
          common.remove(out)
      saved = [b["wall_s"] - w["wall_s"] for b, w in zip(runs["beam"], runs["warm"])]
      result["archives"][name] = {
          "pairs": n, "same_rows": None not in diffs,
          "max_row_diff": max(diffs) if None not in diffs else None,
          "saved_s_runs": [round(x, 2) for x in saved],
          "saved_s_median": round(statistics.median(saved), 2),
          **{variant: common.median_run(rs) for variant, rs in runs.items()}}
  finally:
    common.remove(tmp)
  return result


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true")
  parser.add_argument("--pairs", type=int, default=12)
  parser.add_argument("--size", type=int, default=1024)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  result = run(args.smoke, args.pairs, args.size, args.repeats)
  result["machine"] = common.machine()
  print(json.dumps(result, indent=2))
  print("wrote", common.save("warm_workers", result, args.smoke))
  return 0


if __name__ == "__main__":
  sys.exit(main())

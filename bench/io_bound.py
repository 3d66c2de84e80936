"""Benchmark 2, the I/O-bound path: the CVA model through the sweep against a plain script.

The CVA model costs almost nothing per pixel, so the sweep's time here is reading, normalising
and moving chips. The reference is `bench/plain_cva.py` (rasterio + numpy, one process, two
passes like the sweep's archive statistics). Both run as subprocesses on the same synthetic
archive, a 1-pair one and an N-pair one, so the ratio is given for the whole run and at the
margin (start-up taken out); each of the four runs `--repeats` times, interleaved, at its
median wall time. The pair scores of both are compared as a check that they did
the same work.

    python bench/io_bound.py            # full size (README figures)
    python bench/io_bound.py --smoke    # tiny, proves the script runs
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402

TARGET_RATIO = 2.0


def run_plain(archive: str) -> dict:
  cmd = [common.PYTHON, os.path.join(common.ROOT, "bench", "plain_cva.py"), archive,
         "--model", common.CVA_MODEL]
  start = time.perf_counter()
  out = subprocess.run(cmd, env=common.ENV, check=True, capture_output=True, text=True).stdout
  wall = time.perf_counter() - start
  rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
  return {"wall_s": round(wall, 2), "pairs": len(rows), "rows": rows,
          "command": "python bench/plain_cva.py ARCHIVE --model model/shipped/cva-s2"}


def sweep_scores(output: str) -> dict[str, float]:
  from changesweep.pipeline.sinks import read_jsonl_rows

  return {r["after_uri"]: r["change_score"] for r in read_jsonl_rows(output, "pairs")}


def run(smoke: bool = False, pairs: int = 24, size: int = 1024, keep: bool = False,
        repeats: int = 3) -> dict:
  if smoke:
    pairs, size = 2, 256
  workers = 1 if smoke else 2
  tmp = common.scratch("io")
  results = {}
  try:
    # a smoke run only proves the script works: one archive, no marginal ratio
    names = (("small", 1),) if not smoke else ()
    names += (("big", pairs),)
    archives = {name: common.write_archive(os.path.join(tmp, name), n, size)
                for name, n in names}
    plains, sweeps = {name: [] for name, _ in names}, {name: [] for name, _ in names}
    # both sweeps and both plain runs repeated, interleaved; each at its median wall time
    for r in range(1 if smoke else repeats):
      for name, _ in names:
        plains[name].append(run_plain(archives[name]))
        out = os.path.join(tmp, f"out-{name}-{r}")
        sweeps[name].append({**common.run_sweep(archives[name], out, common.CVA_MODEL,
                                                workers=workers, maps=False, in_process=smoke),
                             "output": out})
    for name, n in names:
      plain = common.median_run(plains[name])
      sweep = common.median_run(sweeps[name])
      scores = sweep_scores(sweep.pop("output"))
      rows = plain.pop("rows")
      diff = max((abs(scores[r["after_uri"]] - r["change_score"]) for r in rows
                  if r["after_uri"] in scores), default=None)
      results[name] = {"pairs": n, "chips": sweep["counts"]["chips"], "plain": plain,
                       "sweep": sweep, "max_abs_change_score_difference": diff,
                       # pairs the plain script scored and the sweep did not (dead letters)
                       "pairs_missing_from_sweep": sorted(r["after_uri"] for r in rows
                                                          if r["after_uri"] not in scores)}
  finally:
    if not keep:
      common.remove(tmp)
  big, small = results["big"], results.get("small")
  whole = big["sweep"]["wall_s"] / big["plain"]["wall_s"]
  d_sweep = big["sweep"]["wall_s"] - (small["sweep"]["wall_s"] if small else 0)
  d_plain = big["plain"]["wall_s"] - (small["plain"]["wall_s"] if small else 0)
  marginal = d_sweep / d_plain if small and d_plain > 0 and d_sweep > 0 else None
  chips = big["chips"] - (small["chips"] if small else 0)
  return {
      "benchmark": "io_bound", "smoke": smoke, "model": "model/shipped/cva-s2", "workers": workers,
      "repeats": 1 if smoke else repeats,
      "archive": {"pairs": pairs, "scene_px": size, "chips": big["chips"],
                  "synthetic": "4-band uint16 GeoTIFF, tiled 256, uncompressed"},
      "runs": results,
      "sweep_marginal_chips_per_s": round(chips / d_sweep, 2) if d_sweep > 0 else None,
      "plain_marginal_chips_per_s": round(chips / d_plain, 2) if d_plain > 0 else None,
      "ratio_whole_run": round(whole, 2),
      "ratio_marginal": round(marginal, 2) if marginal else None,
      "target": f"sweep time within {TARGET_RATIO:g}x of the plain script (whole run)",
      "target_met": whole <= TARGET_RATIO,
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true")
  parser.add_argument("--pairs", type=int, default=24)
  parser.add_argument("--size", type=int, default=1024)
  parser.add_argument("--keep", action="store_true", help="keep the synthetic archives")
  parser.add_argument("--repeats", type=int, default=3, help="runs of each archive (median)")
  args = parser.parse_args(argv)
  result = run(args.smoke, args.pairs, args.size, args.keep, args.repeats)
  result["machine"] = common.machine()
  print(json.dumps(result, indent=2))
  print("wrote", common.save("io_bound", result, args.smoke))
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Benchmark 3, memory bounded by chip size, not scene size.

One synthetic pair of 4-band uint16 scenes (tiled 256, uncompressed) per size: 1024^2,
4096^2 and 10980^2 pixels (a full Sentinel-2 10 m tile; 0.96 GB per capture). Each is swept
with the CVA model on 2 workers (multi_processing) in a subprocess whose process tree is
sampled with psutil every 50 ms: the peak RSS of the largest worker, of the main (runner)
process and of the whole tree. With and without change maps. The scenes are written under
$BENCH_TMP (default /tmp) and deleted after each size.

    python bench/memory.py                  # full size (README figures)
    python bench/memory.py --smoke          # tiny, proves the script runs
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402

SIZES = (1024, 4096, 10980)
TARGET_PEAK_MB = 1500  # the must for the largest worker and for the runner
TARGET_GROWTH = 0.25


def run(smoke: bool = False, sizes=SIZES, maps: str = "both", kill_over_mb: float = 12000,
        repeats_largest: int = 3) -> dict:
  if smoke:
    sizes, maps = (256, 512), "on"
  workers = 1 if smoke else 2
  variants = {"both": (True, False), "on": (True,), "off": (False,)}[maps]
  rows = []
  for size in sizes:
    tmp = common.scratch(f"mem{size}")
    try:
      need = 2 * 4 * 2 * size * size * 1.1
      free = shutil.disk_usage(tmp).free
      if free < need:
        raise RuntimeError(f"{tmp}: {free / 2**30:.1f} GB free, need {need / 2**30:.1f} GB")
      archive = common.write_archive(os.path.join(tmp, "archive"), 1, size)
      repeats = repeats_largest if size == max(sizes) and not smoke else 1
      for with_maps in [v for v in variants for _ in range(repeats)]:
        out = os.path.join(tmp, f"out-{with_maps}")
        res = common.run_sweep(archive, out, common.CVA_MODEL, workers=workers, maps=with_maps,
                               sample_rss=True, in_process=smoke, kill_over_mb=kill_over_mb)
        rows.append({"scene_px": size, "maps": with_maps,
                     "chips": res["counts"]["chips"] if res["counts"] else None,
                     "pairs_scored": res.get("pairs_scored"), "chips_lost": res.get("chips_lost"),
                     "capture_mb": round(4 * 2 * size * size / 2 ** 20, 1), **res["rss"],
                     "wall_s": res["wall_s"], "command": res["command"]})
        common.remove(out)
    finally:
      common.remove(tmp)
  verdicts = {}
  for with_maps in variants:
    sel = [r for r in rows if r["maps"] == with_maps]
    key = "largest_worker_peak_mb" if not smoke else "main_peak_mb"
    largest = [r for r in sel if r["scene_px"] == sel[-1]["scene_px"]]
    lo, hi = sel[0][key], max(r[key] for r in largest)
    growth = hi / lo - 1 if lo else None
    verdicts["maps" if with_maps else "no_maps"] = {
        "measure": key, "smallest_mb": lo, "largest_mb": hi,
        "growth": round(growth, 3) if growth is not None else None,
        "max_peak_mb": max(r[key] for r in sel),
        "max_main_peak_mb": max(r["main_peak_mb"] for r in sel),
        "killed": [r["scene_px"] for r in sel if r.get("killed_over_mb")],
        "runs_at_largest": len(largest),
        "runs_losing_chips_at_largest": sum(1 for r in largest if r["chips_lost"] != 0
                                            or r["pairs_scored"] != 1),
        "target_met": bool(max(r[key] for r in sel) < TARGET_PEAK_MB and growth is not None
                           and max(r["main_peak_mb"] for r in sel) < TARGET_PEAK_MB
                           and growth < TARGET_GROWTH
                           and not any(r.get("killed_over_mb") for r in sel)
                           and all(r["chips_lost"] == 0 for r in sel))}
  return {
      "benchmark": "memory", "smoke": smoke, "model": "model/shipped/cva-s2", "workers": workers,
      "synthetic": "one pair of 4-band uint16 GeoTIFFs per size, tiled 256, uncompressed",
      "rows": rows, "verdicts": verdicts,
      "target": f"worker and runner peak RSS < {TARGET_PEAK_MB} MB, the worker's growing < "
                f"{TARGET_GROWTH:.0%} from the smallest to the largest scene, no chip lost",
      "target_met": all(v["target_met"] for v in verdicts.values()),
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true")
  parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
  parser.add_argument("--maps", choices=("both", "on", "off"), default="both")
  parser.add_argument("--repeats_largest", type=int, default=3,
                      help="runs of each variant at the largest size (chips lost: 0 of N)")
  parser.add_argument("--kill_over_mb", type=float, default=12000,
                      help="kill a sweep whose process tree passes this RSS (shared machines)")
  args = parser.parse_args(argv)
  result = run(args.smoke, tuple(int(s) for s in args.sizes.split(",")), args.maps,
               args.kill_over_mb, args.repeats_largest)
  result["machine"] = common.machine()
  print(json.dumps(result, indent=2))
  print("wrote", common.save("memory", result, args.smoke))
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""PNG plots of the benchmark results in `bench/results/*.json` (written by `run_all.py`).

    python bench/plots.py     # redraws bench/*.png from bench/results/
"""
from __future__ import annotations

import json
import os
import sys


def _load(results_dir: str, name: str) -> dict | None:
  path = os.path.join(results_dir, f"{name}.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    data = json.load(f)
  return None if "error" in data else data


def plot_throughput(overhead: dict | None, io: dict | None, path: str) -> str | None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  if not overhead and not io:
    return None
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  if overhead:
    ax = axes[0]
    labels = ["bare model\n(tight TF loop)", "sweep\n(marginal)", "sweep\n(whole run)"]
    values = [overhead["bare"]["chips_per_s"], overhead["sweep"]["marginal_chips_per_s"] or 0,
              overhead["sweep"]["whole_run_chips_per_s"]]
    bars = ax.bar(labels, values, color=["#777", "#1f77b4", "#9ecae1"])
    ax.axhline(0.8 * values[0], color="red", ls="--", lw=1, label="target: 80% of bare")
    ax.bar_label(bars, fmt="%.1f")
    ax.set_ylabel("chips (256x256 pairs) per second")
    ax.set_title(f"1. Pipeline overhead ({os.path.basename(overhead['model'])}, "
                 f"{overhead['workers']} workers)\nmarginal ratio {overhead['ratio_marginal']}",
                 fontsize=9)
    ax.legend(fontsize=8)
  if io:
    ax = axes[1]
    big = io["runs"]["big"]
    values = [big["plain"]["wall_s"], big["sweep"]["wall_s"]]
    bars = ax.bar(["plain rasterio+numpy\n(1 process)", f"sweep, CVA\n({io['workers']} workers)"],
                  values, color=["#777", "#1f77b4"])
    ax.axhline(2 * values[0], color="red", ls="--", lw=1, label="target: 2x plain")
    ax.bar_label(bars, fmt="%.1f s")
    ax.set_ylabel("wall time, s")
    ax.set_title(f"2. I/O-bound path: {io['archive']['pairs']} pairs of {io['archive']['scene_px']}^2"
                 f" ({io['archive']['chips']} chips)\nratio {io['ratio_whole_run']}x", fontsize=9)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_memory(mem: dict | None, path: str) -> str | None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  if not mem:
    return None
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for maps, style in ((True, "-"), (False, ":")):
    rows = [r for r in mem["rows"] if r["maps"] == maps]
    if not rows:
      continue
    xs = [r["scene_px"] for r in rows]
    suffix = "maps" if maps else "no maps"
    ax.plot(xs, [r["largest_worker_peak_mb"] for r in rows], "o" + style, color="#1f77b4",
            label=f"largest worker ({suffix})")
    ax.plot(xs, [r["main_peak_mb"] for r in rows], "s" + style, color="#ff7f0e",
            label=f"main / runner process ({suffix})")
    ax.plot(xs, [r["tree_peak_mb"] for r in rows], "^" + style, color="#2ca02c",
            label=f"whole process tree ({suffix})")
  ax.axhline(2048, color="red", ls="--", lw=1, label="target: 2 GB per worker")
  ax.set_xscale("log")
  ax.set_xticks([r["scene_px"] for r in mem["rows"]])
  ax.set_xticklabels([f"{r['scene_px']}^2" for r in mem["rows"]])
  ax.set_xlabel("scene size (one pair, 4 bands uint16)")
  ax.set_ylabel("peak RSS, MB")
  ax.set_title("3. Peak memory of a sweep against scene size (CVA, 2 workers)", fontsize=10)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_scaling(sc: dict | None, path: str) -> str | None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  if not sc:
    return None
  counts = [int(k) for k in sc["s_per_pair"]]
  whole = [sc["runs"][str(k)]["whole_run_s_per_pair"] for k in counts]
  slopes = [(int(k.split("-")[1]), v) for k, v in sc["slope_s_per_pair"].items() if v > 0]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  ax.plot([n for n, _ in slopes], [v for _, v in slopes], "o-",
          label="start-up amortised: slope from the next smaller archive")
  ax.plot(counts, whole, "s:", label="whole run: wall_N / N")
  for k in sc.get("unresolved", []):
    ax.annotate(f"{k} pairs: below start-up noise\n(+-{sc['start_up_noise_s'] / 2:.1f} s)",
                (int(k.split("-")[1]), whole[0] / 3), fontsize=7, ha="center")
  if slopes:
    lo = min(v for _, v in slopes)
    ax.fill_between(counts, [lo] * len(counts), [lo * 1.2] * len(counts), color="green",
                    alpha=0.15, label="target band: within 20%")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("pairs in the archive")
  ax.set_ylabel("seconds per pair")
  ax.set_title(f"4. Time per pair (CVA, 2 workers, 256^2 scenes); start-up "
               f"{sc['start_up_s']} s", fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def make_all(results_dir: str, out_dir: str) -> list[str]:
  made = [
      plot_throughput(_load(results_dir, "overhead"), _load(results_dir, "io_bound"),
                      os.path.join(out_dir, "throughput.png")),
      plot_memory(_load(results_dir, "memory"), os.path.join(out_dir, "memory.png")),
      plot_scaling(_load(results_dir, "scaling"), os.path.join(out_dir, "scaling.png")),
  ]
  return [p for p in made if p]


if __name__ == "__main__":
  here = os.path.dirname(os.path.abspath(__file__))
  for p in make_all(os.path.join(here, "results"), here):
    print("wrote", p)
  sys.exit(0)

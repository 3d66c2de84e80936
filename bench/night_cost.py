"""Cost of one night on paper: Europe's daily Sentinel-2 tiles on Dataflow, CPU and GPU workers.

Reads the measured figures (`bench/results/model_cost.json`: FLOPs per chip and bare CPU
chips/s; `bench/results/overhead.json`: the sweep's share of the bare model's speed) and
writes `bench/results/night_cost.json` and the table between the `night-cost` markers of
`bench/README.md`. Every assumption is a named constant below, and is printed with the table.

    python bench/night_cost.py            # rewrite the README table from the JSON files
    python bench/night_cost.py --check    # exit 1 when the README table is stale
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench import common  # noqa: E402

RESULTS = os.path.join(ROOT, "bench", "results")
README = os.path.join(ROOT, "bench", "README.md")
START, END = "<!-- night-cost:start -->", "<!-- night-cost:end -->"

# Assumptions (state them; change them here).
EUROPE_TILES = 1100          # MGRS 100 km tiles covering Europe (EEA39 area), approximate
REVISIT_DAYS = 5             # one Sentinel-2 satellite's revisit at the equator ...
SATELLITES = 2               # ... two in orbit (S2B/S2C); overlap at higher latitudes is ignored
CHIPS_PER_TILE = 2116        # 10980^2 px in 256 px chips with 16 px overlap (tiling.chip_grid)
WORKER_HOURLY = {            # USD per worker-hour, Dataflow list prices as assumed (us-central1)
    "n1-standard-4 (CPU)": 0.28,   # 4 vCPU x 0.056 + 15 GB x 0.0036
    "n1-standard-4 + T4": 0.63,    # + T4 0.35
    "g2-standard-4 + L4": 0.81,    # 4 vCPU + 16 GB + L4 ~0.53
}
GPU_FP32_TFLOPS = {"n1-standard-4 + T4": 8.1, "g2-standard-4 + L4": 30.3}
IO_CAP = 2000.0              # chips/s one 4-vCPU worker can read and decode (assumed)
GPU_UTILISATION = 0.25       # share of peak a small conv net reaches at batch 8-32
CPU_VCPUS = {"n1-standard-4 (CPU)": 4}
STARTER = ("dataflow-ml-starter (GoogleCloudPlatform): mobilenet_v2 on a T4 GPU worker, "
           "50k images for about $0.05")


def load(name: str) -> dict:
  with open(os.path.join(RESULTS, f"{name}.json")) as f:
    return json.load(f)


def estimate(model_cost: dict, overhead: dict) -> dict:
  """Chips per night and the cost per worker type, for each measured model."""
  tiles = EUROPE_TILES * SATELLITES / REVISIT_DAYS
  chips = tiles * CHIPS_PER_TILE
  sweep = overhead.get("sweep", {})
  bare = overhead.get("bare", {}).get("chips_per_s")
  efficiency = (sweep.get("marginal_chips_per_s") / bare) if bare and sweep.get(
      "marginal_chips_per_s") else 1.0
  out = {"assumptions": {"tiles_per_night": tiles, "chips_per_night": chips,
                         "worker_hourly_usd": WORKER_HOURLY, "gpu_fp32_tflops": GPU_FP32_TFLOPS,
                         "gpu_utilisation": GPU_UTILISATION, "io_cap_chips_per_s": IO_CAP,
                         "sweep_over_bare_model": round(efficiency, 3),
                         "measured_on": model_cost.get("machine", "bench/results/model_cost.json")},
         "models": []}
  for m in model_cost["models"]:
    flops = m.get("profiler_flops_per_pair") or 0
    cpu_per_core = max(m["cpu_chips_per_s"].values()) / (m.get("intra_op_threads") or 2)
    rows = []
    for worker, price in WORKER_HOURLY.items():
      if worker in CPU_VCPUS:
        rate = cpu_per_core * CPU_VCPUS[worker] * efficiency
        how = f"measured {cpu_per_core:.1f} chips/s per core x {CPU_VCPUS[worker]} x sweep share"
      else:
        rate = GPU_FP32_TFLOPS[worker] * 1e12 * GPU_UTILISATION / max(flops, 1)
        how = (f"{GPU_FP32_TFLOPS[worker]} TFLOP/s x {GPU_UTILISATION:.0%} / "
               f"{flops / 1e9:.2f} GFLOP per chip ")
      rate = min(rate, IO_CAP)  # past this a worker's reads and decoding bound, not the model
      hours = chips / rate / 3600
      rows.append({"worker": worker, "chips_per_s": round(rate, 1),
                   "worker_hours": round(hours, 1), "usd": round(hours * price, 2),
                   "usd_per_50k_chips": round(50000 / rate / 3600 * price, 3), "how": how})
    out["models"].append({"model": m["model"], "flops_per_chip": flops, "workers": rows})
  return out


def table(est: dict) -> str:
  a = est["assumptions"]
  lines = [f"One night: {a['tiles_per_night']:.0f} tiles ({EUROPE_TILES} tiles of Europe x "
           f"{SATELLITES} satellites / {REVISIT_DAYS}-day revisit), "
           f"{a['chips_per_night']:,.0f} chips of 256 px. Sweep throughput = bare model x "
           f"{a['sweep_over_bare_model']} (measured, `bench/overhead.py`). GPU rates are from "
           f"FLOPs at {GPU_UTILISATION:.0%} of fp32 peak, not measured (no GPU was lent for "
           f"TensorFlow here); no worker is credited more than {IO_CAP:.0f} chips/s of reads. "
           "Prices are assumed list prices; check yours.", "",
           "| model | worker | chips/s per worker | worker-hours a night | USD a night | "
           "USD per 50k chips |", "|---|---|---|---|---|---|"]
  for m in est["models"]:
    for w in m["workers"]:
      lines.append(f"| `{os.path.basename(m['model'])}` | {w['worker']} | {w['chips_per_s']} | "
                   f"{w['worker_hours']} | {w['usd']} | {w['usd_per_50k_chips']} |")
  lines += ["", f"For comparison: {STARTER}."]
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true")
  args = parser.parse_args(argv)
  est = estimate(load("model_cost"), load("overhead"))
  text = table(est)
  with open(README) as f:
    readme = f.read()
  new = common.with_section(readme, START, END, text, "Cost of a night, on paper")
  if args.check:
    return 0 if new == readme else 1
  with open(os.path.join(RESULTS, "night_cost.json"), "w") as f:
    json.dump(est, f, indent=2)
    f.write("\n")
  with open(README, "w") as f:
    f.write(new)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Benchmark 6, start-up: what a 1-pair local sweep costs before and around its one pair.

A fresh `python -m changesweep.pipeline sweep` process over one synthetic 256^2 pair (one
chip), run `--runs` times per model (the median is the figure): the CVA model and the default
(no `--model`: each pair gets the shipped model that fits its bands). The phases come from
the run's own `run.json` (`timings`: options and checks, graph construction, the pipeline,
summary and STAC); what is left of the wall time is the interpreter, the imports (TensorFlow
among them) and the HTML report. `import tensorflow` alone is timed in a process of its own
for scale.

    python bench/startup.py            # full (README figures)
    python bench/startup.py --smoke    # one run, proves the script runs
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402

TARGET_S = 8.0


def time_command(cmd: list[str], env: dict[str, str] | None = None) -> float:
  """Wall seconds of `cmd` run to its end; `env` adds variables to the benchmarks' own."""
  start = time.perf_counter()
  subprocess.run(cmd, cwd=common.ROOT, env={**common.ENV, **(env or {})}, check=True,
                 capture_output=True)
  return time.perf_counter() - start


def sweep_once(archive: str, out: str, model: str | None, report: bool,
               env: dict[str, str] | None = None) -> dict:
  cmd = [common.PYTHON, "-m", "changesweep.pipeline", "sweep", "--input", archive, "--output",
         out, "--run_id", "bench"]
  if model:
    cmd += ["--model", model]
  if not report:
    cmd.append("--no_report")
  wall = time_command(cmd, env)
  with open(os.path.join(out, "run.json")) as f:
    summary = json.load(f)
  timings = summary.get("timings", {})
  return {"wall_s": round(wall, 2), **timings,
          "outside_run_s": round(wall - sum(timings.values()), 2),
          **common.losses(summary)}


def run(smoke: bool = False, runs: int = 3) -> dict:
  runs = 1 if smoke else runs
  tmp = common.scratch("startup")
  rows = []
  try:
    archive = common.write_archive(os.path.join(tmp, "archive"), 1, 256)
    tf_import = [time_command([common.PYTHON, "-c", "import tensorflow"]) for _ in range(runs)]
    variants = ([("cva", common.CVA_MODEL, True)] if smoke else
                [(label, model, report) for label, model in (("cva", common.CVA_MODEL),
                                                             ("default", None))
                 for report in (True, False)])
    for label, model, report in variants:
      samples = []
      for i in range(runs):
        out = os.path.join(tmp, f"out-{label}-{report}-{i}")
        samples.append(sweep_once(archive, out, model, report))
        common.remove(out)
      median = statistics.median(s["wall_s"] for s in samples)
      rows.append({"model": label, "report": report, "median_wall_s": round(median, 2),
                   "runs": samples})
  finally:
    common.remove(tmp)
  headline = next((r for r in rows if r["model"] == "default" and r["report"]), rows[0])
  return {"benchmark": "startup", "smoke": smoke, "pairs": 1, "scene_px": 256,
          "import_tensorflow_s": round(statistics.median(tf_import), 2), "rows": rows,
          "target": f"a 1-pair local sweep (default model, with report) in < {TARGET_S} s",
          "headline_s": headline["median_wall_s"],
          "target_met": headline["median_wall_s"] < TARGET_S}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true")
  parser.add_argument("--runs", type=int, default=3)
  args = parser.parse_args(argv)
  result = run(args.smoke, args.runs)
  result["machine"] = common.machine()
  print(json.dumps(result, indent=2))
  print("wrote", common.save("startup", result, args.smoke))
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Runs the six benchmarks in one go and writes `bench/results/all[.smoke].json` (+ plots).

    python bench/run_all.py             # full size: the README figures (about 15 min, 2 cores)
    python bench/run_all.py --smoke     # tiny sizes, one process, < 60 s: proves they still run
    python bench/run_all.py --only memory,scaling

Each benchmark also runs alone (`python bench/<name>.py [--smoke]`). A benchmark that fails
is recorded with its error in the JSON and makes the exit status 1; nothing is skipped
silently.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402

SECTIONS = ("overhead", "io_bound", "memory", "scaling", "model_cost", "startup")


def run_section(name: str, smoke: bool) -> dict:
  import importlib

  module = importlib.import_module(f"bench.{name}")
  start = time.perf_counter()
  try:
    result = module.run(smoke=smoke)
  except Exception as e:  # recorded, never silently dropped
    result = {"benchmark": name, "error": f"{type(e).__name__}: {e}",
              "traceback": traceback.format_exc()[-4000:], "target_met": False}
  result["bench_seconds"] = round(time.perf_counter() - start, 1)
  return result


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true")
  parser.add_argument("--only", default=",".join(SECTIONS),
                      help=f"comma-separated subset of {','.join(SECTIONS)}")
  parser.add_argument("--no_plots", action="store_true")
  args = parser.parse_args(argv)
  names = [n.strip() for n in args.only.split(",") if n.strip()]
  bad = [n for n in names if n not in SECTIONS]
  if bad:
    parser.error(f"unknown benchmark(s) {bad}; choose from {SECTIONS}")
  results = {"machine": common.machine(), "smoke": args.smoke,
             "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
  for name in names:
    print(f"[run_all] {name} ...", file=sys.stderr, flush=True)
    results[name] = run_section(name, args.smoke)
    common.save(name, results[name], args.smoke)
    print(f"[run_all] {name}: {results[name]['bench_seconds']} s, target_met="
          f"{results[name].get('target_met')}" + (f", ERROR {results[name]['error']}"
                                                  if "error" in results[name] else ""),
          file=sys.stderr, flush=True)
  # Sections not run this time (--only) are taken from their last JSON, marked as such, so
  # all.json always holds the six.
  for name in SECTIONS:
    path = os.path.join(common.RESULTS_DIR, f"{name}{'.smoke' if args.smoke else ''}.json")
    if name not in results and os.path.exists(path):
      with open(path) as f:
        results[name] = {**json.load(f), "from_previous_run": os.path.relpath(path, common.ROOT)}
  results["machine_after"] = {"load_avg_1m": round(os.getloadavg()[0], 2),
                              "other_busy_processes": common.busy_processes()}
  path = common.save("all", results, args.smoke)
  print(f"wrote {path}")
  if not args.smoke and not args.no_plots:
    from bench import plots

    for png in plots.make_all(common.RESULTS_DIR, os.path.join(common.ROOT, "bench")):
      print(f"wrote {png}")
  if not args.smoke:
    from bench import table

    if os.path.abspath(common.RESULTS_DIR) == os.path.abspath(table.RESULTS):
      table.main([])  # the README's figures table, from the results just written
  return 1 if any("error" in results[n] for n in names) else 0


if __name__ == "__main__":
  sys.exit(main())

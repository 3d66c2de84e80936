"""The benchmarks still run: `bench/run_all.py --smoke` (tiny sizes) writes all six sections.

Benchmarks are scripts, not timed tests: this only proves they run end to end and produce
their JSON; the figures are in bench/README.md.
"""
import json
import os
import subprocess
import sys
import time

from tests.conftest import ROOT

SECTIONS = ("overhead", "io_bound", "memory", "scaling", "model_cost", "startup")


def test_run_all_smoke_writes_every_section(tmp_path):
  env = {**os.environ, "BENCH_RESULTS": str(tmp_path / "results"), "BENCH_TMP": str(tmp_path),
         "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run_all.py"), "--smoke"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  elapsed = time.perf_counter() - start
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / "results" / "all.smoke.json") as f:
    results = json.load(f)
  assert results["smoke"] is True
  for name in SECTIONS:
    assert name in results, name
    assert "error" not in results[name], results[name].get("traceback")
    assert results[name]["benchmark"] == name
  assert results["overhead"]["bare"]["chips_per_s"] > 0
  assert results["overhead"]["sweep"]["whole_run_chips_per_s"] > 0
  assert results["io_bound"]["runs"]["big"]["max_abs_change_score_difference"] is not None
  assert all(r["main_peak_mb"] > 0 for r in results["memory"]["rows"])
  assert results["scaling"]["s_per_pair"]
  assert results["model_cost"]["models"][-1]["profiler_flops_per_pair"] > 0
  startup = results["startup"]["rows"][0]["runs"][0]
  assert startup["pairs_scored"] == 1 and startup["pipeline_s"] > 0 and startup["graph_s"] > 0
  print(f"bench smoke: {elapsed:.0f} s")


def test_the_night_cost_table_in_the_bench_readme_is_generated_from_the_results():
  code = subprocess.call([sys.executable, "bench/night_cost.py", "--check"], cwd=ROOT)
  assert code == 0, "bench/README.md is stale: run python bench/night_cost.py"


def test_the_figures_table_in_the_bench_readme_is_generated_from_the_results():
  code = subprocess.call([sys.executable, "bench/table.py", "--check"], cwd=ROOT)
  assert code == 0, "bench/README.md is stale: run python bench/table.py"

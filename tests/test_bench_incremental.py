"""The incremental-night table in bench/README.md is generated from its results JSON."""
import subprocess
import sys

from tests.conftest import ROOT


def test_the_incremental_night_table_in_the_bench_readme_is_generated_from_the_results():
  code = subprocess.call([sys.executable, "bench/incremental_night.py", "--check"], cwd=ROOT)
  assert code == 0, "bench/README.md is stale: run python bench/incremental_night.py"

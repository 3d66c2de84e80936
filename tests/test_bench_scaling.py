"""bench/scaling.py's slopes: wall and CPU time per pair, start-up amortised."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import scaling  # noqa: E402


def _run(n, wall, cpu):
  return {"pairs": n, "walls_s": [wall], "wall_s": wall, "cpus_s": [cpu], "cpu_s": cpu,
          "command": "sweep"}


def test_the_cpu_spread_compares_cpu_slopes_past_ten_pairs():
  # Wall: 10 -> 100 cheaper than 100 -> 1000 (a core idle in the small runs); CPU: constant.
  runs = {1: _run(1, 10.0, 12.0), 10: _run(10, 11.0, 14.7), 100: _run(100, 16.0, 41.7),
          1000: _run(1000, 106.0, 311.7)}
  out = scaling.summarise(runs, (10, 100, 1000))
  assert out["slope_s_per_pair"] == {"1-10": 0.1111, "10-100": 0.0556, "100-1000": 0.1}
  assert out["spread"] == 0.799  # (0.1 - 0.0556) / 0.0556
  assert out["cpu_slope_s_per_pair"] == {"1-10": 0.3, "10-100": 0.3, "100-1000": 0.3}
  assert out["cpu_spread"] == 0.0


def test_runs_without_cpu_figures_give_no_cpu_spread():
  runs = {n: {k: v for k, v in _run(n, 1.0 + n / 10, 1.0).items() if not k.startswith("cpu")}
          for n in (1, 10, 100)}
  out = scaling.summarise(runs, (10, 100))
  assert out["cpu_slope_s_per_pair"] is None and out["cpu_spread"] is None

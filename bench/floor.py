"""The floor under a local sweep's fixed cost: what a process pays before any sweep step.

Each variant is a fresh `python` process, timed from start to exit, `--runs` times in
alternation (the median is the figure):

- `interpreter`: `python -c pass`;
- `import_tensorflow`: `import tensorflow`;
- `imports`: what a scoring sweep's process imports before its first step: TensorFlow,
  Beam and tf.Transform's Beam API;
- `one_step_pipeline`: those imports, then a Beam pipeline on the in-process runner (the local
  default) that scores one 256^2 chip with the default Sentinel-2 model (the ensemble
  `pick_model` gives a 4-band archive) through the sweep's own RunInference handler: the model
  load and a single-step graph, with nothing listed, paired, read or written;
- `sweep` and `sweep_report`: `changesweep sweep` over one 256^2 pair with the default models,
  without and with the report (benchmark 6's headline).

So `one_step_pipeline` is what no sweep on this stack can go below, and `sweep_report` minus
it is what the sweep itself adds. With `--chips` the bare model's rate is also timed (the
ensemble, batch 8), so the whole-run ratio of benchmark 1 can be bounded the same way.

    python bench/floor.py            # 3 runs each, about 2 minutes
    python bench/floor.py --smoke    # one run each
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
from bench.startup import TARGET_S, sweep_once, time_command  # noqa: E402

DEFAULT_MODEL = os.path.join(common.SHIPPED, "changesweep-ensemble-s2-v1")

_IMPORTS = "import tensorflow, apache_beam, tensorflow_transform.beam"

# The default model's metadata (argv[1]) and one chip of its shape, for both scripts below.
_CHIP = r"""
import sys
import numpy as np
from changesweep.model.model_dir import read_model_info
from changesweep.pipeline import anyband

info = read_model_info(sys.argv[1])
k, s = info.max_bands, info.chip_size
rng = np.random.default_rng(0)
chip = anyband.AnyBandChip(rng.normal(0, 1, (s, s, k)).astype(np.float32),
                           rng.normal(0, 1, (s, s, k)).astype(np.float32),
                           np.ones((s, s), np.float32), np.arange(k, dtype=np.float32),
                           np.zeros(k, np.float32), np.ones(k, np.float32),
                           np.zeros(k, np.float32), np.ones(k, np.float32))
"""

# One RunInference step on the in-process runner, scoring that chip with the default model.
_ONE_STEP = _IMPORTS + _CHIP + r"""
import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

with beam.Pipeline() as p:
  _ = (p | beam.Create([("chip", chip)])
       | RunInference(anyband.make_anyband_handler(info.saved_model_dir, 8)))
"""

# The bare model's rate on the default model: batches of 8 chips (argv[2] chips in all), after
# a warm-up batch.
_BARE = _CHIP + r"""
import json, time

n = int(sys.argv[2])
model = anyband.AnyBandModel(info.saved_model_dir)
batch = [chip] * 8
anyband.infer_anyband(model, batch)
start = time.perf_counter()
for _ in range(n // 8):
  anyband.infer_anyband(model, batch)
print(json.dumps({"chips": n // 8 * 8, "seconds": time.perf_counter() - start}))
"""


def run(smoke: bool = False, runs: int = 3, chips: int = 0) -> dict:
  runs = 1 if smoke else runs
  tmp = common.scratch("floor")
  py = common.PYTHON
  commands = {
      "interpreter": [py, "-c", "pass"],
      "import_tensorflow": [py, "-c", "import tensorflow"],
      "imports": [py, "-c", _IMPORTS],
      "one_step_pipeline": [py, "-c", _ONE_STEP, DEFAULT_MODEL],
  }
  walls: dict[str, list[float]] = {name: [] for name in [*commands, "sweep", "sweep_report"]}
  pairs_scored = chips_lost = 0
  try:
    archive = common.write_archive(os.path.join(tmp, "archive"), 1, 256)
    for i in range(runs):
      for name, cmd in commands.items():
        walls[name].append(round(time_command(cmd), 2))
      for report in (False, True):
        out = os.path.join(tmp, f"out-{report}-{i}")
        row = sweep_once(archive, out, None, report)
        if row["pairs_scored"] != 1:
          raise RuntimeError(f"the 1-pair sweep scored {row['pairs_scored']} pairs")
        walls["sweep_report" if report else "sweep"].append(row["wall_s"])
        pairs_scored += row["pairs_scored"]
        chips_lost += row["chips_lost"]
        common.remove(out)
    bare = None
    if chips:
      proc = subprocess.run([py, "-c", _BARE, DEFAULT_MODEL, str(chips)], env=common.ENV,
                            cwd=common.ROOT, capture_output=True, text=True, check=True)
      bare = json.loads(proc.stdout.strip().splitlines()[-1])
      bare["chips_per_s"] = round(bare["chips"] / bare["seconds"], 2)
  finally:
    common.remove(tmp)
  medians = {name: round(statistics.median(w), 2) for name, w in walls.items()}
  floor = medians["one_step_pipeline"]
  return {"benchmark": "floor", "smoke": smoke, "runs": runs,
          "model": os.path.relpath(DEFAULT_MODEL, common.ROOT),
          "walls_s": walls, "median_s": medians,
          "sweep_above_floor_s": round(medians["sweep_report"] - floor, 2),
          "startup_target_s": TARGET_S, "floor_below_target": floor < TARGET_S,
          "bare_model": bare,
          # the fields every bench JSON carries: the sweeps'
          "pairs_scored": pairs_scored, "chips_lost": chips_lost}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true")
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--chips", type=int, default=0,
                      help="also time the bare default model on this many chips")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  result = run(args.smoke, args.runs, args.chips)
  result["seconds"] = round(time.perf_counter() - start, 1)
  result["machine"] = common.machine()
  print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
  print("wrote", common.save("floor", result, args.smoke))
  return 0


if __name__ == "__main__":
  sys.exit(main())

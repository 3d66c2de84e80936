"""A sweep's TensorFlow with and without Keras 3 (`TF_USE_LEGACY_KERAS`), paired runs.

TensorFlow imports Keras 3 eagerly (about 1.6 s, scikit-learn included) unless
`TF_USE_LEGACY_KERAS=1` (tf.Transform's own setting) is set before its import. This times a
fresh 1-pair 256^2 sweep (default models, report included, in process) with `=1` ("legacy")
and with TensorFlow's default `=0` ("keras3"), alternated `--repeats` times, with each run's
phases from its run.json: what skipping Keras 3 saves outside the phases, and what it moves
into them (work Keras 3's import did that a sweep needs anyway). It decided against setting
it (bench/README.md, "Tried and not kept").

    python bench/keras_import.py            # full
    python bench/keras_import.py --smoke    # one run each
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common, startup  # noqa: E402

VARIANTS = (("keras3", {"TF_USE_LEGACY_KERAS": "0"}), ("legacy", {"TF_USE_LEGACY_KERAS": "1"}))


def run(smoke: bool = False, repeats: int = 4) -> dict:
  repeats = 1 if smoke else repeats
  tmp = common.scratch("keras-import")
  runs = {name: [] for name, _ in VARIANTS}
  try:
    archive = common.write_archive(os.path.join(tmp, "a"), 1, 256)
    for r in range(repeats):
      for name, env in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
        out = os.path.join(tmp, f"out-{name}-{r}")
        runs[name].append(startup.sweep_once(archive, out, None, True, env))
        common.remove(out)
  finally:
    common.remove(tmp)
  mean = {name: {k: round(statistics.mean(run[k] for run in rs), 3)
                 for k in ("wall_s", "outside_run_s", "graph_s", "pipeline_s")}
          for name, rs in runs.items()}
  return {"benchmark": "keras_import", "smoke": smoke, "pairs": 1, "scene_px": 256,
          "repeats": repeats, "runs": runs, "mean": mean,
          "saved_s_mean": {k: round(mean["keras3"][k] - mean["legacy"][k], 3)
                           for k in mean["legacy"]}}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true")
  parser.add_argument("--repeats", type=int, default=4)
  args = parser.parse_args(argv)
  result = run(args.smoke, args.repeats)
  result["machine"] = common.machine()
  print(json.dumps(result, indent=2))
  print("wrote", common.save("keras_import", result, args.smoke))
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Benchmark 5, model cost: parameters, FLOPs per 256x256 pair, CPU chips/s (GPU when present).

- Parameters: Keras `count_params()` of the shipped `network.keras` (the learned model), and
  the SavedModel's variables (both models).
- FLOPs: two counts. `tf.profiler` float operations of the model's `normalized` signature
  traced for one 256x256 pair, frozen (variables as constants, functions inlined): every op
  TensorFlow registers a FLOP count for (convolutions, matmuls, elementwise). And the analytic
  count of the convolutions, `2 x model.network.count_macs()` (a MAC is two FLOPs).
- CPU chips/s: the `normalized` signature in a tight loop on random z-scored chips, batch 1
  and batch 8 (the sweep's batch), after one warm-up batch.
- GPU: measured only when TensorFlow sees one.

    python bench/model_cost.py            # full (README figures)
    python bench/model_cost.py --smoke    # short timing loops
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402

CHIP = 256


ANY_BAND_FED = (0.490, 0.560, 0.665, 0.842)  # an any-band model is timed on B02, B03, B04, B08


def _inputs(meta: dict, batch: int, rng):
  """`(kwargs of the normalized signature, bands fed)` for random z-scored chips."""
  import numpy as np
  import tensorflow as tf

  any_band = meta.get("band_mode") == "any"
  slots = meta["max_bands"] if any_band else len(meta["bands"])
  x = rng.normal(size=(batch, CHIP, CHIP, slots)).astype(np.float32)
  y = rng.normal(size=(batch, CHIP, CHIP, slots)).astype(np.float32)
  kwargs = {"before": x, "after": y}
  if any_band:
    codes = np.zeros((batch, slots), np.float32)
    codes[:, :len(ANY_BAND_FED)] = ANY_BAND_FED
    x[..., len(ANY_BAND_FED):] = 0
    y[..., len(ANY_BAND_FED):] = 0
    kwargs["band_code"] = codes
  return {k: tf.constant(v) for k, v in kwargs.items()}, (len(ANY_BAND_FED) if any_band
                                                          else slots)


def profiler_flops(model_dir: str, meta: dict) -> int | None:
  """Float operations of one `normalized` call on a 1 x 256 x 256 pair, per tf.profiler."""
  import tensorflow as tf
  from tensorflow.python.framework.convert_to_constants import (
      convert_variables_to_constants_v2)

  from changesweep.model.format import NORMALIZED_SIGNATURE

  import numpy as np

  loaded = tf.saved_model.load(os.path.join(model_dir, "saved_model"))
  fn = loaded.signatures[NORMALIZED_SIGNATURE]
  inputs, _ = _inputs(meta, 1, np.random.default_rng(0))
  concrete = tf.function(lambda **kw: fn(**kw)).get_concrete_function(
      **{k: tf.TensorSpec(v.shape, v.dtype) for k, v in inputs.items()})
  frozen = convert_variables_to_constants_v2(concrete)
  opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  opts["output"] = "none"
  prof = tf.compat.v1.profiler.profile(graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(),
                                       cmd="op", options=opts)
  return int(prof.total_float_ops) if prof is not None else None


def keras_params(model_dir: str) -> int | None:
  path = os.path.join(model_dir, "network.keras")
  if not os.path.exists(path):
    return None
  import keras

  import changesweep.model.network  # noqa: F401  registers the custom layers

  return int(keras.saving.load_model(path, compile=False).count_params())


def saved_model_variables(model_dir: str) -> int:
  """Values stored in the SavedModel's variables checkpoint (weights, BatchNorm statistics)."""
  import numpy as np
  import tensorflow as tf

  ckpt = os.path.join(model_dir, "saved_model", "variables", "variables")
  return int(sum(np.prod(shape) for name, shape in tf.train.list_variables(ckpt)
                 if not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")))


def chips_per_second(model_dir: str, meta: dict, batch: int, seconds: float,
                     device: str = "/CPU:0") -> float:
  import numpy as np
  import tensorflow as tf

  from changesweep.model.format import NORMALIZED_SIGNATURE

  fn = tf.saved_model.load(os.path.join(model_dir, "saved_model")).signatures[NORMALIZED_SIGNATURE]
  rng = np.random.default_rng(0)
  with tf.device(device):
    inputs, _ = _inputs(meta, batch, rng)
    fn(**inputs)["change_prob"].numpy()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      fn(**inputs)["change_prob"].numpy()
      n += batch
  return round(n / (time.perf_counter() - start), 2)


def cost(model_dir: str, seconds: float) -> dict:
  import tensorflow as tf

  with open(os.path.join(model_dir, "metadata.json")) as f:
    meta = json.load(f)
  import numpy as np

  _, nb = _inputs(meta, 1, np.random.default_rng(0))
  out = {"model": os.path.relpath(model_dir, common.ROOT), "kind": meta["kind"],
         "bands": meta["bands"], "bands_fed": nb, "keras_params": keras_params(model_dir),
         "saved_model_variables": saved_model_variables(model_dir),
         "profiler_flops_per_pair": profiler_flops(model_dir, meta),
         "analytic_conv_flops_per_pair": None,
         "cpu_chips_per_s": {f"batch{b}": chips_per_second(model_dir, meta, b, seconds)
                             for b in (1, 8)},
         "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()}
  if meta["kind"] == "learned" and meta.get("band_mode") != "any" and os.path.exists(
      os.path.join(model_dir, "network.keras")):
    from changesweep.model import network

    out["analytic_conv_flops_per_pair"] = 2 * network.count_macs(num_bands=nb, size=CHIP)
  gpus = tf.config.list_physical_devices("GPU")
  out["gpu"] = ({f"batch{b}": chips_per_second(model_dir, meta, b, seconds, "/GPU:0")
                 for b in (1, 8, 32)} if gpus else "none: no GPU on this machine")
  return out


def run(smoke: bool = False) -> dict:
  seconds = 0.5 if smoke else 10.0
  models = [common.CVA_MODEL]
  learned = common.learned_model()
  if learned:
    models.insert(0, learned)
  return {"benchmark": "model_cost", "smoke": smoke,
          "learned_model_found": bool(learned),
          "models": [cost(m, seconds) for m in models],
          "target": "none (reported figures)", "target_met": None}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args(argv)
  result = run(args.smoke)
  result["machine"] = common.machine()
  print(json.dumps(result, indent=2))
  print("wrote", common.save("model_cost", result, args.smoke))
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""`python -m changesweep.model.ensemble`: the multispectral ensemble, an any-band model directory.

The any-band network and the fixed-band Sentinel-2 specialist (`model/README.md`: run C, the
RGB model fine-tuned on B02/B03/B04/B08 digital numbers with a gamma nuisance) each sit at the
same validation F1 on multispectral captures, but they err in different places: the mean of
their probabilities is clearly better than either on the train cities' validation split
(`metadata.json`, `metrics.validation`). One any-band SavedModel holds both, so the sweep and
`changesweep evaluate` serve it as they serve any any-band model (`serving_default`: raw bands,
band codes and the normalisation statistics in, probabilities out):

* both networks read the same normalised bands (the any-band model's normalisation, i.e. the
  archive statistics of optical bands), the specialist its four bands found by band code in
  each capture's slots (any order, among any other bands);
* a capture that lacks one of the four gets the any-band network alone (also any non-Sentinel-2
  band set whose codes are other wavelengths);
* probability = `weight * p_any + (1 - weight) * p_specialist`; the exported network returns
  its logit (the module applies the sigmoid).

The threshold is chosen on the validation split of the train cities (mean F1 over the
`--sets`, the any-band routine of `train_anyband.validate`); the test cities are not used.

Usage:
  python -m changesweep.model.ensemble --anyband model/shipped/changesweep-anyband-s2-v2 \\
      --specialist /tmp/s2spec_C --s2_root ../shared/data/oscd/train \\
      --out model/shipped/changesweep-ensemble-s2-v1
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from typing import Sequence

import numpy as np

DEFAULT_MODEL_ID = "changesweep-ensemble-s2-v1"
SPECIALIST_DIR = "specialist"  # the specialist's metadata (its training), for provenance
CODE_TOLERANCE = 0.005  # band codes are wavelengths in micrometres (B08 0.842, B8A 0.865)


def build_ensemble(anyband_net, specialist_net, specialist_codes: Sequence[float],
                   weight: float = 0.5):
  """The ensemble as a Keras model `[before, after, band_code] -> logit [N, S, S]`."""
  import keras
  import tensorflow as tf

  codes = tf.constant(np.asarray(specialist_codes, np.float32))

  class EnsembleNetwork(keras.Model):
    """Mean of the any-band and the specialist's probabilities (module doc)."""

    def __init__(self):
      super().__init__(name="changesweep_ensemble")
      self.anyband = anyband_net
      self.specialist = specialist_net
      self.weight = float(weight)

    def call(self, inputs, training=False):
      before, after, band_code = inputs
      p_any = tf.sigmoid(tf.cast(self.anyband([before, after, band_code], training=False),
                                 tf.float32))
      match = tf.abs(band_code[:, :, None] - codes[None, None, :]) < CODE_TOLERANCE  # [N,k,4]
      present = tf.reduce_all(tf.reduce_any(match, axis=1), axis=-1)  # [N]
      slot = tf.argmax(tf.cast(match, tf.int32), axis=1, output_type=tf.int32)  # [N, 4]
      b4 = tf.gather(before, slot, axis=3, batch_dims=1)
      a4 = tf.gather(after, slot, axis=3, batch_dims=1)
      p_fix = tf.sigmoid(tf.cast(self.specialist([b4, a4], training=False), tf.float32))
      if p_fix.shape.rank == 4:
        p_fix = p_fix[..., 0]
      mixed = self.weight * p_any + (1.0 - self.weight) * p_fix
      p = tf.where(present[:, None, None], mixed, p_any)
      p = tf.clip_by_value(p, 1e-6, 1.0 - 1e-6)
      return tf.math.log(p) - tf.math.log1p(-p)

  return EnsembleNetwork()


def load_members(anyband_dir: str, specialist_dir: str):
  """The any-band network (checkpoint + widths) and the specialist's logit network."""
  import keras
  from changesweep.model import network as net
  from changesweep.model import train_anyband
  from changesweep.model.fixed_init import NETWORK_FILE
  from changesweep.model.model_dir import read_model_info

  info = read_model_info(anyband_dir)
  if info.raw.get("band_mode") != "any":
    raise ValueError(f"--anyband {anyband_dir} is not an any-band model")
  anyband_net = net.build_anyband_network(tuple(info.raw["training"]["widths"]))
  anyband_net.load_weights(train_anyband.init_weights_path(anyband_dir))
  spec = read_model_info(specialist_dir)
  if spec.raw.get("band_mode") == "any":
    raise ValueError(f"--specialist {specialist_dir} is an any-band model")
  specialist_net = keras.saving.load_model(os.path.join(specialist_dir, NETWORK_FILE),
                                           compile=False)
  return info, anyband_net, spec, specialist_net


def build(anyband_dir: str, specialist_dir: str, s2_root: str, out: str,
          model_id: str = DEFAULT_MODEL_ID, weight: float = 0.5,
          sets: Sequence[str] = ("s2_4", "s2_13"), val_fraction: float = 0.2,
          command: str | None = None, log=print) -> dict:
  """Builds, validates and exports the ensemble (module doc); returns its metadata."""
  from changesweep.model import anyband
  from changesweep.model import format as model_format
  from changesweep.model import train_anyband
  from changesweep.model.val_compare import fixed_channels

  t0 = time.time()
  info, anyband_net, spec, specialist_net = load_members(anyband_dir, specialist_dir)
  spec_bands = [anyband.CHANNELS[i] for i in fixed_channels(spec.bands)]
  spec_codes = [anyband.channel_code(b) for b in spec_bands]
  model = build_ensemble(anyband_net, specialist_net, spec_codes, weight)
  mode = info.raw.get("normalization", "capture_robust")
  train_parts, val_parts = anyband.load_cities(s2_root, None, val_fraction)
  archive = anyband.archive_stats(train_parts) if mode.startswith("archive") else None
  views = anyband.validation_views(val_parts, sets, mode, archive)
  val = train_anyband.validate(train_anyband._logit_runner(model), views, info.chip_size)
  log(f"validation: mean F1 {val['f1']:.3f} at {val['threshold']:.2f}, per set "
      + ", ".join(f"{k} {v:.3f}" for k, v in val["per_set"].items()))

  metadata = {k: v for k, v in info.raw.items() if k not in ("format", "metrics", "training")}
  metadata.update({
      "model_id": model_id, "version": "1", "threshold": float(val["threshold"]),
      "description": (
          f"Ensemble of the any-band model {info.model_id} and the fixed-band Sentinel-2 "
          f"specialist on {', '.join(spec_bands)} (the RGB model's network fine-tuned on "
          "digital numbers): the mean of their change probabilities where a capture has the "
          f"specialist's bands, the any-band model alone elsewhere. " +
          info.raw["description"].split(": ", 1)[-1].split(". ", 1)[-1]),
      "metrics": {"validation": {"mean_f1": val["f1"], "threshold": val["threshold"],
                                 "f1_per_set": val["per_set"]},
                  "validation_band_sets": {k: list(anyband.VALIDATION_SETS[k]) for k in sets},
                  "validation_split": info.raw["metrics"]["validation_split"]},
      "training": {
          "command": command,
          "ensemble": {"anyband": info.model_id, "specialist": spec.model_id,
                       "specialist_bands": spec_bands, "weight": weight,
                       "anyband_command": info.raw["training"].get("command"),
                       "specialist_command": spec.raw["training"].get("command"),
                       "specialist_training_seconds": spec.raw["training"].get(
                           "train_seconds")},
          "widths": info.raw["training"]["widths"],
          "macs_per_pair": {"anyband": info.raw["training"].get("macs_per_pair"),
                            "specialist": spec.raw["training"].get("macs_per_pair")},
          "parameters": {"anyband": info.raw["training"].get("parameters"),
                         "specialist": spec.raw["training"].get("parameters")},
          "seconds": round(time.time() - t0, 1)},
  })
  tmp_out = out.rstrip("/") + ".export-tmp"
  model_format.export_anyband_model_dir(tmp_out, model, metadata)
  keep = os.path.join(tmp_out, SPECIALIST_DIR)  # its weights are in the SavedModel
  os.makedirs(keep)
  shutil.copy(os.path.join(specialist_dir, "metadata.json"), keep)
  if os.path.exists(out):
    shutil.rmtree(out)
  os.rename(tmp_out, out)
  model_format.read_model_info(out)
  log(f"wrote {out} ({time.time() - t0:.0f} s)")
  return metadata


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--anyband", required=True, help="any-band model directory")
  parser.add_argument("--specialist", required=True, help="fixed-band model directory")
  parser.add_argument("--s2_root", required=True, help="folder of the OSCD train cities")
  parser.add_argument("--out", required=True)
  parser.add_argument("--model_id", default=DEFAULT_MODEL_ID)
  parser.add_argument("--weight", type=float, default=0.5, help="weight of the any-band model")
  parser.add_argument("--sets", default="s2_4,s2_13", help="validation band sets")
  args = parser.parse_args(argv)
  build(args.anyband, args.specialist, args.s2_root, args.out, args.model_id, args.weight,
        [s for s in args.sets.split(",") if s],
        command="python -m changesweep.model.ensemble " + shlex.join(argv))
  return 0


if __name__ == "__main__":
  sys.exit(main())

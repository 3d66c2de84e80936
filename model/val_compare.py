"""Validation F1 of fixed-band and any-band models on one footing: the train cities' split.

Choosing between a fixed-band specialist and the any-band model must not look at the test
cities, and a figure at a threshold shared over four band sets (the any-band model's recorded
validation F1) is not comparable with one at a model's own best threshold. So this predicts
the validation parts of the OSCD train cities (the last `val_fraction` of rows of each city,
every strip, loaded by `anyband.load_cities` exactly as `changesweep train --band_mode any`
loads them) with each model and reports, per band set, the F1 at the model's own best
threshold on that set and at the model's shipped threshold, over the same threshold grid
(`train_anyband.THRESHOLDS`), the same tiling and the same F1 curve
(`train_anyband.validate`).

* Any-band models read the set's channels normalised as in their training
  (`anyband.validation_view`, the metadata's `normalization`, archive statistics over the
  training parts) through their Keras network and `checkpoint.weights.h5`.
* Fixed-band models read their metadata's bands (by name, from the 13 loaded Sentinel-2
  bands) as raw digital numbers through their SavedModel's `serving_default` (their own
  tf.Transform statistics inside, as `changesweep evaluate` scores them).

Usage:
  python -m changesweep.model.val_compare --s2_root ../shared/data/oscd/train \\
      --model model/shipped/changesweep-anyband-s2-v2 --model MODEL_DIR --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

import numpy as np

from changesweep.model import anyband

DEFAULT_SETS = ("s2_4", "s2_13")


def fixed_channels(bands: Sequence[str]) -> list[int]:
  """Positions in `anyband.CHANNELS` of a fixed-band model's bands, by canonical name.

  Raises:
    ValueError: a band is not one of the 13 Sentinel-2 bands.
  """
  from changesweep.transforms.bands import canonical
  out = []
  for b in bands:
    name = canonical(b)
    if name not in anyband.S2_BANDS:
      raise ValueError(f"band {b!r} ({name}) is not a Sentinel-2 band")
    out.append(anyband.CHANNELS.index(name))
  return out


def curve_report(threshold: float, curves: dict[str, np.ndarray]) -> dict:
  """Per set: best threshold and F1 there, and the F1 at the model's `threshold`."""
  from changesweep.model.train_anyband import THRESHOLDS
  out = {}
  at = int(np.argmin(np.abs(THRESHOLDS - threshold)))
  for name, curve in curves.items():
    i = int(np.argmax(curve))
    out[name] = {"best_threshold": float(THRESHOLDS[i]), "f1_at_best": float(curve[i]),
                 "model_threshold": float(THRESHOLDS[at]), "f1_at_model_threshold":
                 float(curve[at])}
  return out


def anyband_curves(model_dir: str, train_parts, val_parts, sets: Sequence[str]) -> dict:
  """F1 curves of an any-band model on the validation views of `sets`."""
  from changesweep.model import network as net
  from changesweep.model import train_anyband
  from changesweep.model.model_dir import read_model_info
  info = read_model_info(model_dir)
  mode = info.raw.get("normalization", "capture_robust")
  archive = anyband.archive_stats(train_parts) if mode.startswith("archive") else None
  model = net.build_anyband_network(tuple(info.raw["training"]["widths"]))
  model.load_weights(train_anyband.init_weights_path(model_dir))
  views = anyband.validation_views(val_parts, sets, mode, archive)
  val = train_anyband.validate(train_anyband._logit_runner(model), views, info.chip_size)
  return {"threshold": info.threshold, "curves": val["curves"], "normalization": mode}


def fixed_curves(model_dir: str, val_parts) -> dict:
  """F1 curve of a fixed-band model over its own bands (raw DNs, serving_default)."""
  import tensorflow as tf
  from changesweep.model import train_anyband
  from changesweep.model.scene_eval import SavedModelScorer
  scorer = SavedModelScorer(model_dir, "serving_default")
  info = scorer.info
  idx = fixed_channels(info.bands)
  parts = [(c.before.raw[..., idx], c.after.raw[..., idx], c.label) for c in val_parts]
  run = lambda b, a, codes: tf.constant(scorer(b, a))  # noqa: E731 (validate's signature)
  name = "fixed:" + ",".join(anyband.CHANNELS[i] for i in idx)
  val = train_anyband.validate(run, {name: (np.zeros(len(idx), np.float32), parts)},
                               info.chip_size)
  return {"threshold": info.threshold, "curves": val["curves"], "normalization": "model"}


def compare(s2_root: str, model_dirs: Sequence[str], sets: Sequence[str] = DEFAULT_SETS,
            val_fraction: float = 0.2, log=print) -> dict:
  """Validation figures of every model (module doc); `{model_dir: {...}}`."""
  from changesweep.model.model_dir import read_model_info
  train_parts, val_parts = anyband.load_cities(s2_root, None, val_fraction)
  out = {}
  for path in model_dirs:
    info = read_model_info(path)
    got = (anyband_curves(path, train_parts, val_parts, sets) if info.band_mode == "any"
           else fixed_curves(path, val_parts))
    report = curve_report(got["threshold"], got["curves"])
    out[path] = {"model_id": info.model_id, "band_mode": info.band_mode,
                 "normalization": got["normalization"], "sets": report}
    for name, r in report.items():
      log(f"{info.model_id} {name}: F1 {r['f1_at_best']:.3f} at its best threshold "
          f"{r['best_threshold']:.2f}, {r['f1_at_model_threshold']:.3f} at the model's "
          f"{r['model_threshold']:.2f}")
  return {"validation_split": f"last {val_fraction:.0%} of rows of each train city, every "
                              "strip", "s2_root": os.path.basename(os.path.normpath(s2_root)),
          "models": out}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--s2_root", required=True, help="folder of the OSCD train cities")
  parser.add_argument("--model", action="append", required=True, help="model directory")
  parser.add_argument("--sets", default=",".join(DEFAULT_SETS),
                      help=f"any-band models' band sets ({', '.join(anyband.VALIDATION_SETS)})")
  parser.add_argument("--val_fraction", type=float, default=0.2)
  parser.add_argument("--json", default=None, help="write the figures here")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  result = compare(args.s2_root, args.model, [s for s in args.sets.split(",") if s],
                   args.val_fraction)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
      f.write("\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())

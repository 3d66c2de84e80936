"""Change vector analysis: the classical baseline, exported as a model directory.

The change magnitude of a pixel is the root-mean-square difference of its z-scored bands.
Its threshold is chosen by Otsu's method on the magnitudes of the calibration pairs (no labels
needed), and the magnitude is mapped to a probability with a logistic curve centred on it, so
the model's own threshold is 0.5 and the sweep treats it like any other model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

from changesweep.model import format as model_format
from changesweep.transforms import bands as band_names
from changesweep.transforms import preprocessing, tiling

# Width of the logistic curve, as a fraction of the Otsu threshold.
_SOFTNESS = 0.35


def otsu_threshold(values: np.ndarray, bins: int = 512) -> float:
  """Otsu's threshold: the cut that maximises the between-class variance of `values`."""
  values = np.asarray(values, np.float64).ravel()
  values = values[np.isfinite(values)]
  if values.size == 0 or values.min() == values.max():
    raise ValueError("Otsu needs at least two distinct finite values")
  hist, edges = np.histogram(values, bins=bins)
  centres = (edges[:-1] + edges[1:]) / 2
  weight0 = np.cumsum(hist)
  weight1 = weight0[-1] - weight0
  sum0 = np.cumsum(hist * centres)
  mean0 = sum0 / np.maximum(weight0, 1)
  mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
  between = weight0 * weight1 * (mean0 - mean1) ** 2
  return float(edges[1:][np.argmax(between[:-1])])


class CVANetwork(tf.Module):
  """`(before, after)` z-scored chips -> change probability, centred on the Otsu threshold."""

  def __init__(self, threshold: float):
    super().__init__(name="cva")
    self.threshold = tf.Variable(threshold, trainable=False, dtype=tf.float32)

  def magnitude(self, before, after):
    return tf.sqrt(tf.reduce_mean(tf.square(after - before), axis=-1))

  def __call__(self, before, after):
    scale = _SOFTNESS * self.threshold
    return tf.sigmoid((self.magnitude(before, after) - self.threshold) / scale)


def read_bands(path: str, wanted: list[str]) -> tuple[np.ndarray, np.ndarray]:
  """Reads a whole raster's wanted bands as `[H, W, C]` float32 and its `[H, W]` validity."""
  import rasterio

  with rasterio.open(path) as src:
    idx = band_names.resolve_bands(wanted, src.descriptions, src.driver)
    data = src.read([i + 1 for i in idx]).astype(np.float32)
    valid = src.read_masks(1) > 0
  valid &= np.isfinite(data).all(axis=0)
  return np.moveaxis(data, 0, -1), valid


def scene_instances(key: str, before: np.ndarray, after: np.ndarray, valid: np.ndarray,
                    chip_size: int):
  """Cuts a scene pair into tf.Transform instances (no overlap: statistics count each pixel once)."""
  h, w = valid.shape
  for chip in tiling.chip_grid(h, w, chip_size, 0):
    win = (slice(chip.row, chip.row + chip.height), slice(chip.col, chip.col + chip.width))
    yield preprocessing.make_instance(
        f"{key}/{chip.index}", tiling.pad_chip(before[win], chip_size),
        tiling.pad_chip(after[win], chip_size),
        tiling.pad_chip(valid[win].astype(np.float32), chip_size))


def fit_and_export(pairs: list[tuple[str, str]], bands: list[str], out_dir: str,
                   chip_size: int = 256, model_id: str = "cva", version: str = "1") -> dict:
  """Computes statistics and the Otsu threshold over `pairs`, and writes a model directory."""
  scenes = []
  for before_path, after_path in pairs:
    before, valid_b = read_bands(before_path, bands)
    after, valid_a = read_bands(after_path, bands)
    if before.shape != after.shape:
      raise ValueError(f"{before_path} and {after_path} are not on the same grid")
    scenes.append((before, after, valid_b & valid_a))
  instances = [inst for i, (b, a, v) in enumerate(scenes)
               for inst in scene_instances(str(i), b, a, v, chip_size)]
  transform_dir = preprocessing.analyze_to_dir(
      instances, len(bands), chip_size, tempfile.mkdtemp(prefix="cva-tft-"))
  mean, std = preprocessing.band_statistics(transform_dir)
  magnitudes = np.concatenate([
      np.sqrt(np.mean(np.square((a - b) / std), axis=-1))[v] for b, a, v in scenes])
  threshold = otsu_threshold(magnitudes)
  info = model_format.export_model_dir(out_dir, CVANetwork(threshold), transform_dir, {
      "model_id": model_id, "version": version, "kind": "cva", "bands": list(bands),
      "chip_size": chip_size, "threshold": 0.5,
      "description": "Change vector analysis: RMS of z-scored band differences, Otsu threshold.",
      "training": {"pairs": [[os.path.basename(os.path.dirname(b)) + "/" + os.path.basename(b),
                              os.path.basename(os.path.dirname(a)) + "/" + os.path.basename(a)]
                             for b, a in pairs],
                   "otsu_magnitude": threshold, "band_mean": mean.tolist(),
                   "band_std": std.tolist()},
      "metrics": {},
  })
  return info.raw


def manifest_pairs(manifest: str, data_root: str | None = None) -> list[tuple[str, str]]:
  """The `(before, after)` rasters of a pair manifest's rows (masks, if any, are not read).

  Raises:
    ValueError: a row lists its bands as several single-band files (CVA reads one raster
      per capture, by band name).
  """
  from changesweep.model import data as pair_data
  records = pair_data.read_manifest(manifest, data_root, require_mask=False)
  multi = [r.pair_id for r in records if len(r.before) != 1 or len(r.after) != 1]
  if multi:
    raise ValueError(f"rows {multi} list several files per capture; export-cva reads one "
                     f"raster per capture")
  return [(r.before[0], r.after[0]) for r in records]


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="changesweep export-cva",
      description="Fit the CVA baseline (band statistics + Otsu threshold) on unlabelled pairs "
                  "and write a model directory the sweep can load.",
      epilog="examples:\n  changesweep export-cva --pair a/2015.tif a/2017.tif "
             "--bands B02,B03,B04,B08 --out model/shipped/cva-s2\n"
             "  changesweep export-cva --pairs model/manifests/oscd_train.csv --data_root "
             "../shared/data --bands red,green,blue --out /tmp/cva --model_id cva-oscd-rgb",
      formatter_class=argparse.RawDescriptionHelpFormatter)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--pair", nargs=2, action="append", metavar=("BEFORE", "AFTER"),
                      help="a pair of co-registered rasters; repeat")
  source.add_argument("--pairs", help="a pair manifest (pair_id,before,after[,mask]; masks "
                                      "are not read)")
  parser.add_argument("--data_root", default=None,
                      help="root of the manifest's relative paths (default: its directory)")
  parser.add_argument("--bands", required=True,
                      help="comma-separated band names (descriptions or aliases) or 1-based indexes")
  parser.add_argument("--out", required=True, help="model directory to write")
  parser.add_argument("--chip_size", type=int, default=256)
  parser.add_argument("--model_id", default="cva")
  args = parser.parse_args(argv)
  pairs = ([tuple(p) for p in args.pair] if args.pair
           else manifest_pairs(args.pairs, args.data_root))
  meta = fit_and_export(pairs, args.bands.split(","), args.out, args.chip_size, args.model_id)
  json.dump({"model_dir": args.out, "otsu_magnitude": meta["training"]["otsu_magnitude"]},
            sys.stdout)
  print()
  return 0

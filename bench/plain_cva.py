"""The plain-script reference of benchmark 2: read + normalise + CVA with rasterio and numpy only.

What one would write without Beam: list `{location}/{date}.tif`, pair consecutive captures,
compute per-band mean and std over the valid pixels of every pair (pass 1), then read each
pair again, z-score it, take the CVA magnitude and the model's logistic curve, and summarise
the pair as the sweep does (valid and changed fraction, mean and max probability, change
score = mean of the top 1% of probabilities). One process, whole-scene reads, no outputs but
one JSON line per pair on stdout.

    python bench/plain_cva.py ARCHIVE [--model model/shipped/cva-s2]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np
import rasterio

BANDS = ("B02", "B03", "B04", "B08")
SOFTNESS = 0.35  # model/cva.py: logistic width as a fraction of the Otsu threshold
TOP_FRACTION = 0.01
PROB_SCALE = 254


def list_pairs(archive: str) -> list[tuple[str, str, str]]:
  pairs = []
  for loc in sorted(os.listdir(archive)):
    files = sorted(f for f in os.listdir(os.path.join(archive, loc)) if f.endswith(".tif"))
    pairs += [(loc, os.path.join(archive, loc, b), os.path.join(archive, loc, a))
              for b, a in zip(files, files[1:])]
  return pairs


def read(path: str) -> tuple[np.ndarray, np.ndarray]:
  """`[C, H, W]` float32 bands B02, B03, B04, B08 and `[H, W]` validity."""
  with rasterio.open(path) as src:
    idx = [src.descriptions.index(b) + 1 for b in BANDS]
    data = src.read(idx, out_dtype="float32")
    valid = (src.read_masks(idx) > 0).all(axis=0)
  return data, valid & np.isfinite(data).all(axis=0)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("archive")
  parser.add_argument("--model", default=os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "model", "shipped", "cva-s2"))
  args = parser.parse_args(argv)
  with open(os.path.join(args.model, "metadata.json")) as f:
    meta = json.load(f)
  otsu, threshold = meta["training"]["otsu_magnitude"], meta["threshold"]
  pairs = list_pairs(args.archive)

  # Pass 1: per-band statistics over the valid pixels of both captures of every pair.
  n, s, ss = 0, np.zeros(len(BANDS)), np.zeros(len(BANDS))
  for _, b_path, a_path in pairs:
    before, vb = read(b_path)
    after, va = read(a_path)
    valid = vb & va
    for x in (before, after):
      px = x[:, valid].astype(np.float64)
      n += px.shape[1]
      s += px.sum(axis=1)
      ss += np.square(px).sum(axis=1)
  mean = s / n
  std = np.sqrt(np.maximum(ss / n - mean ** 2, 0))
  std = np.where(std > 1e-6, std, 1.0).astype(np.float32)[:, None, None]
  mean = mean.astype(np.float32)[:, None, None]

  # Pass 2: normalise, CVA, summarise.
  for loc, b_path, a_path in pairs:
    before, vb = read(b_path)
    after, va = read(a_path)
    valid = vb & va
    magnitude = np.sqrt(np.mean(np.square((after - mean) / std - (before - mean) / std), axis=0))
    prob = 1.0 / (1.0 + np.exp(-(magnitude - otsu) / (SOFTNESS * otsu)))
    p = np.round(prob[valid] * PROB_SCALE) / PROB_SCALE
    k = max(1, int(math.ceil(TOP_FRACTION * p.size)))
    print(json.dumps({
        "location": loc, "before_uri": b_path, "after_uri": a_path,
        "valid_fraction": float(valid.mean()), "changed_fraction": float((p >= threshold).mean()),
        "mean_change_prob": float(p.mean()), "max_change_prob": float(p.max()),
        "change_score": float(np.partition(p, p.size - k)[p.size - k:].mean())}))
  return 0


if __name__ == "__main__":
  sys.exit(main())

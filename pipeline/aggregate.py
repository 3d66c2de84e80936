"""Per-chip change maps -> one row per pair: scores, change regions and a stitched change map."""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from scipy import ndimage

from changesweep.pipeline.elements import Pair
from changesweep.pipeline.elements import PROB_NODATA, PROB_SCALE
from changesweep.pipeline.scoring import ChipScore
from changesweep.transforms import tiling

# Change regions are found on a map of at most this many pixels a side (max-pooled if larger),
# so a 10980^2 scene costs as little as a small one.
_REGION_MAP_SIDE = 2048
# The scene score is the mean probability of the most changed pixels: this fraction of them.
_TOP_FRACTION = 0.01


def stitch(pair: Pair, chips: Iterable[ChipScore], chip_size: int, overlap: int
           ) -> tuple[np.ndarray, np.ndarray, list[tuple[tiling.Chip, ChipScore]]]:
  """Places each chip's core into scene-sized byte maps of probability and validity."""
  h, w = pair.after.height, pair.after.width
  grid = tiling.chip_grid(h, w, chip_size, overlap)
  prob = np.zeros((h, w), np.uint8)
  valid = np.zeros((h, w), bool)
  placed = []
  for score in chips:
    chip = grid[score.chip_index]
    rows, cols = tiling.core_slice(chip)
    target = (slice(chip.core_row0, chip.core_row1), slice(chip.core_col0, chip.core_col1))
    prob[target] = score.prob[rows, cols]
    valid[target] = score.valid[rows, cols]
    placed.append((chip, score))
  if len(placed) != len(grid):
    raise ValueError(f"pair {pair.pair_id}: {len(placed)} of {len(grid)} chips were scored")
  return prob, valid, placed


def summarize(prob: np.ndarray, valid: np.ndarray, threshold: float) -> dict:
  """Scores of one map (a pair or a chip core): fractions, mean/max and the change score."""
  n_valid = int(valid.sum())
  if n_valid == 0:
    return {"valid_fraction": 0.0, "changed_fraction": None, "changed_pixels": 0,
            "mean_change_prob": None, "max_change_prob": None, "change_score": None}
  # One float copy of the valid pixels, scaled and partitioned in place (the mean is taken
  # before): at 10980^2 px, separate copies were ~0.9 GB of a worker. Same values and sums.
  p = prob[valid].astype(np.float32)
  p /= PROB_SCALE
  changed = int((p >= threshold).sum())
  mean, top_value = float(p.mean()), float(p.max())
  k = max(1, int(math.ceil(_TOP_FRACTION * p.size)))
  p.partition(p.size - k)
  return {"valid_fraction": n_valid / valid.size, "changed_fraction": changed / n_valid,
          "changed_pixels": changed, "mean_change_prob": mean,
          "max_change_prob": top_value, "change_score": float(p[p.size - k:].mean())}


def change_regions(prob: np.ndarray, valid: np.ndarray, threshold: float,
                   transform: tuple[float, ...] | None, max_regions: int,
                   min_pixels: int) -> list[dict]:
  """Bounding boxes of connected changed areas, largest first.

  Pixel boxes are half-open `[row0, row1) x [col0, col1)`; map boxes are given when the
  capture is georeferenced.
  """
  changed = valid & (prob >= int(math.ceil(threshold * PROB_SCALE)))
  factor = max(1, math.ceil(max(changed.shape) / _REGION_MAP_SIDE))
  if factor > 1:
    h, w = changed.shape
    pad = ((0, -h % factor), (0, -w % factor))
    changed = np.pad(changed, pad).reshape(
        changed.shape[0] // factor + bool(pad[0][1]), factor, -1, factor).any(axis=(1, 3))
  labels, n = ndimage.label(changed, structure=np.ones((3, 3), bool))
  if n == 0:
    return []
  areas = np.bincount(labels.ravel())[1:]
  boxes = ndimage.find_objects(labels)
  regions = []
  for label in np.argsort(-areas, kind="stable")[:max_regions]:
    if areas[label] * factor * factor < min_pixels:
      break
    rs, cs = boxes[label]
    row0, row1 = rs.start * factor, min(rs.stop * factor, prob.shape[0])
    col0, col1 = cs.start * factor, min(cs.stop * factor, prob.shape[1])
    window = prob[row0:row1, col0:col1][valid[row0:row1, col0:col1]]
    region = {"row0": row0, "col0": col0, "row1": row1, "col1": col1,
              "area_pixels": int(areas[label]) * factor * factor,
              "max_change_prob": float(window.max()) / PROB_SCALE if window.size else None,
              "min_x": None, "min_y": None, "max_x": None, "max_y": None}
    if transform is not None:
      a, b, c, d, e, f = transform
      xs = [a * col + b * row + c for row in (row0, row1) for col in (col0, col1)]
      ys = [d * col + e * row + f for row in (row0, row1) for col in (col0, col1)]
      region.update(min_x=min(xs), min_y=min(ys), max_x=max(xs), max_y=max(ys))
    regions.append(region)
  return regions


def encode_map(prob: np.ndarray, valid: np.ndarray) -> np.ndarray:
  return np.where(valid, np.minimum(prob, PROB_SCALE), PROB_NODATA).astype(np.uint8)


def write_change_map(path: str, pair: Pair, prob: np.ndarray, valid: np.ndarray) -> None:
  """Writes the map as a tiled, compressed GeoTIFF through Beam's FileSystems (local or gs://).

  Band 1 is the change probability x 254 (scale metadata set), 255 is nodata; the grid and CRS
  are the after capture's.
  """
  import rasterio
  from apache_beam.io.filesystems import FileSystems
  from rasterio.io import MemoryFile

  h, w = prob.shape
  profile = dict(driver="GTiff", height=h, width=w, count=1, dtype="uint8", nodata=PROB_NODATA,
                 compress="deflate", tiled=h >= 256 and w >= 256, blockxsize=256,
                 blockysize=256)
  if pair.after.crs:
    profile.update(crs=rasterio.crs.CRS.from_wkt(pair.after.crs),
                   transform=rasterio.Affine(*pair.after.transform))
  with MemoryFile() as mem:
    with mem.open(**profile) as dst:
      dst.write(encode_map(prob, valid)[None])
      dst.scales = (1.0 / PROB_SCALE,)
      dst.set_band_description(1, "change_probability")
      dst.update_tags(pair_id=pair.pair_id, before=pair.before.uri, after=pair.after.uri,
                      before_captured_at=pair.before.captured_at,
                      after_captured_at=pair.after.captured_at)
    data = mem.read()
  with FileSystems.create(path) as f:
    f.write(data)

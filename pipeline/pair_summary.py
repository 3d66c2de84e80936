"""Per-chip partial summaries, combined per pair: scores and regions without holding a pair.

A pair of 10980^2 px has 2,116 chips; holding all their probabilities on one worker costs about
a gigabyte. Instead each chip is reduced where it is scored to

- a histogram of its core's quantised probabilities (the map is stored as bytes anyway), which
  gives the pair's changed pixels, mean, max and top-1% score exactly, and
- a patch of the pair's pooled map (cells of `factor` px a side, at most 2048^2 cells): per cell
  the flagged and valid pixel counts, the probability sum and the maximum, which gives the
  regions (exact up to 2048^2 px, cell-approximate beyond) and their polygons. A patch keeps
  only the cells that can matter: those with a flagged pixel (regions and polygons are made
  of them, and a region's maximum lies in one) and those on its rim (a cell cut by a chip
  border gets the rest of its pixels from the neighbour). A mostly unchanged 10980^2 pair
  thus sends kilobytes per chip through the shuffle instead of the whole pooled map.

`PairSummaryFn` (a Beam `CombineFn`) adds partials up per pair; its pure twins are
`chip_partial`, `merge_partials` and `finish`.
"""
from __future__ import annotations

import math
from typing import Iterable, NamedTuple

import numpy as np

from changesweep.pipeline.elements import PROB_NODATA, PROB_SCALE, PooledMap
from changesweep.transforms import tiling

# Regions are found on a map of at most this many cells a side, so a 10980^2 scene costs as
# little as a small one.
REGION_MAP_SIDE = 2048
# The scene score is the mean probability of the most changed pixels: this fraction of them.
TOP_FRACTION = 0.01
_LEVELS = PROB_SCALE + 1  # 0..254


def pool_factor(height: int, width: int, side: int = REGION_MAP_SIDE) -> int:
  """Cell size in pixels so that the pooled map has at most `side` cells a side."""
  return max(1, math.ceil(max(height, width) / side))


def flag_levels(threshold: float) -> np.ndarray:
  """`[255]` bool: which quantised values count as changed (`p >= threshold`, one rule)."""
  return (np.arange(_LEVELS, dtype=np.float32) / PROB_SCALE) >= threshold


class Patch(NamedTuple):
  """The kept cells of one chip's rectangle of the pooled map (`[r0, r0+h) x [c0, c0+w)`).

  `cells` are flat indexes into the `h x w` rectangle (`shape`), each once; the four value
  arrays are per kept cell.
  """
  row0: int
  col0: int
  shape: tuple[int, int]
  cells: np.ndarray
  flagged: np.ndarray
  valid: np.ndarray
  prob_sum: np.ndarray
  prob_max: np.ndarray


def _kept_cells(flagged: np.ndarray) -> np.ndarray:
  """Flat indexes of the cells a patch must keep: flagged ones and the rim."""
  keep = flagged > 0
  keep[0, :] = keep[-1, :] = True
  keep[:, 0] = keep[:, -1] = True
  return np.flatnonzero(keep).astype(np.int32)


class Partial(NamedTuple):
  """What a pair's chips add up to so far.

  Attributes:
    chips: chip indexes seen (to check that every planned chip arrived, once).
    hist: int64 `[255]` valid pixels per quantised probability.
    patches: pooled-map patches, merged into one map only at the end.
  """
  chips: frozenset
  hist: np.ndarray
  patches: tuple


def empty_partial() -> Partial:
  return Partial(frozenset(), np.zeros(_LEVELS, np.int64), ())


def chip_partial(chip: tiling.Chip, prob: np.ndarray, valid: np.ndarray, factor: int,
                 flags: np.ndarray) -> Partial:
  """Reduces one chip's core (`prob` uint8 0..254, `valid` bool, both the core's shape)."""
  hist = np.bincount(prob[valid], minlength=_LEVELS)[:_LEVELS].astype(np.int64)
  r0, c0 = chip.core_row0, chip.core_col0
  # The cells this core touches; cells cut by a core border get the rest from the neighbour.
  cr0, cc0 = r0 // factor, c0 // factor
  cr1, cc1 = -(-chip.core_row1 // factor), -(-chip.core_col1 // factor)
  top, left = r0 - cr0 * factor, c0 - cc0 * factor
  shape = ((cr1 - cr0) * factor, (cc1 - cc0) * factor)
  h, w = prob.shape
  full_valid = np.zeros(shape, bool)
  full_valid[top:top + h, left:left + w] = valid
  full_prob = np.zeros(shape, np.uint8)
  full_prob[top:top + h, left:left + w] = np.where(valid, prob, 0)
  cells = (cr1 - cr0, factor, cc1 - cc0, factor)
  pv = full_prob.reshape(cells)
  vv = full_valid.reshape(cells)
  flagged = (flags[pv] & vv).sum(axis=(1, 3), dtype=np.uint32)
  kept = _kept_cells(flagged)

  def at_kept(values: np.ndarray) -> np.ndarray:
    return values.ravel()[kept]

  patch = Patch(
      cr0, cc0, flagged.shape, kept, flagged=at_kept(flagged),
      valid=at_kept(vv.sum(axis=(1, 3), dtype=np.uint32)),
      prob_sum=at_kept((pv.astype(np.float64) / PROB_SCALE * vv).sum(axis=(1, 3))),
      prob_max=at_kept(np.where(vv, pv, 0).max(axis=(1, 3)).astype(np.uint8)))
  return Partial(frozenset([chip.index]), hist, (patch,))


def merge_partials(partials: Iterable[Partial]) -> Partial:
  chips, hist, patches = set(), np.zeros(_LEVELS, np.int64), []
  for p in partials:
    overlap = chips & p.chips
    if overlap:
      raise ValueError(f"chip(s) {sorted(overlap)[:5]} arrived twice")
    chips |= p.chips
    hist += p.hist
    patches.extend(p.patches)
  return Partial(frozenset(chips), hist, tuple(patches))


def pooled_map(partial: Partial, height: int, width: int, factor: int) -> PooledMap:
  """Assembles the pair's pooled map from its patches (cells cut by chip borders add up)."""
  ch, cw = -(-height // factor), -(-width // factor)
  flagged = np.zeros((ch, cw), np.uint32)
  valid = np.zeros((ch, cw), np.uint32)
  prob_sum = np.zeros((ch, cw), np.float64)
  prob_max = np.zeros((ch, cw), np.uint8)
  for p in partial.patches:
    rows = p.row0 + p.cells // p.shape[1]  # each cell once per patch: plain fancy indexing
    cols = p.col0 + p.cells % p.shape[1]
    flagged[rows, cols] += p.flagged
    valid[rows, cols] += p.valid
    prob_sum[rows, cols] += p.prob_sum
    prob_max[rows, cols] = np.maximum(prob_max[rows, cols], p.prob_max)
  return PooledMap(factor, height, width, flagged, valid, prob_sum, prob_max)


def summary_from_histogram(hist: np.ndarray, total_pixels: int, threshold: float) -> dict:
  """The scores `aggregate.summarize` gives for a map, from its histogram alone (exact)."""
  n_valid = int(hist.sum())
  if n_valid == 0:
    return {"valid_fraction": 0.0, "changed_fraction": None, "changed_pixels": 0,
            "mean_change_prob": None, "max_change_prob": None, "change_score": None}
  values = np.arange(_LEVELS, dtype=np.float32) / PROB_SCALE
  changed = int(hist[flag_levels(threshold)].sum())
  mean = float((hist * values.astype(np.float64)).sum() / n_valid)
  top = int(np.flatnonzero(hist)[-1])
  k = max(1, int(math.ceil(TOP_FRACTION * n_valid)))
  # The k largest values: whole bins from the top, then part of the bin where k runs out.
  from_top = np.cumsum(hist[::-1])
  take = np.minimum(hist[::-1], np.maximum(0, k - (from_top - hist[::-1])))
  top_mean = float((take * values[::-1].astype(np.float64)).sum() / k)
  return {"valid_fraction": n_valid / total_pixels, "changed_fraction": changed / n_valid,
          "changed_pixels": changed, "mean_change_prob": mean,
          "max_change_prob": float(values[top]), "change_score": top_mean}


def regions_from_pooled(pooled: PooledMap, transform: tuple[float, ...] | None,
                        max_regions: int, min_pixels: int) -> list[dict]:
  """Bounding boxes of connected changed cells (8-connected), largest first.

  Pixel boxes are half-open `[row0, row1) x [col0, col1)`; map boxes are given when the
  capture is georeferenced. Areas count cells x factor^2 (exact at factor 1).
  """
  from scipy import ndimage

  f = pooled.factor
  labels, n = ndimage.label(pooled.flagged > 0, structure=np.ones((3, 3), bool))
  if n == 0:
    return []
  areas = np.bincount(labels.ravel())[1:]
  boxes = ndimage.find_objects(labels)
  regions = []
  for label in np.argsort(-areas, kind="stable")[:max_regions]:
    if areas[label] * f * f < min_pixels:
      break
    rs, cs = boxes[label]
    row0, row1 = rs.start * f, min(rs.stop * f, pooled.height)
    col0, col1 = cs.start * f, min(cs.stop * f, pooled.width)
    box_valid = pooled.valid[rs, cs] > 0
    box_max = pooled.prob_max[rs, cs][box_valid]
    region = {"row0": row0, "col0": col0, "row1": row1, "col1": col1,
              "area_pixels": int(areas[label]) * f * f,
              "max_change_prob": float(box_max.max()) / PROB_SCALE if box_max.size else None,
              "min_x": None, "min_y": None, "max_x": None, "max_y": None}
    if transform is not None:
      a, b, c, d, e, f_ = transform
      xs = [a * col + b * row + c for row in (row0, row1) for col in (col0, col1)]
      ys = [d * col + e * row + f_ for row in (row0, row1) for col in (col0, col1)]
      region.update(min_x=min(xs), min_y=min(ys), max_x=max(xs), max_y=max(ys))
    regions.append(region)
  return regions


def encode_tile(prob: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """A chip core as stored in the change map: p x 254, 255 where invalid."""
  return np.where(valid, np.minimum(prob, PROB_SCALE), PROB_NODATA).astype(np.uint8)


try:  # the CombineFn needs Beam; the pure functions above do not
  import apache_beam as beam

  class PairSummaryFn(beam.CombineFn):
    """Adds up `Partial`s per pair; the output is the merged `Partial` (patches unassembled)."""

    def create_accumulator(self):
      return empty_partial()

    def add_input(self, acc, partial):
      return merge_partials([acc, partial])

    def merge_accumulators(self, accs):
      return merge_partials(accs)

    def extract_output(self, acc):
      return acc
except ImportError:  # pragma: no cover - Beam is a dependency
  pass

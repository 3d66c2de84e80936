"""Misregistration: the residual shift between two captures on one grid, measured and judged.

Phase correlation with upsampling on a decimated common band; `decide_shift` turns the shift into
the pair row's fields and says whether `--coregister` corrects it or flags the pair.
"""
from __future__ import annotations

import math

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from changesweep.pipeline.grids import (DEFAULT_MAX_SHIFT_PX, DEFAULT_MIN_SHIFT_PX,
                                        NO_WARP, REFLECTANCE_RESAMPLING, SHIFT_SAMPLE_SIDE,
                                        PairGrid, ShiftRecord)
from changesweep.pipeline.warping import open_on_grid, read_on_grid


def estimate_shift(before_img: np.ndarray, after_img: np.ndarray, valid: np.ndarray | None = None,
                   upsample: int = 10) -> tuple[float, float] | None:
  """The displacement (dx, dy) of the after image's content against the before image, in pixels.

  A feature at column c, row r of `before_img` is at (c + dx, r + dy) in `after_img`. Phase
  correlation with `upsample` subpixel refinement, on zero-mean, unit-variance images whose
  invalid pixels are set to 0 and tapered with a Hann window (so the image edges and masked
  areas do not correlate as a spurious zero shift).

  Args:
    before_img, after_img: [h, w] images on one grid (one band, or a mean of bands).
    valid: [h, w] bool, pixels valid in both; None means all.
    upsample: subpixel precision is 1/upsample pixel.

  Returns:
    (dx, dy), or None when fewer than 64 pixels are valid or the images are flat.
  """
  from skimage.filters import window as taper
  from skimage.registration import phase_cross_correlation

  b = np.asarray(before_img, np.float64)
  a = np.asarray(after_img, np.float64)
  ok = np.isfinite(b) & np.isfinite(a)
  if valid is not None:
    ok &= valid
  if ok.sum() < 64 or min(b.shape) < 8:
    return None
  hann = taper("hann", b.shape)
  planes = []
  for img in (b, a):
    v = img[ok]
    std = v.std()
    if std == 0:
      return None
    planes.append(np.where(ok, (img - v.mean()) / std, 0.0) * hann)
  shift, _, _ = phase_cross_correlation(planes[0], planes[1], upsample_factor=upsample,
                                        normalization=None)
  dy, dx = -float(shift[0]), -float(shift[1])
  return dx + 0.0, dy + 0.0  # no -0.0 in rows


def decide_shift(shift: tuple[float, float] | None, coregister: bool,
                 max_shift: float = DEFAULT_MAX_SHIFT_PX,
                 min_shift: float = DEFAULT_MIN_SHIFT_PX) -> ShiftRecord:
  """What to do with a measured shift: correct it, leave it, or flag it.

  Args:
    shift: (dx, dy) from `estimate_shift`/`measure_shift`, or None when not measured.
    coregister: `--coregister`: correct shifts of `min_shift`..`max_shift` pixels.
    max_shift: past this |shift| the pair is flagged (whatever `coregister`) and not corrected.
    min_shift: below this |shift| the pair is read as it is (resampling would cost more).
  """
  if shift is None:
    return ShiftRecord(None, False, False)
  size = math.hypot(*shift)
  flagged = size > max_shift
  return ShiftRecord((float(shift[0]), float(shift[1])),
                     coregister and min_shift <= size <= max_shift, flagged)


def pair_row_fields(pair_grid: PairGrid, shift: ShiftRecord | None = None) -> dict:
  """All the grid and shift fields of a pair row (shift fields None/False when not measured)."""
  return {**pair_grid.row_fields(), **(shift or ShiftRecord(None, False, False)).row_fields()}


def shift_sample_window(pair_grid: PairGrid, side: int = SHIFT_SAMPLE_SIDE) -> Window:
  """The central window of the target grid (at most `side` a side) the shift is measured on."""
  g = pair_grid.target
  h, w = min(side, g.height), min(side, g.width)
  return Window((g.width - w) // 2, (g.height - h) // 2, w, h)


def measure_shift(before: tuple[tuple[str, ...], int], after: tuple[tuple[str, ...], int],
                  pair_grid: PairGrid, side: int = SHIFT_SAMPLE_SIDE, decimate: int = 1,
                  upsample: int = 10) -> tuple[float, float] | None:
  """Reads one common band of both captures on the target grid and estimates their shift.

  Args:
    before, after: (uris, band) of each capture: the capture's files and a 0-based band
      (over its band list, as in `Pair.before_bands`), e.g. the model's first band.
    pair_grid: the plan; the after capture is read without any coregistration offset.
    side: side of the central target-grid window read (full resolution unless `decimate`).
    decimate: read that window at 1/decimate resolution (the shift is scaled back).
    upsample: subpixel precision, 1/upsample of a read pixel.

  Returns:
    (dx, dy) in target-grid pixels, or None when not measurable.
  """
  from changesweep.pipeline.rasters import open_raster

  window = shift_sample_window(pair_grid, side)
  shape = (max(8, int(window.height) // decimate), max(8, int(window.width) // decimate))
  plain = pair_grid._replace(after_offset_px=(0.0, 0.0))
  images, valid = [], None
  for which, (uris, band) in (("before", before), ("after", after)):
    uri, index = (uris[band], 1) if len(uris) > 1 else (uris[0], band + 1)
    with open_raster(uri) as src, open_on_grid(src, plain.read_grid(which),
                                               pair_grid.resampling if pair_grid.resampling
                                               != NO_WARP else REFLECTANCE_RESAMPLING) as view:
      img = view.read(index, window=window, out_shape=shape, out_dtype="float32",
                      resampling=Resampling.average)
      ok = view.read_masks(index, window=window, out_shape=shape,
                           resampling=Resampling.nearest) > 0
      if src.nodata is not None:
        ok &= img != src.nodata
    images.append(img)
    valid = ok if valid is None else valid & ok
  shift = estimate_shift(images[0], images[1], valid, upsample)
  if shift is None:
    return None
  scale_x, scale_y = window.width / shape[1], window.height / shape[0]
  return shift[0] * scale_x, shift[1] * scale_y

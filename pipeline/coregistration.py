"""Misregistration: the residual shift between two captures on one grid, measured and judged.

Georeferenced grids still disagree by a pixel or two, and a shift that size makes false changes
along every edge. `MeasureMisregistration`, a sweep step between pairing and chip planning,
reads one common band of both captures in a central window of the pair's grid, measures their
shift by phase correlation with upsampling (`estimate_shift`), and `decide_shift` says what to
do: with `--coregister`, shifts of DEFAULT_MIN_SHIFT_PX..DEFAULT_MAX_SHIFT_PX pixels are
corrected (the after capture's read grid is moved); past the bound the pair is flagged, never
corrected. A pair whose shift cannot be measured is scored as it is, never lost.
"""
from __future__ import annotations

import functools
import logging
import math

import apache_beam as beam
import numpy as np
from rasterio.windows import Window

from changesweep.pipeline.chips import read_options
from changesweep.pipeline.elements import Pair
from changesweep.pipeline.grids import (DEFAULT_MAX_SHIFT_PX, DEFAULT_MIN_SHIFT_PX, NO_WARP,
                                        REFLECTANCE_RESAMPLING, SHIFT_SAMPLE_SIDE,
                                        SHIFT_UPSAMPLE, PairGrid, ShiftRecord, grid_of)
from changesweep.pipeline.metrics import inc_counter, timer_msec
from changesweep.pipeline.rasters import WindowReader

STAGE = "coregistration"
NOT_MEASURED = ShiftRecord(None, False, False)


@functools.lru_cache(maxsize=8)
def _hann(shape: tuple[int, int]) -> np.ndarray:
  """skimage's radial Hann taper, made once per window shape (it costs ~90 ms at 512^2, more
  than the phase correlation; nearly every pair measures the same window)."""
  from skimage.filters import window as taper
  hann = taper("hann", shape)
  hann.flags.writeable = False
  return hann


# Integer-valued images spanning at most this many levels are ranked by counting.
_COUNTING_LEVELS = 1 << 22


def _mean_ranks(v: np.ndarray) -> np.ndarray:
  """0-based ranks of `v`, ties sharing their mean rank.

  Digital numbers (integers in floats) are ranked by counting, in linear time; other values
  by sorting. Both give the same ranks.
  """
  lo, hi = float(v.min()), float(v.max())
  if hi - lo < _COUNTING_LEVELS and np.array_equal(v, np.floor(v)):
    index = (v - lo).astype(np.int64)
    counts = np.bincount(index)
  else:
    _, index, counts = np.unique(v, return_inverse=True, return_counts=True)
  return (np.cumsum(counts) - (counts + 1) / 2)[index]


def estimate_shift(before_img: np.ndarray, after_img: np.ndarray, valid: np.ndarray | None = None,
                   upsample: int = SHIFT_UPSAMPLE) -> tuple[float, float] | None:
  """The displacement (dx, dy) of the after image's content against the before image, in pixels.

  A feature at column c, row r of `before_img` is at (c + dx, r + dy) in `after_img`. Phase
  correlation (whitened cross-power spectrum) with `upsample` subpixel refinement, on each
  image's ranks (its valid pixels mapped to their quantile, -0.5..0.5), invalid pixels set to
  0 and tapered with a Hann window (so the image edges and masked areas do not correlate as a
  spurious zero shift). Ranks keep a bright real change from outweighing the rest of the scene:
  on z-scored intensities a new 20 x 20 px roof in a 64 px scene was matched with an old bright
  field, 2.7 px off; on ranks it is not (tests/pipeline/test_coregistration_sweep.py), and on
  the OSCD test cities both agree within 0.5 px.

  Args:
    before_img, after_img: [h, w] images on one grid (one band, or a mean of bands).
    valid: [h, w] bool, pixels valid in both; None means all.
    upsample: subpixel precision is 1/upsample pixel.

  Returns:
    (dx, dy), or None when fewer than 64 pixels are valid or the images are flat.
  """
  from skimage.registration import phase_cross_correlation

  b = np.asarray(before_img, np.float64)
  a = np.asarray(after_img, np.float64)
  ok = np.isfinite(b) & np.isfinite(a)
  if valid is not None:
    ok &= valid
  if ok.sum() < 64 or min(b.shape) < 8:
    return None
  hann = _hann(b.shape)
  planes = []
  for img in (b, a):
    v = img[ok]
    if v.std() == 0:
      return None
    ranks = _mean_ranks(v)
    plane = np.zeros(img.shape)
    plane[ok] = ranks / (v.size - 1) - 0.5
    planes.append(plane * hann)
  shift, _, _ = phase_cross_correlation(planes[0], planes[1], upsample_factor=upsample,
                                        normalization="phase")
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


def pair_row_fields(pair: Pair) -> dict:
  """The grid and shift fields of a pair's row (shift fields None/False when not measured)."""
  grid = pair.grid
  return {"overlap_fraction": grid.overlap_fraction if grid is not None else 1.0,
          "resampling": grid.resampling if grid is not None else NO_WARP,
          "grid_crs": pair.crs or None, **(pair.shift or NOT_MEASURED).row_fields()}


def measuring_grid(pair: Pair) -> PairGrid:
  """The pair's grid without any coregistration offset (its own grid when it has none)."""
  if pair.grid is None:
    return PairGrid(grid_of(pair.before), False, False, 1.0, NO_WARP)
  return pair.grid._replace(after_offset_px=(0.0, 0.0))


def shift_sample_window(pair_grid: PairGrid, side: int = SHIFT_SAMPLE_SIDE) -> Window:
  """The central window of the target grid (at most `side` a side) the shift is measured on."""
  g = pair_grid.target
  h, w = min(side, g.height), min(side, g.width)
  return Window((g.width - w) // 2, (g.height - h) // 2, w, h)


def measure_shift(reader: WindowReader, pair: Pair, mask_values: tuple[int, ...] = (),
                  slot: int = 0, side: int = SHIFT_SAMPLE_SIDE,
                  upsample: int = SHIFT_UPSAMPLE) -> tuple[float, float] | None:
  """Reads one common band of both captures on the pair's grid and estimates their shift.

  Args:
    reader: an open `WindowReader` (files and warped views stay open between pairs).
    pair: the pair; read on its grid without any coregistration offset.
    mask_values: `--mask_values`: the captures' mask bands and files mask pixels as in chips.
    slot: the model band (0-based, in model order) both captures are read at.
    side: side of the central target-grid window read.
    upsample: subpixel precision is 1/upsample pixel.

  Returns:
    (dx, dy) in target-grid pixels, or None when not measurable.

  Raises:
    RasterError, PixelReadError: a capture could not be read.
  """
  probe = pair._replace(grid=measuring_grid(pair))
  window = shift_sample_window(probe.grid, side)
  images, valid = [], None
  for which, scene, bands in (("before", pair.before, pair.before_bands),
                              ("after", pair.after, pair.after_bands)):
    data, ok = reader.read(scene.uris, (bands[slot],), window, scene.nodata, scene.mask_uri,
                           scene.mask_band, mask_values, **read_options(probe, which))
    images.append(data[..., 0])
    valid = ok if valid is None else valid & ok
  return estimate_shift(images[0], images[1], valid, upsample)


def coregister_pair(pair: Pair, shift: tuple[float, float] | None, coregister: bool,
                    resampling: str = REFLECTANCE_RESAMPLING,
                    max_shift: float = DEFAULT_MAX_SHIFT_PX,
                    min_shift: float = DEFAULT_MIN_SHIFT_PX) -> Pair:
  """The pair with its `ShiftRecord`, and its after capture read shifted back if corrected.

  Pure twin of `MeasureShiftFn` once the shift is measured. A pair without georeference is
  never corrected (a WarpedVRT needs a CRS); its shift is still reported and flagged.
  """
  record = decide_shift(shift, coregister, max_shift, min_shift)
  if record.coregistered and not measuring_grid(pair).target.crs_wkt:
    record = record._replace(coregistered=False)
  if not record.coregistered:
    return pair._replace(shift=record)
  return pair._replace(shift=record,
                       grid=measuring_grid(pair).coregistered(record.shift_px, resampling))


class MeasureShiftFn(beam.DoFn):
  """`Pair` -> the same pair with its measured shift (and, with `coregister`, corrected).

  A pair whose shift cannot be measured (a read error, too few valid pixels, a flat scene) is
  passed on unmeasured: the chips stage reports a file that does not read.
  """

  def __init__(self, coregister: bool, resampling: str = REFLECTANCE_RESAMPLING,
               mask_values: tuple[int, ...] = (), max_shift: float = DEFAULT_MAX_SHIFT_PX,
               min_shift: float = DEFAULT_MIN_SHIFT_PX):
    self.coregister = coregister
    self.resampling = resampling
    self.mask_values = tuple(mask_values)
    self.max_shift, self.min_shift = max_shift, min_shift

  def setup(self):
    self.reader = WindowReader(max_open=4)

  def process(self, pair: Pair):
    shift = None
    try:
      with timer_msec(STAGE, "measure_msec"):
        shift = measure_shift(self.reader, pair, self.mask_values)
    except Exception as e:  # this pair's measurement, never the pair or the sweep
      self.reader.close()
      logging.warning("shift of pair %s not measured: %s: %s", pair.pair_id, type(e).__name__,
                      (str(e).splitlines() or [""])[0][:200])
    out = coregister_pair(pair, shift, self.coregister, self.resampling, self.max_shift,
                          self.min_shift)
    inc_counter(STAGE, "pairs_measured" if shift is not None else "pairs_not_measured")
    if out.shift.coregistered:
      inc_counter(STAGE, "pairs_coregistered")
    if out.shift.shift_flagged:
      inc_counter(STAGE, "pairs_flagged")
    yield out

  def teardown(self):
    self.reader.close()


class MeasureMisregistration(beam.PTransform):
  """Pairs -> pairs with `shift` set (`MeasureShiftFn`); one element out per element in.

  Args:
    coregister: `--coregister`: correct shifts of `min_shift`..`max_shift` pixels.
    resampling: `--resampling` of the corrected after capture.
    mask_values: `--mask_values`.
    max_shift, min_shift: the bounds (`decide_shift`).
  """

  def __init__(self, coregister: bool = False, resampling: str = REFLECTANCE_RESAMPLING,
               mask_values: tuple[int, ...] = (), max_shift: float = DEFAULT_MAX_SHIFT_PX,
               min_shift: float = DEFAULT_MIN_SHIFT_PX):
    super().__init__()
    if not 0 <= min_shift <= max_shift:
      raise ValueError(f"shift bounds must satisfy 0 <= min_shift <= max_shift, got "
                       f"{min_shift}, {max_shift}")
    self.fn = MeasureShiftFn(coregister, resampling, mask_values, max_shift, min_shift)

  def expand(self, pairs):
    return (pairs
            | "ReshufflePairs" >> beam.Reshuffle()
            | "MeasureShift" >> beam.ParDo(self.fn))

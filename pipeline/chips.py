"""Read each pair in fixed-size chips with rasterio windows: memory follows the chip, not the scene."""
from __future__ import annotations

import functools
import time

import apache_beam as beam
import numpy as np
import rasterio
from rasterio.windows import Window

from changesweep.pipeline.elements import ChipFailure, ChipKey, Pair
from changesweep.pipeline.metrics import inc_counter, timer_msec
from changesweep.pipeline.rasters import WindowReader
from changesweep.transforms import preprocessing, tiling

STAGE = "chips"
_RETRIES = 3


def chip_key(pair: Pair, index: int) -> ChipKey:
  a = pair.after
  return ChipKey(pair.pair_id, index, pair.height, pair.width, a.location, a.captured_at[:10])


def plan_chips(pair: Pair, chip_size: int, overlap: int) -> list[tuple[Pair, tiling.Chip]]:
  """The chips of a pair (pure)."""
  return [(pair, c) for c in tiling.chip_grid(pair.height, pair.width, chip_size,
                                              overlap)]


@functools.lru_cache(maxsize=256)
def _chip_count(height: int, width: int, chip_size: int, overlap: int) -> int:
  return len(tiling.chip_grid(height, width, chip_size, overlap))


def in_statistics_sample(task: tuple[Pair, tiling.Chip], chip_size: int, overlap: int,
                         per_pair: int) -> bool:
  """Whether a chip is one of the `per_pair` chips, evenly spread over the pair's grid, that
  tf.Transform's statistics are computed from (pure; `per_pair` 0 means every chip).

  A sample is what keeps the default path at one read per chip up to a bounded extra: a
  10980^2 Sentinel-2 pair has 2,116 chips, and a few of them give its band means and spreads
  within a fraction of a per cent of the full pass.
  """
  pair, chip = task
  if per_pair <= 0:
    return True
  n = _chip_count(pair.height, pair.width, chip_size, overlap)
  if n <= per_pair:
    return True
  stride = n / per_pair
  return any(chip.index == int(k * stride + stride / 2) for k in range(per_pair))


def read_options(pair: Pair, which: str) -> dict:
  """How to read one capture of a pair: on the pair's common grid when it has one, else on the
  capture's own (for band files of different resolutions: the finest, bilinear)."""
  grid = pair.read_grid(which)
  if grid is not None:
    return {"grid": grid, "resampling": pair.grid.resampling}
  scene = pair.before if which == "before" else pair.after
  if len(scene.uris) > 1:  # per-band files: each coarser one read through a WarpedVRT
    from changesweep.pipeline.grids import REFLECTANCE_RESAMPLING, grid_of

    return {"grid": grid_of(scene), "resampling": REFLECTANCE_RESAMPLING}
  return {}


def window_bytes(pair: Pair, chip: tiling.Chip) -> int:
  """Bytes of raster data a chip reads from storage (both captures, uncompressed)."""
  def itemsize(dtype: str) -> int:
    return np.dtype(dtype).itemsize

  def planes(bands) -> int:  # a derived band (NDVI ...) reads its two sources
    return sum(2 if isinstance(b, tuple) else 1 for b in bands)

  return chip.height * chip.width * (planes(pair.before_bands) * itemsize(pair.before.dtype)
                                     + planes(pair.after_bands) * itemsize(pair.after.dtype))


def read_pair_window(reader: WindowReader, pair: Pair, chip: tiling.Chip,
                     mask_values: tuple[int, ...] = ()
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Both captures' bands in a chip's window, and where both are valid.

  A pixel is valid only where both captures are: masked pixels never count as change, and
  are 0 in both returned `[h, w, C]` arrays.
  """
  window = Window(chip.col, chip.row, chip.width, chip.height)
  b, a = pair.before, pair.after
  before, valid_b = reader.read(b.uris, pair.before_bands, window, b.nodata, b.mask_uri,
                                b.mask_band, mask_values, **read_options(pair, "before"))
  after, valid_a = reader.read(a.uris, pair.after_bands, window, a.nodata, a.mask_uri,
                               a.mask_band, mask_values, **read_options(pair, "after"))
  valid = valid_b & valid_a
  invalid = ~valid
  if invalid.any():  # in place: the reader's arrays are this chip's own
    before[invalid] = 0.0
    after[invalid] = 0.0
  return before, after, valid


def read_chip(reader: WindowReader, pair: Pair, chip: tiling.Chip, chip_size: int,
              mask_values: tuple[int, ...] = ()) -> dict:
  """Reads one chip of both captures into a tf.Transform instance, padded to `chip_size`."""
  return preprocessing.make_instance(chip_key(pair, chip.index).to_bytes(),
                                     *read_model_input(reader, pair, chip, chip_size,
                                                       mask_values))


def read_model_input(reader: WindowReader, pair: Pair, chip: tiling.Chip, chip_size: int,
                     mask_values: tuple[int, ...] = ()
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Reads one chip of both captures as the scoring call takes it: `before`, `after`
  `[S, S, C]` and `valid` `[S, S]`, float32, padded to `chip_size`."""
  before, after, valid = read_pair_window(reader, pair, chip, mask_values)
  return (tiling.pad_chip(before, chip_size).astype(np.float32, copy=False),
          tiling.pad_chip(after, chip_size).astype(np.float32, copy=False),
          tiling.pad_chip(valid.astype(np.float32), chip_size))


def is_transient(error: Exception) -> bool:
  """I/O errors may pass (a flaky network filesystem); decoding errors of a bad file do not."""
  if not isinstance(error, (rasterio.errors.RasterioIOError, OSError)):
    return False
  text = str(error).lower()
  return not any(w in text for w in ("truncated", "decod", "corrupt", "not recognized"))


class ReadChips(beam.DoFn):
  """`(Pair, Chip)` -> tf.Transform instance; failures -> tagged `ChipFailure`.

  Transient read errors are retried with backoff; a chip that still fails marks its pair.
  Subclasses change what a chip becomes (`read`) and what is emitted (`emit`).
  """

  def __init__(self, chip_size: int, count_metrics: bool = True,
               mask_values: tuple[int, ...] = ()):
    self.chip_size = chip_size
    self.count_metrics = count_metrics
    self.mask_values = tuple(mask_values)

  def setup(self):
    self.reader = WindowReader()

  def read(self, pair: Pair, chip: tiling.Chip, **side):
    return read_chip(self.reader, pair, chip, self.chip_size, self.mask_values)

  def emit(self, pair: Pair, chip: tiling.Chip, example):
    return example

  def process(self, element, **side):
    pair, chip = element
    for attempt in range(_RETRIES):
      try:
        with timer_msec(STAGE, "read_msec"):
          example = self.read(pair, chip, **side)
        break
      except Exception as e:  # a bad file must cost its pair, never the sweep
        self.reader.close()
        if is_transient(e) and attempt + 1 < _RETRIES:
          inc_counter(STAGE, "read_retries")
          time.sleep(0.2 * 2 ** attempt)
          continue
        yield beam.pvalue.TaggedOutput("failed", ChipFailure(
            pair.pair_id, chip.index, f"reading chip {chip.index} failed: "
            f"{(str(e).splitlines() or [type(e).__name__])[0][:300]}"))
        return
    if self.count_metrics:
      inc_counter(STAGE, "chips_read")
      inc_counter(STAGE, "bytes_read", window_bytes(pair, chip))
    yield self.emit(pair, chip, example)

  def teardown(self):
    self.reader.close()


class ReadModelInputs(ReadChips):
  """`(Pair, Chip)` -> `(ChipKey, (before, after, valid))` for `scoring.ScoreChips`."""

  def read(self, pair: Pair, chip: tiling.Chip, **side):
    return read_model_input(self.reader, pair, chip, self.chip_size, self.mask_values)

  def emit(self, pair: Pair, chip: tiling.Chip, example):
    return chip_key(pair, chip.index), example

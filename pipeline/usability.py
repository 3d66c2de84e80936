"""Is a capture usable? Masks from nodata/NaN, a QA band or a sidecar mask file, and the statistics
of the valid pixels, from one decimated read per file (a few hundred pixels a side)."""
from __future__ import annotations

import re
from typing import NamedTuple, Sequence

import numpy as np
from rasterio.enums import Resampling

from changesweep.pipeline import rasters
from changesweep.transforms.band_grid import BandGridError, finest, grid_of_dataset
from changesweep.transforms.masks import band_valid, is_masked

# Side of the decimated grid the usability check reads; the chips read the full resolution.
STATS_SIDE = 256


class FileStats(NamedTuple):
  """Valid share and per-band statistics of one file's valid pixels (all its bands).

  `band_medians` and `band_mads` (the median and 1.4826 * MAD, `normalization.capture_stats`)
  are empty where not measured (a record of an older state).
  """
  usable_fraction: float
  band_means: tuple[float, ...]
  band_stds: tuple[float, ...]
  band_medians: tuple[float, ...] = ()
  band_mads: tuple[float, ...] = ()


def robust_stats(pixels: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Median and 1.4826 * MAD (with `normalization.capture_stats`'s floors) per band.

  The same rule as the any-band model's training (`normalization.capture_stats`), so a model
  normalised "archive_optical_robust" sees the numbers it was trained with.

  Args:
    pixels: `[C, N]` values of the valid pixels (non-finite values are ignored).

  Returns:
    `(medians, mads)`, NaN for a band without a finite value.
  """
  from changesweep.transforms import normalization as norm

  pixels = np.asarray(pixels, np.float64).reshape(pixels.shape[0], -1)
  center, scale = norm.capture_stats(pixels.T, (norm.CODE_UNKNOWN,) * pixels.shape[0])
  some = np.isfinite(pixels).any(axis=1)
  return (tuple(float(v) if k else float("nan") for v, k in zip(center, some)),
          tuple(float(v) if k else float("nan") for v, k in zip(scale, some)))


class MaskSpec(NamedTuple):
  """Where masks come from, besides nodata and non-finite values.

  Attributes:
    band: a band of the capture that flags bad pixels (name or 1-based index), or None.
    layout: a path template, relative to the archive, of sidecar mask files, or None.
    values: mask values meaning "bad"; empty means any non-zero value is bad.
  """
  band: str | None = None
  layout: str | None = None
  values: tuple[int, ...] = ()


_FIELD = re.compile(r"\{(\w+)(?::[^}]*)?\}")


def sidecar_uri(root: str, mask_layout: str, fields: dict[str, str]) -> str:
  """The sidecar mask of a capture: the mask layout filled with the capture's own path fields.

  Raises:
    KeyError: the mask layout names a field the capture's path does not have.
  """
  rel = _FIELD.sub(lambda m: fields[m.group(1)], mask_layout)
  return f"{root.rstrip('/')}/{rel}"


def is_mask_file(band: str | None, masks: MaskSpec) -> bool:
  """Whether a band file (one file per band) is the capture's `--mask_band`, e.g. SCL."""
  return bool(band and masks.band and band.casefold() == masks.band.casefold())


def file_stats(uri: str, nodata: float | None, mask_band: int | None = None,
               mask_uri: str | None = None, mask_values: tuple[int, ...] = (),
               mask_only: bool = False) -> FileStats:
  """Statistics of a file's valid pixels on a decimated grid.

  A pixel is valid where every band but the mask band is (a QA band's zeros may share the
  nodata value) and the mask band or file does not flag it.

  Args:
    mask_band: 0-based band of this file that flags bad pixels.
    mask_uri: a sidecar mask file on the same grid.
    mask_only: the file is a mask (the mask band's own file): valid is what it does not flag.
  """
  with rasters.reading(uri, "pixels"), rasters.open_raster(uri) as src:
    scale = max(1, int(np.ceil(max(src.height, src.width) / STATS_SIDE)))
    shape = (max(1, src.height // scale), max(1, src.width // scale))
    data = src.read(out_shape=(src.count, *shape), resampling=Resampling.nearest,
                    out_dtype="float64")
    masks = src.read_masks(out_shape=(src.count, *shape), resampling=Resampling.nearest)
  bands = [b for b in range(data.shape[0]) if b != mask_band] or [0]
  valid = np.ones(shape, bool) if mask_only else band_valid(
      data[bands], masks[bands], nodata).all(axis=0)
  if mask_band is not None:
    valid &= ~is_masked(data[mask_band], mask_values)
  if mask_uri is not None:
    with rasters.reading(mask_uri, "mask"), rasters.open_raster(mask_uri) as m:
      if (m.height, m.width) != (src.height, src.width):  # a 20 m mask of a 10 m band: one extent
        try:
          finest([grid_of_dataset(src), grid_of_dataset(m)])
        except BandGridError:
          raise rasters.RasterError(f"mask {mask_uri} is {m.height}x{m.width}, the capture "
                                    f"{src.height}x{src.width}, and they do not cover one "
                                    "extent") from None
      flags = m.read(1, out_shape=shape, resampling=Resampling.nearest)
    valid &= ~is_masked(flags, mask_values)
  n = int(valid.sum())
  if n == 0:
    nan = tuple(float("nan") for _ in range(data.shape[0]))
    return FileStats(0.0, nan, nan, nan, nan)
  pixels = data[:, valid]
  return FileStats(n / valid.size, tuple(float(v) for v in pixels.mean(axis=1)),
                   tuple(float(v) for v in pixels.std(axis=1)), *robust_stats(pixels))


def capture_overview(scene, positions: Sequence[int], mask_values: tuple[int, ...] = ()
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Bands of a capture on its decimated grid, as `file_stats` reads them, and where valid.

  Band files of different resolutions cover one extent (`transforms.band_grid.finest`), so each
  is read straight onto the capture's decimated grid.

  Args:
    scene: the capture (`elements.SceneRef`).
    positions: 0-based bands of the capture.
    mask_values: `--mask_values` for the capture's mask band or file.

  Returns:
    `([C, h, w] float64, [h, w] bool)`: valid where every band is and no mask flags the pixel.
  """
  scale = max(1, int(np.ceil(max(scene.height, scene.width) / STATS_SIDE)))
  shape = (max(1, scene.height // scale), max(1, scene.width // scale))
  planes, valid = [], np.ones(shape, bool)
  for p in positions:
    uri, index = (scene.uris[p], 1) if len(scene.uris) > 1 else (scene.uris[0], p + 1)
    with rasters.reading(uri, f"band {index}"), rasters.open_raster(uri) as src:
      data = src.read(index, out_shape=shape, resampling=Resampling.nearest, out_dtype="float64")
      masks = src.read_masks(index, out_shape=shape, resampling=Resampling.nearest)
    valid &= band_valid(data, masks, scene.nodata)
    planes.append(data)
  for uri, index in ((scene.uris[0], scene.mask_band), (scene.mask_uri, 0)):
    if uri is not None and index is not None:
      with rasters.reading(uri, "mask"), rasters.open_raster(uri) as src:
        flags = src.read(index + 1, out_shape=shape, resampling=Resampling.nearest)
      valid &= ~is_masked(flags, mask_values)
  return np.stack(planes), valid


def derived_band_stats(scene, derived, mask_values: tuple[int, ...] = ()
                       ) -> tuple[float, float, float, float]:
  """Mean, standard deviation, median and 1.4826 * MAD (`robust_stats`) of a derived band
  (`transforms.bands.Derived`, e.g. NDVI) over a capture's valid pixels on the decimated grid;
  NaN where no pixel is valid.

  The index is computed as the chips compute it (`transforms.bands.normalized_difference`):
  invalid where either source band is, or where their sum is 0.
  """
  from changesweep.transforms.bands import normalized_difference

  (a, b), valid = capture_overview(scene, (derived.a, derived.b), mask_values)
  index = normalized_difference(a, b)
  values = index[valid & np.isfinite(index)].astype(np.float64)
  if not values.size:
    return (float("nan"),) * 4
  (median,), (mad,) = robust_stats(values[None])
  return float(values.mean()), float(values.std()), median, mad


def derived_stats(scene, derived, mask_values: tuple[int, ...] = ()) -> tuple[float, float]:
  """Mean and standard deviation of a derived band (see `derived_band_stats`)."""
  return derived_band_stats(scene, derived, mask_values)[:2]

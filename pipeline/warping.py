"""Reading a capture on another grid: a rasterio `WarpedVRT` per file, windows as on the target.

Pixels outside the source footprint come back masked (invalid): outside the overlap of a pair
nothing is ever change.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Literal

import numpy as np
from rasterio.windows import Window

from changesweep.pipeline.grids import (MASK_RESAMPLING, NO_WARP, REFLECTANCE_RESAMPLING, Grid,
                                        _crs, grid_of_dataset, parse_resampling, same_grid)
# One warper view for pair grids here and for a capture's band files of different resolutions
# (`transforms.band_grid`, shared with training).
from changesweep.transforms.band_grid import AlphaMaskedVRT, warped_view  # noqa: F401


def resampling_for(kind: Literal["reflectance", "mask"], override: str | None = None) -> str:
  """Resampling of a band kind: `--resampling` sets reflectance; masks are always nearest."""
  if kind == "mask":
    return MASK_RESAMPLING
  return parse_resampling(override)


def warp_to_grid(dataset, grid: Grid | None, resampling: str = REFLECTANCE_RESAMPLING):
  """A view of `dataset` on `grid`: the dataset itself when already on it, else a WarpedVRT.

  Pixels outside the source footprint are masked in the view: the VRT keeps the source's nodata
  value, or (without one) gets an alpha band, so `read_masks` is 0 there. The caller closes a
  VRT it got (closing it leaves the source open).
  """
  if grid is None or same_grid(grid_of_dataset(dataset), grid):
    return dataset
  if not dataset.crs or not grid.crs_wkt:
    raise ValueError("cannot warp a raster without georeference onto another grid")
  return warped_view(dataset, grid.crs, grid.affine, grid.width, grid.height, resampling)


@contextlib.contextmanager
def open_on_grid(dataset, grid: Grid | None, resampling: str = REFLECTANCE_RESAMPLING
                 ) -> Iterator:
  """Context manager: `dataset` seen on `grid`, read with the target grid's own `Window`s.

  Yields the dataset itself when it is on `grid` already (or `grid` is None), else a WarpedVRT
  closed on exit. Use `resampling_for("mask")` for mask bands and files.
  """
  view = warp_to_grid(dataset, grid, resampling)
  try:
    yield view
  finally:
    if view is not dataset:
      view.close()


def read_on_grid(dataset, indexes: list[int], grid: Grid | None, window: Window,
                 resampling: str = REFLECTANCE_RESAMPLING) -> tuple[np.ndarray, np.ndarray]:
  """Reads 1-based bands in a target-grid window: `([C, h, w] float32, [h, w] bool validity)`."""
  with open_on_grid(dataset, grid, resampling) as view:
    data = view.read(indexes, window=window, out_dtype="float32")
    valid = (view.read_masks(indexes, window=window) > 0).all(axis=0)
  return data, valid & np.isfinite(data).all(axis=0)

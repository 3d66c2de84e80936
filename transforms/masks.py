"""The valid-pixel rule, in one place for the usability check, the chip reads and training.

A pixel of a capture is valid where every band that is read is valid — the raster's own mask
(nodata, alpha or internal mask) keeps it, it is finite and not the nodata value — and no mask
band or sidecar mask flags it.
"""
from __future__ import annotations

import numpy as np


def is_masked(values: np.ndarray, mask_values: tuple[int, ...] | list[int]) -> np.ndarray:
  """True where a mask band or file flags a pixel (any non-zero value when `mask_values` is empty)."""
  return np.isin(values, mask_values) if len(mask_values) else values != 0


def band_valid(data: np.ndarray, gdal_mask: np.ndarray | None, nodata: float | None
               ) -> np.ndarray:
  """Validity of the pixels of one band (or of `[C, ...]` bands, each on its own)."""
  valid = np.isfinite(data)
  if gdal_mask is not None:
    valid &= gdal_mask > 0
  if nodata is not None:
    valid &= data != nodata
  return valid

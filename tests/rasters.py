"""Tiny seeded rasters and archives for tests (the odd cases the sample archive lacks)."""
from __future__ import annotations

import os

import numpy as np
import rasterio
from rasterio.transform import Affine

UTM = "EPSG:32631"
GRID = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4800000.0)


def write_raster(path: str, data: np.ndarray, *, crs: str | None = UTM,
                 transform: Affine | None = GRID, nodata: float | None = None,
                 descriptions: tuple[str, ...] | None = None, driver: str = "GTiff") -> str:
  """Writes `[C, H, W]` data."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  count, h, w = data.shape
  profile = dict(driver=driver, height=h, width=w, count=count, dtype=data.dtype.name)
  if driver == "GTiff":
    profile.update(crs=crs, transform=transform or Affine.identity(), nodata=nodata)
  with rasterio.open(path, "w", **profile) as dst:
    dst.write(data)
    if descriptions:
      dst.descriptions = descriptions
  return path


def scene(seed: int, h: int = 64, w: int = 80, bands: int = 4) -> np.ndarray:
  """A smooth, textured uint16 scene (fields and roads, roughly)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w]
  base = np.stack([1000 + 300 * np.sin(xx / (7 + b)) * np.cos(yy / (5 + b)) for b in range(bands)])
  return (base + rng.normal(0, 20, base.shape)).clip(1, 60000).astype(np.uint16)


def with_change(data: np.ndarray, rows: slice, cols: slice, value: int = 4000) -> np.ndarray:
  out = data.copy()
  out[:, rows, cols] = value
  return out


def write_series(root: str, location: str, dates: list[str], h: int = 64, w: int = 80,
                 seed: int = 0, change_at: int | None = None, **kw) -> list[str]:
  """One location's captures under `root/location/date.tif`; a block changes from `change_at`."""
  base = scene(seed, h, w)
  rng = np.random.default_rng(seed + 1)
  paths = []
  for i, date in enumerate(dates):
    data = (base.astype(np.int32) + rng.normal(0, 10, base.shape)).clip(1, 60000).astype(np.uint16)
    if change_at is not None and i >= change_at:
      data = with_change(data, slice(h // 4, h // 2), slice(w // 4, w // 2))
    paths.append(write_raster(os.path.join(root, location, f"{date}.tif"), data,
                              descriptions=("B02", "B03", "B04", "B08"), **kw))
  return paths

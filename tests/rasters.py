"""Tiny seeded rasters and archives for tests (the odd cases the sample archive lacks)."""
from __future__ import annotations

import os

import numpy as np
import rasterio
from rasterio import warp
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


def seasonal_series(root: str, location: str, start: str, days: int, every: int, *,
                    seed: int, change_on: str | None = None, cloudy_every: int = 7,
                    overcast: tuple[int, ...] = (), nodata_at: tuple[int, ...] = (),
                    size: int = 32) -> list[dict]:
  """A multi-year series with a seasonal cycle, clouds flagged in a QA band and nodata captures.

  Bands B02, B03, B04, B08 follow an annual cycle (NIR swings most, like vegetation), plus
  noise; every `cloudy_every`-th capture has a bright cloud over part of the scene, flagged in
  band 5 (QA = 1); captures at indexes in `overcast` are fully cloudy, those in `nodata_at` all
  nodata. From `change_on`, a block of pixels switches to a flat, bright land cover.

  Returns:
    One dict per capture: date, path, and the cloud mask (or None).
  """
  import datetime as dt

  rng = np.random.default_rng(seed)
  texture = scene(seed, size, size, 4).astype(np.float64) - 1000
  t0 = dt.date.fromisoformat(start)
  out = []
  for i, day in enumerate(range(0, days, every)):
    date = t0 + dt.timedelta(days=day)
    phase = 2 * np.pi * date.timetuple().tm_yday / 365.25
    season = np.array([60, 120, 90, 900])[:, None, None] * np.sin(phase)
    data = 1200 + 0.3 * texture + season + rng.normal(0, 15, (4, size, size))
    if change_on and date.isoformat() >= change_on:
      data[:, 8:20, 8:20] = np.array([2600, 2700, 2900, 3000])[:, None, None]
    qa = np.zeros((1, size, size))
    cloud = None
    if i in overcast:
      qa[:] = 1
    elif cloudy_every and i % cloudy_every == 3:
      r, c = rng.integers(0, size // 2, 2)
      cloud = np.zeros((size, size), bool)
      cloud[r:r + size // 3, c:c + size // 3] = True
      data[:, cloud] = 7000
      qa[0, cloud] = 1
    if i in nodata_at:
      data[:] = 0
    stack = np.concatenate([data.clip(1, 60000), qa]).astype(np.uint16)
    if i in nodata_at:
      stack[:] = 0
    path = write_raster(os.path.join(root, location, f"{date.isoformat()}.tif"), stack,
                        nodata=0, descriptions=("B02", "B03", "B04", "B08", "QA"))
    out.append({"date": date.isoformat(), "path": path, "cloud": cloud, "index": i})
  return out


def write_change_map(path, pair, prob, valid):
  """Writes a whole map the way the sweep's map assembly writes it (tiled GeoTIFF, before COG)."""
  import rasterio

  from changesweep.pipeline import change_maps
  from changesweep.pipeline.elements import PROB_SCALE
  from changesweep.pipeline.pair_summary import encode_tile

  os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
  with rasterio.open(path, "w", **change_maps.map_profile(pair)) as dst:
    dst.write(encode_tile(prob, valid)[None])
    dst.scales = (1.0 / PROB_SCALE,)
    dst.set_band_description(1, "change_probability")
    dst.update_tags(pair_id=pair.pair_id, before=pair.before.uri, after=pair.after.uri)
  return encode_tile(prob, valid)


def corrupt_first_tile(path: str) -> str:
  """Overwrites the first tile of band 1 of a tiled, compressed GeoTIFF: the header still
  reads, the pixels do not."""
  with rasterio.open(path) as src:
    offset = int(src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
    size = int(src.get_tag_item("BLOCK_SIZE_0_0", "TIFF", bidx=1))
  with open(path, "r+b") as f:
    f.seek(offset)
    f.write(b"\xff" * size)
  return path


# --------------------------------------------------------------------------------------------
# A synthetic ground in map coordinates (pairs across grids): rendered onto each capture's own
# grid, so a pasted change sits at one place on the ground whatever grid a capture is on.

ZONE32, ZONE33 = "EPSG:32632", "EPSG:32633"
# Near the 12 deg E zone edge (lat ~46 N): x ~ 800 km in zone 32, ~ 336 km in zone 33.
X0, Y0 = 802_000.0, 5_100_000.0
CHANGE = (X0 + 200.0, X0 + 400.0, Y0 - 400.0, Y0 - 200.0)  # x0, x1, y1, y0 in zone 32 metres


def logistic(t: np.ndarray) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-np.clip(t, -50, 50)))


def ground(x: np.ndarray, y: np.ndarray, change: bool = False, edge_m: float = 6.0) -> np.ndarray:
  """Reflectance of the synthetic ground at zone-32 coordinates: smooth texture plus fields.

  Fields are bright rectangles with soft (`edge_m`) edges, like a sensor's blur.
  """
  u, v = (x - X0) / 10.0, (Y0 - y) / 10.0
  out = 1000 + 150 * np.sin(u / 6.0) * np.cos(v / 5.0) + 80 * np.sin((u + 2 * v) / 9.0)
  for cx0, cx1, cy1, cy0 in ((X0 + 60, X0 + 180, Y0 - 160, Y0 - 40),
                             (X0 + 450, X0 + 560, Y0 - 520, Y0 - 300),
                             (X0 + 80, X0 + 150, Y0 - 560, Y0 - 430)):
    box = (logistic((x - cx0) / edge_m) * logistic((cx1 - x) / edge_m)
           * logistic((y - cy1) / edge_m) * logistic((cy0 - y) / edge_m))
    out = out + 900 * box
  if change:
    x0, x1, y1, y0 = CHANGE
    box = (logistic((x - x0) / 2) * logistic((x1 - x) / 2) * logistic((y - y1) / 2)
           * logistic((y0 - y) / 2))
    out = out * (1 - box) + 4000 * box
  return out


def render(path: str, crs: str, transform: Affine, shape: tuple[int, int], *, change=False,
           shift_px=(0.0, 0.0), nodata=None, bands=2,
           descriptions: tuple[str, ...] | None = None) -> str:
  """Writes the ground sampled at the pixel centres of a grid (content moved by `shift_px`)."""
  rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
  xs, ys = rasterio.transform.xy(transform, (rows - shift_px[1]).ravel(),
                                 (cols - shift_px[0]).ravel())
  xs, ys = np.asarray(xs), np.asarray(ys)
  if crs != ZONE32:
    xs, ys = warp.transform(crs, ZONE32, xs, ys)
  value = ground(np.asarray(xs), np.asarray(ys), change).reshape(shape)
  data = np.stack([value + 50 * b for b in range(bands)]).round().astype(np.uint16)
  return write_raster(path, data, crs=crs, transform=transform, nodata=nodata,
                      descriptions=descriptions)


BEFORE_GRID = Affine(10.0, 0, X0, 0, -10.0, Y0)


def zone33_grid(res: float, margin_m: float = 0.0) -> tuple[Affine, tuple[int, int]]:
  """A zone-33 grid over the before footprint, shifted off-lattice and cut shorter."""
  left, bottom, right, top = warp.transform_bounds(ZONE32, ZONE33, X0, Y0 - 640, X0 + 640, Y0)
  left += 3.7 + margin_m
  top -= 2.9
  shape = (int((top - bottom) / res) - int(80 / res), int((right - left) / res))
  return Affine(res, 0, left, 0, -res, top), shape



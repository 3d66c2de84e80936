"""One grid for the bands of one capture: Sentinel-2's 10/20/60 m files read on the finest.

The sweep (`pipeline.rasters.WindowReader`, window by window through `pipeline.warping`) and
training and evaluation (`read_on_finest_grid`, whole files) use the same rule to pick the grid
(`finest`) and the same GDAL warper view (`warped_view`, a rasterio `WarpedVRT`): bilinear for
reflectance, nearest for masks. So a model sees the same pixels in training and in a sweep.
"""
from __future__ import annotations

import contextlib
import functools
import math
import warnings
from typing import NamedTuple, Sequence

import numpy as np
import rasterio
import rasterio.transform
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

# Bands of one capture may differ in resolution by up to this factor: Sentinel-2's 60 m bands
# beside its 10 m ones (6x), Landsat's 100 m thermal beside 15 m pan (6.7x) pass.
MAX_RESOLUTION_RATIO = 8.0
REFLECTANCE = "bilinear"
MASK = "nearest"


class BandGridError(ValueError):
  """The files of one capture cannot be put on one grid."""


class Grid(NamedTuple):
  """A pixel grid: CRS, affine geotransform and size (one file's, or a pair's).

  Attributes:
    crs_wkt: the CRS as WKT ("" when not georeferenced).
    transform: the affine (a, b, c, d, e, f) of the top-left pixel corner.
    height, width: rows and columns.
  """
  crs_wkt: str
  transform: tuple[float, ...]
  height: int
  width: int

  @property
  def affine(self) -> Affine:
    return Affine(*self.transform[:6])

  @property
  def crs(self) -> CRS | None:
    return parse_crs(self.crs_wkt)

  @property
  def resolution(self) -> float:
    """Pixel side (square root of the pixel area), in CRS units."""
    return math.sqrt(self.pixel_area)

  @property
  def bounds(self) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) in CRS units."""
    return rasterio.transform.array_bounds(self.height, self.width, self.affine)[:4]

  @property
  def pixel_area(self) -> float:
    a, b, _, d, e, _ = self.transform[:6]
    return abs(a * e - b * d)

  @property
  def pixel_side(self) -> float:
    """The longest pixel side component, in CRS units."""
    a, b, _, d, e, _ = self.transform[:6]
    return max(abs(a), abs(b), abs(d), abs(e))

  @property
  def corners(self) -> np.ndarray:
    """The four outer corners `[4, 2]` (x, y) in CRS units."""
    a, b, c, d, e, f = self.transform[:6]
    cols = np.array([0, self.width, self.width, 0], float)
    rows = np.array([0, 0, self.height, self.height], float)
    return np.stack([a * cols + b * rows + c, d * cols + e * rows + f], axis=1)


@functools.lru_cache(maxsize=64)
def parse_crs(wkt: str) -> CRS | None:
  return CRS.from_wkt(wkt) if wkt else None


def grid_of_dataset(dataset) -> Grid:
  """The grid of an open rasterio dataset."""
  return Grid(dataset.crs.to_wkt() if dataset.crs else "", tuple(dataset.transform)[:6],
                  dataset.height, dataset.width)


def same_crs(a: str, b: str) -> bool:
  """Whether two CRS WKTs name one CRS (equal text, or equal once parsed; "" is no CRS)."""
  if a == b:
    return True
  if not a or not b:
    return False
  return parse_crs(a) == parse_crs(b)


def finest(grids: Sequence[Grid], max_ratio: float = MAX_RESOLUTION_RATIO) -> int:
  """Which of a capture's file grids its bands are read on: the finest (first of equals).

  Files may differ in resolution, not in place: same CRS, and every corner within half a
  pixel of the coarser grid of the finest grid's.

  Raises:
    BandGridError: no grids; CRSs differ; grids differ without georeference; extents differ
      by more than half a coarse pixel; resolutions differ by more than `max_ratio`.
  """
  grids = list(grids)
  if not grids:
    raise BandGridError("a capture needs at least one file")
  if all(g == grids[0] for g in grids):
    return 0
  if not all(g.crs_wkt for g in grids):
    raise BandGridError("band files of one capture are on different grids and carry no "
                        "georeference (no CRS), so they cannot be put on one grid")
  if not all(same_crs(g.crs_wkt, grids[0].crs_wkt) for g in grids):
    raise BandGridError("band files of one capture are in different CRSs")
  best = min(range(len(grids)), key=lambda i: (grids[i].pixel_area, i))
  fine = grids[best]
  for g in grids:
    ratio = math.sqrt(g.pixel_area / fine.pixel_area) if fine.pixel_area else math.inf
    if ratio > max_ratio:
      raise BandGridError(f"band files of one capture differ in resolution by a factor "
                          f"{ratio:.2f}, more than {max_ratio:g}")
    tol = 0.5 * max(g.pixel_side, fine.pixel_side)
    off = float(np.abs(g.corners - fine.corners).max())
    if off > tol:
      raise BandGridError(f"band files of one capture cover different extents: a "
                          f"{g.height}x{g.width} file's corners are {off:.6g} CRS units from "
                          f"the finest {fine.height}x{fine.width} file's, more than half a "
                          f"coarse pixel ({tol:.6g})")
  return best


def warped_view(dataset, crs, transform, width: int, height: int,
                resampling: str = REFLECTANCE):
  """`dataset` through GDAL's warper on another grid (a `WarpedVRT`; the caller closes it).

  Pixels outside the source footprint are masked: the view keeps the source's nodata value
  or, without one, gets an alpha band that every band's `read_masks` honours.
  """
  options = dict(crs=crs, transform=transform, width=width, height=height,
                 resampling=Resampling[resampling])
  if dataset.nodata is not None:
    return WarpedVRT(dataset, src_nodata=dataset.nodata, nodata=dataset.nodata, **options)
  return AlphaMaskedVRT(dataset, add_alpha=True, **options)


class AlphaMaskedVRT(WarpedVRT):
  """A WarpedVRT with an added alpha band that its band masks honour.

  Without a nodata value, the warper marks pixels outside the source footprint only in the alpha
  band, and GDAL takes an alpha band as the mask only of 2- and 4-band datasets; here every
  band's `read_masks` is 0 where the alpha is, so readers of masks need no special case.
  """

  def read_masks(self, indexes=None, window=None, out=None, out_shape=None, **kwargs):
    masks = super().read_masks(indexes, window=window, out=out, out_shape=out_shape, **kwargs)
    alpha = super().read(self.count, window=window, out_shape=masks.shape[-2:],
                         resampling=Resampling.nearest)
    masks[..., alpha == 0] = 0
    return masks


class CaptureBands(NamedTuple):
  """A capture's bands read whole onto its finest grid."""
  pixels: np.ndarray                     # float32 [H, W, C]
  descriptions: list[str | None]         # per band, None where unset
  driver: str                            # GDAL driver of the first file
  grid: Grid                             # the grid read on
  counts: list[int]                      # bands per file


def read_on_finest_grid(paths: Sequence[str], resampling: str = REFLECTANCE) -> CaptureBands:
  """Reads one multi-band file, or one file per band, onto the capture's finest grid (`finest`).

  Raises:
    BandGridError: the files cannot be put on one grid.
  """
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # PNG/JPEG have no georeference
    with contextlib.ExitStack() as stack:
      sources = [stack.enter_context(rasterio.open(p)) for p in paths]
      grids = [grid_of_dataset(s) for s in sources]
      target = grids[finest(grids)]
      planes, names = [], []
      for src, g in zip(sources, grids):
        view = src if g == target else stack.enter_context(warped_view(
            src, src.crs, rasterio.Affine(*target.transform), target.width, target.height,
            resampling))
        data = view.read(list(range(1, src.count + 1)), out_dtype="float32")
        planes.append(data)
        names += [d or None for d in src.descriptions]
      driver = sources[0].driver if sources else ""
  pixels = np.transpose(np.concatenate(planes, 0), (1, 2, 0)).astype(np.float32)
  return CaptureBands(pixels, names, driver, target, [p.shape[0] for p in planes])


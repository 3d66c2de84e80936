"""Pairs across grids: plan one pixel grid per pair, read captures onto it, measure misregistration.

Consecutive captures of one place are often on different grids (a new CRS, resolution, extent or
alignment). Instead of rejecting such a pair, `plan_common_grid` picks a target grid (by default
the earlier capture's) and says which capture must be warped; `open_on_grid` then reads that
capture through a rasterio `WarpedVRT` with the same `Window`s as the target grid, so chips stay
window by window and memory stays bounded. Pixels outside a capture's footprint come back masked
(invalid), so outside the overlap nothing is ever change and the map holds 255 there.

`estimate_shift` measures the residual shift left after georeferencing (phase correlation with
upsampling); `decide_shift` turns it into the pair row's `shift_*` fields and, with
`--coregister`, `PairGrid.coregistered` moves the after capture's read grid by the shift.

Pair-row fields (`PairGrid.row_fields()` and `ShiftRecord.row_fields()`):
  grid_crs: WKT of the grid the pair was scored on ("" when not georeferenced).
  grid_transform: its affine (a, b, c, d, e, f), as a list of 6 floats.
  overlap_fraction: share of the target grid covered by both captures' footprints (0..1).
  resampling: resampling of the reflectance bands ("none" when neither capture was warped; masks
    are always read with "nearest").
  shift_px: {dx, dy}, the after capture's content displacement against the before capture as
    measured (before any correction), in target-grid pixels (+x = east/right, +y = down); None
    when not measured.
  coregistered: the after capture was read shifted back by (dx, dy) before scoring.
  shift_flagged: |shift| exceeded the bound: not corrected, and the pair's score is not to be
    trusted as is.
"""
from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np
import rasterio
from rasterio import features, warp
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.windows import Window

from changesweep.pipeline.elements import SceneRef
from changesweep.transforms.band_grid import (  # noqa: F401  (Grid and its reader: one class)
    Grid, grid_of_dataset, parse_crs as _crs, same_crs)

# Default `--grid`: the earlier capture's grid (maps then sit on the label grid of a labelled pair).
DEFAULT_GRID = "earlier"
# Default `--min_overlap`: share of the target grid both captures must cover.
DEFAULT_MIN_OVERLAP = 0.2
# No capture is resampled by more than this factor (ground resolution, either way). 10 m vs 20 m
# (Sentinel-2 bands, Landsat pan/MS), 3 m vs 10 m (PlanetScope vs Sentinel-2) pass. Past 4 one
# target pixel mixes more than 16 source pixels (or one source pixel is smeared over more than 16),
# so changes of a few pixels, the ones the model was trained to find, vanish or become blocks.
DEFAULT_MAX_RESOLUTION_RATIO = 4.0
# Reflectance is interpolated; masks, QA flags and categorical bands are never blended.
REFLECTANCE_RESAMPLING = "bilinear"
MASK_RESAMPLING = "nearest"
NO_WARP = "none"
# `--coregister` corrects shifts of DEFAULT_MIN_SHIFT_PX..DEFAULT_MAX_SHIFT_PX target pixels.
# Below 1.5 px the subpixel resampling blurs the later capture more than the shift hurts: on the
# OSCD test cities, correcting every measured shift (0.1-1.1 px in 9 cities) lowered the pooled F1
# from 0.546 to 0.538, and valencia's 1.1 px from 0.087 to 0.080. Past 8 px (80 m at 10 m) the
# shift is no longer a residual of good georeferencing but a wrong georeference, another
# rectification or a mostly changed scene, where one translation is unlikely to be the whole
# error: flag rather than correct. (Those figures came from the first, z-scored estimate; the
# sweep's own, with and without --coregister, are in bench/results/grids_oscd.json.)
DEFAULT_MIN_SHIFT_PX = 1.5
DEFAULT_MAX_SHIFT_PX = 8.0
# The shift is measured on one common band in the central window (at most SHIFT_SAMPLE_SIDE
# target pixels a side: 1 MB a capture, 0.2% of a Sentinel-2 tile) with 1/SHIFT_UPSAMPLE subpixel
# refinement. The window is read at full resolution: decimating it 2x (block means) missed a
# 2.4 px shift by 0.3 px on the synthetic test scenes, past the 0.2 px the issue asks for. 512
# rather than 1024: the estimate took 115 ms instead of 1.2 s a pair here, and recovered a
# synthetic (2.4, -1.3) px shift as (2.4, -1.25).
SHIFT_SAMPLE_SIDE = 512
SHIFT_UPSAMPLE = 20
# Side of the coarse raster the overlap is counted on.
OVERLAP_SIDE = 256
# Two grids are one grid when their offsets agree to this share of a pixel.
_PIXEL_TOL = 1e-3


class GridSpec(NamedTuple):
  """Where a pair's grid comes from (`--grid`).

  Attributes:
    source: "earlier" or "later" (that capture's grid), or "fixed" (one CRS and resolution for
      the whole location, origin snapped to multiples of the resolution).
    crs_wkt: the fixed CRS, as WKT ("" unless fixed).
    resolution: the fixed pixel side in CRS units (0 unless fixed).
  """
  source: Literal["earlier", "later", "fixed"] = "earlier"
  crs_wkt: str = ""
  resolution: float = 0.0


class PairGrid(NamedTuple):
  """The grid a pair is scored on and how each capture reaches it.

  Attributes:
    target: the grid of the chips and the change map.
    warp_before, warp_after: whether that capture is read through a WarpedVRT.
    overlap_fraction: share of the target grid covered by both captures.
    resampling: reflectance resampling name (`NO_WARP` when neither capture is warped).
    after_offset_px: (dx, dy) the after capture is read shifted by (coregistration), or (0, 0).
  """
  target: Grid
  warp_before: bool
  warp_after: bool
  overlap_fraction: float
  resampling: str
  after_offset_px: tuple[float, float] = (0.0, 0.0)

  @property
  def no_warp(self) -> bool:
    """Both captures are read as they are, on the target grid: today's fast path."""
    return not (self.warp_before or self.warp_after)

  def read_grid(self, which: Literal["before", "after"]) -> Grid | None:
    """The grid to read a capture on, or None to read its file as it is."""
    if which == "before":
      return self.target if self.warp_before else None
    if not self.warp_after:
      return None
    return offset_grid(self.target, self.after_offset_px)

  def coregistered(self, shift: tuple[float, float], resampling: str | None = None) -> PairGrid:
    """This plan with the after capture read shifted back by `shift` (always warped then)."""
    return self._replace(warp_after=True, after_offset_px=(float(shift[0]), float(shift[1])),
                         resampling=self.resampling if self.resampling != NO_WARP
                         else (resampling or REFLECTANCE_RESAMPLING))

  def row_fields(self) -> dict:
    """The pair row's grid fields."""
    return {"grid_crs": self.target.crs_wkt, "grid_transform": list(self.target.transform[:6]),
            "overlap_fraction": round(self.overlap_fraction, 4), "resampling": self.resampling}


class ShiftRecord(NamedTuple):
  """The measured misregistration of a pair and what was done about it.

  Attributes:
    shift_px: (dx, dy) displacement of the after capture's content, target pixels; None when it
      could not be measured (too few valid pixels).
    coregistered: the after capture is read shifted back by `shift_px`.
    shift_flagged: |shift_px| is past the bound: not corrected, score not to be trusted.
  """
  shift_px: tuple[float, float] | None
  coregistered: bool
  shift_flagged: bool

  def row_fields(self) -> dict:
    """The pair row's shift fields (`schemas.PAIRS`: shift_px, coregistered, shift_flagged)."""
    shift = (None if self.shift_px is None else
             {"dx": round(self.shift_px[0], 3) + 0.0, "dy": round(self.shift_px[1], 3) + 0.0})
    return {"shift_px": shift, "coregistered": self.coregistered,
            "shift_flagged": self.shift_flagged}


# ---------------------------------------------------------------------------------------------
# Grids and options.

def grid_of(scene: SceneRef) -> Grid:
  """The pixel grid a capture's files sit on."""
  return Grid(scene.crs or "", tuple(float(v) for v in scene.transform[:6]), scene.height,
              scene.width)


def parse_grid_option(text: str) -> GridSpec:
  """Parses `--grid`: "earlier", "later" or "<CRS>,<resolution>" (e.g. "EPSG:32633,10").

  Raises:
    ValueError: not one of those, an unknown CRS, a geographic CRS or a resolution <= 0.
  """
  value = (text or DEFAULT_GRID).strip()
  if value.lower() in ("earlier", "later"):
    return GridSpec(value.lower())
  crs_text, sep, res_text = value.rpartition(",")
  if not sep:
    raise ValueError(f"--grid must be 'earlier', 'later' or 'CRS,resolution' such as "
                     f"'EPSG:32633,10', got {text!r}")
  try:
    crs = CRS.from_user_input(crs_text.strip())
  except rasterio.errors.CRSError as e:
    raise ValueError(f"--grid {text!r}: unknown CRS {crs_text!r} ({e})") from None
  try:
    resolution = float(res_text)
  except ValueError:
    raise ValueError(f"--grid {text!r}: resolution {res_text!r} is not a number") from None
  if not resolution > 0 or not math.isfinite(resolution):
    raise ValueError(f"--grid {text!r}: resolution must be > 0")
  if crs.is_geographic:
    raise ValueError(f"--grid {text!r}: use a projected CRS (metres), not a geographic one")
  return GridSpec("fixed", crs.to_wkt(), resolution)


def parse_resampling(text: str | None) -> str:
  """Parses `--resampling` (a rasterio resampling name); None/"" means bilinear.

  Raises:
    ValueError: not a rasterio resampling method.
  """
  name = (text or REFLECTANCE_RESAMPLING).strip().lower()
  if name not in Resampling.__members__:
    raise ValueError(f"--resampling must be one of {sorted(Resampling.__members__)}, "
                     f"got {text!r}")
  return name


def fixed_grid(spec: GridSpec, scene: SceneRef | Grid) -> Grid:
  """A fixed-CRS grid covering a capture's footprint, its edges on multiples of the resolution.

  Snapping makes every capture of a location land on one lattice, so maps of a series stack
  pixel for pixel.
  """
  src = scene if isinstance(scene, Grid) else grid_of(scene)
  left, bottom, right, top = warp.transform_bounds(src.crs, _crs(spec.crs_wkt), *src.bounds,
                                                   densify_pts=21)
  res = spec.resolution
  x0, y0 = math.floor(left / res) * res, math.ceil(top / res) * res
  width = max(1, math.ceil(round((right - x0) / res, 6)))
  height = max(1, math.ceil(round((y0 - bottom) / res, 6)))
  return Grid(spec.crs_wkt, (res, 0.0, x0, 0.0, -res, y0), height, width)


def same_grid(a: Grid, b: Grid) -> bool:
  """Pixel-for-pixel the same grid: same size and CRS, affines equal to a thousandth of a pixel."""
  if (a.height, a.width) != (b.height, b.width) or not same_crs(a.crs_wkt, b.crs_wkt):
    return False
  ta, tb = a.transform[:6], b.transform[:6]
  res = max(abs(ta[0]), abs(ta[1]), abs(ta[3]), abs(ta[4]))
  scale_ok = all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9 * res)
                 for x, y in zip((ta[0], ta[1], ta[3], ta[4]), (tb[0], tb[1], tb[3], tb[4])))
  return scale_ok and all(abs(x - y) <= _PIXEL_TOL * res for x, y in ((ta[2], tb[2]),
                                                                     (ta[5], tb[5])))


def offset_grid(grid: Grid, shift: tuple[float, float]) -> Grid:
  """The grid moved by (dx, dy) of its own pixels.

  Reading a capture whose content is displaced by (dx, dy) onto this grid puts its content back
  on `grid`'s pixels.
  """
  dx, dy = shift
  if dx == 0 and dy == 0:
    return grid
  return grid._replace(transform=tuple(grid.affine @ Affine.translation(dx, dy))[:6])


# ---------------------------------------------------------------------------------------------
# Planning (metadata only).

def plan_common_grid(before: SceneRef, after: SceneRef, spec: GridSpec = GridSpec(),
                     min_overlap: float = DEFAULT_MIN_OVERLAP,
                     max_resolution_ratio: float = DEFAULT_MAX_RESOLUTION_RATIO,
                     resampling: str = REFLECTANCE_RESAMPLING) -> PairGrid | str:
  """Plans the grid a pair is scored on, or says why the pair cannot be compared.

  Args:
    before, after: the earlier and the later capture.
    spec: where the grid comes from (`parse_grid_option`).
    min_overlap: least share of the target grid both captures must cover.
    max_resolution_ratio: most a capture's ground resolution may differ from the target's.
    resampling: the reflectance resampling to record (`parse_resampling`).

  Returns:
    A `PairGrid` (with `no_warp` when both are on one grid already), or a dead-letter reason.
  """
  gb, ga = grid_of(before), grid_of(after)
  if spec.source != "fixed" and same_grid(gb, ga):
    return PairGrid(gb, False, False, 1.0, NO_WARP)
  if not gb.crs_wkt or not ga.crs_wkt:
    which = "the earlier" if not gb.crs_wkt else "the later"
    if spec.source == "fixed":
      return (f"{which} capture has no georeference (no CRS): it cannot be placed on the "
              f"fixed --grid")
    return (f"{which} capture has no georeference (no CRS) and the grids differ "
            f"({gb.height}x{gb.width} vs {ga.height}x{ga.width}), so it cannot be placed on "
            f"the other's grid")
  if spec.source == "fixed":
    target = fixed_grid(spec, gb)
  else:
    target = gb if spec.source == "earlier" else ga
  warp_b, warp_a = not same_grid(gb, target), not same_grid(ga, target)
  for name, grid, warped in (("earlier", gb, warp_b), ("later", ga, warp_a)):
    ratio = resolution_ratio(grid, target)
    if warped and ratio > max_resolution_ratio:
      return (f"the {name} capture's resolution differs from the target grid's by a factor "
              f"{ratio:.2f}, more than {max_resolution_ratio:g} (--grid {spec.source})")
  overlap = overlap_fraction(target, (gb, ga))
  if overlap == 0:
    return "the captures' footprints do not overlap"
  if overlap < min_overlap:
    return (f"the captures overlap on {100 * overlap:.1f}% of the target grid, below the "
            f"{100 * min_overlap:.0f}% needed (--min_overlap)")
  if not (warp_b or warp_a):
    return PairGrid(target, False, False, overlap, NO_WARP)
  return PairGrid(target, warp_b, warp_a, overlap, resampling)


def resolution_ratio(grid: Grid, target: Grid) -> float:
  """How much coarser or finer (>= 1) a grid's ground resolution is than the target's."""
  if same_crs(grid.crs_wkt, target.crs_wkt):
    res = grid.resolution
  else:
    left, bottom, right, top = grid.bounds
    transform, _, _ = warp.calculate_default_transform(grid.crs, target.crs, grid.width,
                                                      grid.height, left, bottom, right, top)
    res = math.sqrt(abs(transform.a * transform.e - transform.b * transform.d))
  ratio = res / target.resolution
  return max(ratio, 1 / ratio)


def footprint(grid: Grid, crs_wkt: str, points_per_side: int = 16) -> dict:
  """A grid's outline as a GeoJSON polygon in another CRS (edges densified: they bend)."""
  t = np.linspace(0, 1, points_per_side, endpoint=False)
  h, w = grid.height, grid.width
  cols = np.concatenate([t * w, np.full_like(t, w), (1 - t) * w, np.zeros_like(t), [0]])
  rows = np.concatenate([np.zeros_like(t), t * h, np.full_like(t, h), (1 - t) * h, [0]])
  xs, ys = rasterio.transform.xy(grid.affine, rows, cols, offset="ul")
  if not same_crs(grid.crs_wkt, crs_wkt):
    xs, ys = warp.transform(grid.crs, _crs(crs_wkt), list(xs), list(ys))
  return {"type": "Polygon", "coordinates": [list(zip(map(float, xs), map(float, ys)))]}


def overlap_fraction(target: Grid, grids: tuple[Grid, ...], side: int = OVERLAP_SIDE) -> float:
  """Share of the target grid covered by every one of `grids` (counted on a coarse raster)."""
  scale = max(1.0, max(target.height, target.width) / side)
  shape = (max(1, math.ceil(target.height / scale)), max(1, math.ceil(target.width / scale)))
  coarse = target.affine @ Affine.scale(target.width / shape[1], target.height / shape[0])
  covered = np.ones(shape, bool)
  for grid in grids:
    if same_grid(grid, target):
      continue
    try:
      polygon = footprint(grid, target.crs_wkt)
    except (rasterio.errors.CRSError, ValueError):  # outside the target CRS's domain
      return 0.0
    if not np.isfinite(np.asarray(polygon["coordinates"][0])).all():
      return 0.0
    covered &= features.rasterize([(polygon, 1)], out_shape=shape, transform=coarse,
                                  fill=0, dtype="uint8").astype(bool)
  return float(covered.mean())

"""Change regions as polygons: a pair's pooled change map -> one row per connected changed area.

The input is the streaming aggregation's `PooledMap` (per-cell flagged/valid counts, probability
sum and max; cells of `factor` x `factor` pixels, at most 2048^2 of them), so a 10980^2 pair costs
what a 2048^2 one does: only the pooled arrays and one int32 label array are held.

Each region is an 8-connected set of changed cells (a cell is changed when it holds a flagged
pixel; with factor 1 that is exactly the thresholded map), the same rule as
`aggregate.change_regions` (ndimage 8-connectivity; `rasterio.features.shapes(connectivity=8)`).
Its outline is vectorised in pixel space, clipped to the pair grid, simplified with a stated
tolerance (half a cell by default), made valid, then mapped to the capture CRS and to WGS84.
"""
from __future__ import annotations

import math

import numpy as np
import shapely
import shapely.affinity
from rasterio import features
from rasterio.transform import Affine
from scipy import ndimage
from shapely.geometry import box, shape

from changesweep.pipeline.elements import PROB_NODATA, PROB_SCALE, PooledMap

# WKT digits after the decimal point: lon/lat (1e-9 deg ~ 0.1 mm), map units, pixels.
_LONLAT_DIGITS = 9
_MAP_DIGITS = 3
_PIXEL_DIGITS = 3
# Long (simplified) edges are split to at most this many pixels before reprojection to WGS84, so
# straight map edges stay close to their curved lon/lat image.
_MAX_EDGE_PX = 256
# pool_map works through the map in strips of about this many pixels.
_STRIP_PIXELS = 1 << 22


def pool_map(prob: np.ndarray, valid: np.ndarray, threshold: float, factor: int) -> PooledMap:
  """Pools a full-resolution byte map (0..254 = p*254) into cells of `factor` pixels.

  The pure, whole-map twin of the streaming combiner: tests and small pairs use it; the
  streaming aggregation builds the same arrays chip by chip.

  Args:
    prob: uint8 [H, W] quantised probability (values where `valid` is False are ignored).
    valid: bool [H, W] pixels usable in both captures.
    threshold: flagged means p >= threshold (p = prob / 254).
    factor: cell side in pixels (>= 1).

  Returns:
    The pooled map.

  Raises:
    ValueError: factor < 1 or the shapes differ.
  """
  if factor < 1:
    raise ValueError(f"factor must be >= 1, got {factor}")
  if prob.shape != valid.shape:
    raise ValueError(f"prob {prob.shape} and valid {valid.shape} differ")
  h, w = prob.shape
  ch, cw = -(-h // factor), -(-w // factor)
  out = PooledMap(factor, h, w, np.zeros((ch, cw), np.uint32), np.zeros((ch, cw), np.uint32),
                  np.zeros((ch, cw), np.float64), np.zeros((ch, cw), np.uint8))
  level = int(math.ceil(threshold * PROB_SCALE))
  step = max(1, _STRIP_PIXELS // max(1, w * factor))  # cell rows per strip: bounded memory
  for c0 in range(0, ch, step):
    rows = slice(c0 * factor, min(h, (c0 + step) * factor))
    n = -(-(rows.stop - rows.start) // factor)
    pad = ((0, n * factor - (rows.stop - rows.start)), (0, cw * factor - w))
    v = np.pad(valid[rows], pad).reshape(n, factor, cw, factor)
    q = np.pad(np.where(valid[rows], np.minimum(prob[rows], PROB_SCALE), 0).astype(np.uint8),
               pad).reshape(n, factor, cw, factor)
    cells = slice(c0, c0 + n)
    out.flagged[cells] = (v & (q >= level)).sum(axis=(1, 3), dtype=np.uint32)
    out.valid[cells] = v.sum(axis=(1, 3), dtype=np.uint32)
    out.prob_sum[cells] = q.sum(axis=(1, 3), dtype=np.float64) / PROB_SCALE
    out.prob_max[cells] = q.max(axis=(1, 3))
  return out


def regions_from_pooled(pooled: PooledMap, transform: tuple[float, ...] | None, crs_wkt: str, *,
                        max_regions: int, min_pixels: int,
                        simplify_px: float | None = None) -> list[dict]:
  """Vectorises the changed cells of a pair into region rows, largest first.

  Args:
    pooled: the pair's pooled change map.
    transform: the pair grid's affine geotransform (a, b, c, d, e, f) in pixels (not cells);
      ignored when `crs_wkt` is empty.
    crs_wkt: the capture CRS as WKT; "" when not georeferenced (then only pixel polygons).
    max_regions: keep at most this many regions.
    min_pixels: drop regions with fewer changed (flagged) pixels.
    simplify_px: Douglas-Peucker tolerance in pixels of the pair grid; None means half a cell
      (`0.5 * factor`), which removes the cell staircase but never moves an edge by more than
      half a cell.

  Returns:
    One dict per region (keys below), ordered by `changed_pixels` descending:
      region_id: 0-based rank within the pair.
      changed_pixels: exact count of flagged pixels in the region's cells.
      cell_pixels: cell side in pixels (`factor`; 1 = per-pixel outlines).
      area_pixels: polygon area in pixels of the pair grid (after clipping and simplification).
      area_m2: polygon area in m^2: planar in a projected CRS, geodesic (the CRS's ellipsoid)
        in a geographic one; None without a CRS.
      mean_change_prob: mean probability over the valid pixels of the region's cells
        (prob_sum / valid; with factor 1 that is the mean over its flagged pixels).
      max_change_prob: highest probability in the region (0..1, quantised to 1/254).
      row0, col0, row1, col1: half-open pixel bounding box of its cells, clipped to the grid.
      geometry_pixel: WKT polygon in pixel coordinates (x = column, y = row), always set.
      geometry_crs: WKT in the capture CRS (None without CRS).
      geometry: WKT in WGS84 longitude/latitude, exterior rings counter-clockwise (RFC 7946,
        BigQuery GEOGRAPHY); None without CRS.
      min_x, min_y, max_x, max_y: bounds of `geometry_crs` in map units (None without CRS).

  Raises:
    ValueError: the pooled arrays do not match the grid, or a bad argument.
  """
  _check(pooled)
  if max_regions < 0 or min_pixels < 0:
    raise ValueError(f"max_regions and min_pixels must be >= 0, got {max_regions}, {min_pixels}")
  factor = pooled.factor
  tol = 0.5 * factor if simplify_px is None else float(simplify_px)
  if tol < 0:
    raise ValueError(f"simplify_px must be >= 0, got {simplify_px}")
  changed = pooled.flagged > 0
  labels, n = ndimage.label(changed, structure=np.ones((3, 3), bool))
  if n == 0 or max_regions == 0:
    return []
  # Sums and maxima over the labelled cells only (no scene-sized float copies).
  lab = labels[changed]
  flagged = np.bincount(lab, pooled.flagged[changed].astype(np.float64), n + 1)[1:]
  valid = np.bincount(lab, pooled.valid[changed].astype(np.float64), n + 1)[1:]
  psum = np.bincount(lab, pooled.prob_sum[changed], n + 1)[1:]
  cell_max = pooled.prob_max[changed]
  pmax = np.zeros(n + 1, np.uint8)
  np.maximum.at(pmax, lab, np.where(cell_max == PROB_NODATA, 0, cell_max))
  pmax = pmax[1:]
  boxes = ndimage.find_objects(labels)
  geo = _Georef(transform, crs_wkt) if crs_wkt else None
  grid = box(0, 0, pooled.width, pooled.height)
  regions = []
  for index in np.argsort(-flagged, kind="stable")[:max_regions]:
    if flagged[index] < max(min_pixels, 1):
      break
    rs, cs = boxes[index]
    pixel = _outline(labels[rs, cs] == index + 1, factor, rs.start, cs.start, grid, tol)
    region = {
        "region_id": len(regions), "changed_pixels": int(flagged[index]), "cell_pixels": factor,
        "area_pixels": float(pixel.area),
        "area_m2": None,
        "mean_change_prob": float(psum[index] / valid[index]) if valid[index] else None,
        "max_change_prob": float(pmax[index]) / PROB_SCALE,
        "row0": rs.start * factor, "col0": cs.start * factor,
        "row1": min(rs.stop * factor, pooled.height), "col1": min(cs.stop * factor, pooled.width),
        "geometry_pixel": shapely.to_wkt(pixel, rounding_precision=_PIXEL_DIGITS),
        "geometry_crs": None, "geometry": None,
        "min_x": None, "min_y": None, "max_x": None, "max_y": None}
    if geo is not None:
      region.update(geo.describe(pixel, factor))
    regions.append(region)
  return regions


def union_wkt(regions: list[dict]) -> str | None:
  """WGS84 WKT of the union of the regions' geometries (the pair row's GEOGRAPHY), or None.

  None when there is no region or the capture has no CRS.
  """
  geoms = [shapely.from_wkt(r["geometry"]) for r in regions if r.get("geometry")]
  if not geoms:
    return None
  union = _oriented(_polygonal(shapely.make_valid(shapely.union_all(geoms))))
  return shapely.to_wkt(union, rounding_precision=_LONLAT_DIGITS)


def region_rows(pair_row: dict, regions: list[dict]) -> list[dict]:
  """Rows of the `regions` table (`schemas.REGIONS`): each region with its pair's keys."""
  keys = {k: pair_row.get(k) for k in ("pair_id", "location", "capture_date", "crs",
                                       "model_id", "model_version", "run_id")}
  return [{**keys, **r} for r in regions]


def pair_region_record(region: dict) -> dict:
  """A region as the pair row's `regions` RECORD (`schemas.REGION_FIELDS`) holds it."""
  return {"row0": region["row0"], "col0": region["col0"], "row1": region["row1"],
          "col1": region["col1"], "area_pixels": region["changed_pixels"],
          "max_change_prob": region["max_change_prob"],
          **{k: region[k] for k in ("min_x", "min_y", "max_x", "max_y")}}


def footprint(transform: tuple[float, ...], crs_wkt: str, height: int,
              width: int) -> shapely.Geometry | None:
  """The pair grid's outline in WGS84 lon/lat (edges densified), or None without a CRS."""
  if not crs_wkt:
    return None
  return _Georef(transform, crs_wkt).to_lonlat(box(0, 0, width, height))


class _Georef:
  """Maps pixel-space geometries to the capture CRS and to WGS84, and measures them."""

  def __init__(self, transform: tuple[float, ...] | None, crs_wkt: str):
    from pyproj import CRS, Transformer

    if transform is None or len(transform) < 6:
      raise ValueError(f"a georeferenced capture needs a 6-term transform, got {transform!r}")
    a, b, c, d, e, f = transform[:6]
    self.matrix = [a, b, d, e, c, f]
    self.pixel_area = abs(a * e - b * d)
    self.crs = CRS.from_wkt(crs_wkt)
    self.to_wgs84 = Transformer.from_crs(self.crs, "OGC:CRS84", always_xy=True)

  def to_map(self, pixel: shapely.Geometry) -> shapely.Geometry:
    return shapely.affinity.affine_transform(pixel, self.matrix)

  def to_lonlat(self, pixel: shapely.Geometry) -> shapely.Geometry:
    dense = shapely.segmentize(pixel, _MAX_EDGE_PX) if not pixel.is_empty else pixel
    lonlat = shapely.transform(self.to_map(dense), self._project)
    return _oriented(_polygonal(shapely.make_valid(lonlat)))

  def _project(self, xy: np.ndarray) -> np.ndarray:
    lon, lat = self.to_wgs84.transform(xy[:, 0], xy[:, 1])
    return np.column_stack([lon, lat])

  def area_m2(self, crs_geom: shapely.Geometry) -> float | None:
    if self.crs.is_geographic:
      return abs(self.crs.get_geod().geometry_area_perimeter(crs_geom)[0])
    if self.crs.is_projected:
      unit = self.crs.axis_info[0].unit_conversion_factor if self.crs.axis_info else 1.0
      return crs_geom.area * unit * unit
    return None

  def describe(self, pixel: shapely.Geometry, factor: int) -> dict:
    mapped = self.to_map(pixel)
    x0, y0, x1, y1 = mapped.bounds
    return {"area_m2": self.area_m2(mapped),
            "geometry_crs": shapely.to_wkt(mapped, rounding_precision=_MAP_DIGITS),
            "geometry": shapely.to_wkt(self.to_lonlat(pixel), rounding_precision=_LONLAT_DIGITS),
            "min_x": x0, "min_y": y0, "max_x": x1, "max_y": y1}


def _check(pooled: PooledMap) -> None:
  if pooled.factor < 1:
    raise ValueError(f"factor must be >= 1, got {pooled.factor}")
  cells = (-(-pooled.height // pooled.factor), -(-pooled.width // pooled.factor))
  for name in ("flagged", "valid", "prob_sum", "prob_max"):
    if getattr(pooled, name).shape != cells:
      raise ValueError(f"pooled.{name} has shape {getattr(pooled, name).shape}, the grid "
                       f"{pooled.height}x{pooled.width} at factor {pooled.factor} has {cells}")


def _outline(mask: np.ndarray, factor: int, row0: int, col0: int, grid: shapely.Geometry,
             tol: float) -> shapely.Geometry:
  """Pixel-space polygon of one region's cells (`mask` is its bounding box of cells)."""
  cell_to_pixel = Affine(factor, 0, col0 * factor, 0, factor, row0 * factor)
  parts = [shape(g) for g, _ in features.shapes(mask.astype(np.uint8), mask=mask, connectivity=8,
                                                transform=cell_to_pixel)]
  outline = shapely.union_all(parts).intersection(grid)
  if tol > 0:
    outline = outline.simplify(tol, preserve_topology=True)
  return _oriented(_polygonal(shapely.make_valid(outline)))


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
  """Only the areal parts of a geometry (make_valid may add stray lines or points)."""
  if geom.geom_type in ("Polygon", "MultiPolygon"):
    return geom
  polys = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
  flat = [p for g in polys for p in shapely.get_parts(g)]
  if not flat:
    return shapely.Polygon()
  return flat[0] if len(flat) == 1 else shapely.MultiPolygon(flat)


def _oriented(geom: shapely.Geometry) -> shapely.Geometry:
  """Exterior rings counter-clockwise, holes clockwise (RFC 7946's right-hand rule)."""
  return shapely.orient_polygons(geom, exterior_cw=False)

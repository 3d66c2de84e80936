"""A STAC catalogue of the sweeps: one Collection per output root, one Item per scored pair.

`OUT/stac/collection.json` and `OUT/stac/items/<pair_id>.json`, self-contained (relative links),
read and written through Beam's FileSystems so a gs:// root works too. A later night that
writes to the same root adds its items to the collection (an item of the same pair replaces the
old one) and widens the extent; the existing items are not re-read.

Each item: datetime = the after capture, start/end = before/after; geometry/bbox = the pair
grid's footprint in WGS84 (null without CRS); the scores, model and run as properties; the
change map as a COG asset with the `raster` (uint8, nodata 255, scale 1/254) and `projection`
(code, shape, transform) extensions; the before/after captures as source assets; the pair's
regions GeoJSON as an asset and a link.
"""
from __future__ import annotations

import datetime as dt
import posixpath
from typing import Iterable, NamedTuple

import pystac
from apache_beam.io.filesystems import FileSystems
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension

from changesweep.pipeline import geoio, polygons, times
from changesweep.pipeline.cog import COG_MEDIA_TYPE
from changesweep.pipeline.elements import PROB_NODATA, PROB_SCALE, safe_name

COLLECTION_ID = "changesweep"
STAC_DIR = "stac"
PROPERTIES = ("location", "valid_fraction", "changed_fraction", "changed_pixels",
              "mean_change_prob", "max_change_prob", "change_score", "threshold", "num_chips",
              "anomaly_score", "anomaly_method", "history_length", "model_id", "model_version",
              "run_id")
_WORLD = [-180.0, -90.0, 180.0, 90.0]
_SOURCE_TYPES = {".tif": pystac.MediaType.GEOTIFF, ".tiff": pystac.MediaType.GEOTIFF,
                 ".jp2": pystac.MediaType.JPEG2000}


class Grid(NamedTuple):
  """The pair grid of a change map: where its pixels sit on the ground.

  Attributes:
    transform: affine geotransform (a, b, c, d, e, f).
    crs_wkt: CRS as WKT ("" when not georeferenced).
    height, width: pixels.
  """
  transform: tuple[float, ...]
  crs_wkt: str
  height: int
  width: int


class BeamStacIO(pystac.stac_io.DefaultStacIO):
  """pystac I/O through Beam's FileSystems: local paths, gs:// and the other Beam schemes."""

  def read_text_from_href(self, href: str) -> str:
    with FileSystems.open(href) as f:
      return f.read().decode("utf-8")

  def write_text_to_href(self, href: str, txt: str) -> None:
    with FileSystems.create(href) as f:
      f.write(txt.encode("utf-8"))


def collection_href(output_root: str) -> str:
  return FileSystems.join(output_root, STAC_DIR, "collection.json")


def item_href(output_root: str, pair_id: str) -> str:
  return FileSystems.join(output_root, STAC_DIR, "items", f"{safe_name(pair_id)}.json")


def grid_of_map(uri: str) -> Grid:
  """The grid of a change map, from its header (local or through Beam's FileSystems)."""
  import rasterio

  opener = None if "://" not in uri else (lambda path, mode="rb": FileSystems.open(path))
  with rasterio.open(uri, opener=opener) as ds:
    return Grid(tuple(ds.transform)[:6], ds.crs.to_wkt() if ds.crs else "", ds.height, ds.width)


def _time(text: str) -> dt.datetime:
  return times.to_datetime(text).replace(tzinfo=dt.timezone.utc)


def _crs_code(crs_wkt: str) -> dict:
  """`proj:code` ("EPSG:n") where the CRS has one, else `proj:wkt2`."""
  from pyproj import CRS

  crs = CRS.from_user_input(crs_wkt)
  auth = crs.to_authority(min_confidence=90)
  return {"code": f"{auth[0]}:{auth[1]}"} if auth else {"code": None, "wkt2": crs.to_wkt()}


def make_item(row: dict, grid: Grid | None, regions_href: str | None = None) -> pystac.Item:
  """One pair row (`schemas.PAIRS`) -> its STAC Item (hrefs are set when saved).

  Args:
    row: the pair row.
    grid: the change map's grid; None reads nothing and leaves geometry and projection out.
    regions_href: the pair's regions GeoJSON, if written.
  """
  foot = polygons.footprint(grid.transform, grid.crs_wkt, grid.height, grid.width) if (
      grid and grid.crs_wkt) else None
  before, after = _time(row["before_captured_at"]), _time(row["after_captured_at"])
  props = {k: row.get(k) for k in PROPERTIES if k in row}
  props.update(start_datetime=pystac.utils.datetime_to_str(before),
               end_datetime=pystac.utils.datetime_to_str(after),
               num_regions=len(row.get("regions") or []))
  item = pystac.Item(id=row["pair_id"], geometry=foot.__geo_interface__ if foot else None,
                     bbox=list(foot.bounds) if foot else None, datetime=after,
                     properties=props, collection=None)
  if grid is not None:
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.apply(shape=[grid.height, grid.width], transform=list(grid.transform[:6]),
               **(_crs_code(grid.crs_wkt) if grid.crs_wkt else {"code": None}))
  if row.get("change_map_uri"):
    asset = pystac.Asset(row["change_map_uri"], title="change probability",
                         description="uint8: probability x 254 (scale 1/254), 255 = nodata",
                         media_type=COG_MEDIA_TYPE, roles=["data"])
    item.add_asset("change_map", asset)
    RasterExtension.ext(asset, add_if_missing=True).apply([RasterBand.create(
        nodata=PROB_NODATA, scale=1.0 / PROB_SCALE, offset=0.0, data_type=DataType.UINT8,
        sampling="area", unit="probability")])
  for name in ("before", "after"):
    for i, uri in enumerate(filter(None, (row.get(f"{name}_uri") or "").split(";"))):
      media = _SOURCE_TYPES.get(posixpath.splitext(uri)[1].lower())
      item.add_asset(name if i == 0 else f"{name}_{i + 1}", pystac.Asset(
          uri, title=f"{name} capture", media_type=media, roles=["source"]))
  if regions_href:
    item.add_asset("regions", pystac.Asset(regions_href, title="change regions",
                                           media_type=pystac.MediaType.GEOJSON, roles=["data"]))
    item.add_link(pystac.Link("related", regions_href, media_type=pystac.MediaType.GEOJSON,
                              title="change regions (GeoJSON)"))
  return item


def _new_collection(description: str) -> pystac.Collection:
  extent = pystac.Extent(pystac.SpatialExtent([_WORLD]), pystac.TemporalExtent([[None, None]]))
  return pystac.Collection(COLLECTION_ID, description, extent, title="changesweep change maps",
                           license="other", catalog_type=pystac.CatalogType.SELF_CONTAINED)


def _widen(collection: pystac.Collection, items: list[pystac.Item], fresh: bool) -> None:
  """Unions the collection's extent with the items' (a fresh collection takes theirs)."""
  boxes = [i.bbox for i in items if i.bbox]
  old = collection.extent.spatial.bboxes[0]
  if boxes:
    if not fresh and old != _WORLD:
      boxes.append(old)
    collection.extent.spatial.bboxes = [[min(b[0] for b in boxes), min(b[1] for b in boxes),
                                         max(b[2] for b in boxes), max(b[3] for b in boxes)]]
  times = [t for i in items for t in (_time(i.properties["start_datetime"]),
                                      _time(i.properties["end_datetime"]))]
  start, end = collection.extent.temporal.intervals[0]
  times += [t for t in (start, end) if t is not None and not fresh]
  collection.extent.temporal.intervals = [[min(times), max(times)]]


def write_stac(output_root: str, pair_rows: Iterable[dict], *,
               grids: dict[str, Grid] | None = None, read_grids: bool = True,
               description: str = "Change-probability maps of consecutive captures, "
                                  "scored by changesweep.") -> str:
  """Adds an Item per pair row to `OUT/stac/collection.json` (creating it), and saves.

  Args:
    output_root: the sweep's output root (local or gs://).
    pair_rows: the run's pair rows (`schemas.PAIRS`).
    grids: the pair grid per pair id (the after capture's transform, CRS, size); pairs
      missing here take it from their change map's header when `read_grids`.
    read_grids: open change maps for grids not given.
    description: the collection's description (used when creating it).

  Returns:
    The collection's href.
  """
  io = BeamStacIO()
  href = collection_href(output_root)
  fresh = not FileSystems.exists(href)
  collection = _new_collection(description) if fresh else pystac.Collection.from_file(
      href, stac_io=io)
  collection.catalog_type = pystac.CatalogType.SELF_CONTAINED
  collection.set_self_href(href)
  grids = grids or {}
  items = []
  for row in pair_rows:
    grid = grids.get(row["pair_id"])
    if grid is None and read_grids and row.get("change_map_uri"):
      grid = grid_of_map(row["change_map_uri"])
    regions = geoio.pair_geojson_path(output_root, row["pair_id"])
    items.append(make_item(row, grid, regions if FileSystems.exists(regions) else None))
  items = list({item.id: item for item in items}.values())  # a pair listed twice: its last row
  # an item of a pair already catalogued replaces it (one pass over the existing links)
  targets = {item_href(output_root, item.id) for item in items}
  collection.links = [ln for ln in collection.links
                      if not (ln.rel == "item" and ln.get_absolute_href() in targets)]
  for item in items:
    collection.add_item(item)
    item.set_self_href(item_href(output_root, item.id))
  if items:
    _widen(collection, items, fresh)
  for item in items:
    item.save_object(include_self_link=False, stac_io=io)
  collection.save_object(include_self_link=False, stac_io=io)
  return href

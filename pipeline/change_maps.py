"""Change maps written window by window: chip tiles where they are scored, one GeoTIFF per pair.

No worker ever holds a whole map: each scored chip's core is stored as a small tile next to
the output, and the pair's map is assembled tile by tile into a tiled GeoTIFF on local disk
(GDAL writes it block by block), then copied to its destination as a Cloud-Optimized GeoTIFF.
"""
from __future__ import annotations

import io
import os
import shutil
import tempfile

import numpy as np
from apache_beam.io.filesystems import FileSystems

from changesweep.pipeline.elements import PROB_NODATA, PROB_SCALE, Pair, safe_name
from changesweep.transforms import tiling

def map_path(output: str, pair: Pair) -> str:
  """Where a pair's change map goes: always under `output`, whatever the location id says."""
  return FileSystems.join(output, "maps", safe_name(pair.location), f"{pair.pair_id}.tif")


def tiles_dir(output: str, pair_id: str) -> str:
  return FileSystems.join(output, "maps", "_tiles", safe_name(pair_id))


def tile_path(output: str, pair_id: str, index: int) -> str:
  return FileSystems.join(tiles_dir(output, pair_id), f"{index:06d}.npy")


def write_tile(path: str, tile: np.ndarray) -> None:
  buf = io.BytesIO()
  np.save(buf, np.ascontiguousarray(tile, np.uint8), allow_pickle=False)
  with FileSystems.create(path) as f:
    f.write(buf.getvalue())


def read_tile(path: str) -> np.ndarray:
  with FileSystems.open(path) as f:
    return np.load(io.BytesIO(f.read()), allow_pickle=False)


def map_profile(pair: Pair) -> dict:
  import rasterio

  h, w = pair.height, pair.width
  profile = dict(driver="GTiff", height=h, width=w, count=1, dtype="uint8", nodata=PROB_NODATA,
                 compress="deflate", tiled=h >= 256 and w >= 256, blockxsize=256,
                 blockysize=256)
  if pair.crs:
    profile.update(crs=rasterio.crs.CRS.from_wkt(pair.crs),
                   transform=rasterio.Affine(*pair.transform))
  return profile


def assemble_map(output: str, pair: Pair, chip_size: int, overlap: int) -> str:
  """Writes the pair's map from its chip tiles and removes the tiles; returns the map's uri.

  Band 1 is the change probability x 254 (scale metadata set), 255 is nodata; the grid and
  CRS are the after capture's. The file is a COG (tiled, overviews, deflate).
  """
  import rasterio

  from changesweep.pipeline import cog

  uri = map_path(output, pair)
  grid = tiling.chip_grid(pair.height, pair.width, chip_size, overlap)
  tmp = tempfile.mkdtemp(prefix="changesweep-map-")
  try:
    local = os.path.join(tmp, "map.tif")
    with rasterio.open(local, "w", **map_profile(pair)) as dst:
      for chip in grid:
        tile = read_tile(tile_path(output, pair.pair_id, chip.index))
        dst.write(tile[None], window=rasterio.windows.Window(
            chip.core_col0, chip.core_row0, chip.core_col1 - chip.core_col0,
            chip.core_row1 - chip.core_row0))
      dst.scales = (1.0 / PROB_SCALE,)
      dst.set_band_description(1, "change_probability")
      dst.update_tags(pair_id=pair.pair_id, before=pair.before.uri, after=pair.after.uri,
                      before_captured_at=pair.before.captured_at,
                      after_captured_at=pair.after.captured_at)
    cog.to_cog(local, uri)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  delete_tiles(output, pair.pair_id)
  return uri


def delete_tiles(output: str, pair_id: str) -> None:
  folder = tiles_dir(output, pair_id)
  try:
    found = FileSystems.match([FileSystems.join(folder, "*.npy")])[0].metadata_list
    if found:
      FileSystems.delete([m.path for m in found])
    if "://" not in folder and os.path.isdir(folder):
      os.rmdir(folder)
  except Exception:  # tiles are scratch: a leftover must never fail the pair
    pass


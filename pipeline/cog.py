"""Finished change maps -> Cloud-Optimized GeoTIFFs (tiled, internal overviews, deflate).

GDAL's COG driver only copies a finished dataset, so the map is first written window by window
as a plain tiled GeoTIFF and then converted here. The encoding is kept: uint8, 0..254 =
probability x 254 (scale 1/254, offset 0), 255 = nodata, band description and tags.

Overviews use AVERAGE resampling: an overview pixel is the mean change probability of the valid
pixels below it, a faithful downsample of a probability field; NEAREST would show or hide a
small change depending on which pixel it happens to sample. GDAL leaves nodata pixels out of
the average (the band's nodata is set), and a mean of 0..254 values stays <= 254, so 255 never
leaks into a valid overview pixel and an all-nodata block stays 255.
"""
from __future__ import annotations

import os
import shutil
import tempfile

from apache_beam.io.filesystems import FileSystems

OVERVIEW_RESAMPLING = "AVERAGE"
# 256 px tiles: the size web maps request, and the tiles the sweep writes before conversion.
BLOCKSIZE = 256
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
_CHUNK = 16 << 20


def _is_local(uri: str) -> bool:
  return "://" not in uri or uri.startswith("file://")


def _local(uri: str) -> str:
  return uri[len("file://"):] if uri.startswith("file://") else uri


def _copy_stream(src, dst) -> None:
  while chunk := src.read(_CHUNK):
    dst.write(chunk)


def to_cog(src_path: str, dst_uri: str, *, blocksize: int = BLOCKSIZE,
           resampling: str = OVERVIEW_RESAMPLING) -> str:
  """Converts a finished GeoTIFF into a COG at `dst_uri` (a local path or gs://...).

  Remote sources are downloaded to a temporary file first, and remote destinations are
  written locally and then uploaded through Beam's FileSystems (GDAL writes the COG in one
  sequential pass but needs a real file to assemble it).

  Args:
    src_path: the finished (tiled) GeoTIFF.
    dst_uri: where the COG goes; may equal `src_path` (replaced in place).
    blocksize: internal tile side in pixels.
    resampling: overview resampling (GDAL name); AVERAGE by default, see the module doc.

  Returns:
    `dst_uri`.

  Raises:
    FileNotFoundError: `src_path` does not exist.
  """
  import rasterio
  import rasterio.shutil

  if not FileSystems.exists(src_path):
    raise FileNotFoundError(f"no change map at {src_path}")
  with tempfile.TemporaryDirectory(prefix="cog-") as tmp:
    src = _local(src_path)
    if not _is_local(src_path):
      src = os.path.join(tmp, "src.tif")
      with FileSystems.open(src_path) as fin, open(src, "wb") as fout:
        _copy_stream(fin, fout)
    out = os.path.join(tmp, "cog.tif")
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
      with rasterio.open(src) as ds:
        rasterio.shutil.copy(ds, out, driver="COG", compress="DEFLATE", predictor="YES",
                             blocksize=blocksize, overview_resampling=resampling,
                             overviews="AUTO", bigtiff="IF_SAFER")
    if _is_local(dst_uri):
      dst = _local(dst_uri)
      os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
      shutil.move(out, dst)
    else:
      with open(out, "rb") as fin, FileSystems.create(dst_uri) as fout:
        _copy_stream(fin, fout)
  return dst_uri


def is_cog(path: str) -> bool:
  """Whether GDAL reports the file's layout as COG (what `gdalinfo` shows as LAYOUT=COG)."""
  import rasterio

  with rasterio.open(path) as ds:
    return ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"

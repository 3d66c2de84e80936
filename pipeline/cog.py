"""Cloud-Optimized GeoTIFFs: GDAL's COG driver copies a finished tiled file (block by block)."""
from __future__ import annotations

import os
import tempfile


def to_cog(src_path: str, dst_uri: str) -> None:
  """Converts a finished local GeoTIFF into a COG at `dst_uri` (local or any Beam filesystem)."""
  import rasterio
  import rasterio.shutil

  from apache_beam.io.filesystems import FileSystems

  with tempfile.TemporaryDirectory(prefix="changesweep-cog-") as tmp:
    local = os.path.join(tmp, "cog.tif")
    with rasterio.open(src_path) as src:
      rasterio.shutil.copy(src, local, driver="COG", compress="DEFLATE", overview_resampling="nearest")
    with open(local, "rb") as f, FileSystems.create(dst_uri) as dst:
      while chunk := f.read(8 << 20):
        dst.write(chunk)

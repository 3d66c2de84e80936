"""Cloud-Optimized GeoTIFFs: GDAL's COG driver copies a finished tiled file (block by block)."""
from __future__ import annotations

import os
import tempfile


def to_cog(src_path: str, dst_uri: str) -> None:
  """Converts a finished local GeoTIFF into a COG at `dst_uri` (local or any Beam filesystem)."""
  import rasterio
  import rasterio.shutil

  from changesweep.pipeline.change_maps import copy_to

  with tempfile.TemporaryDirectory(prefix="changesweep-cog-") as tmp:
    local = os.path.join(tmp, "cog.tif")
    with rasterio.open(src_path) as src:
      rasterio.shutil.copy(src, local, driver="COG", compress="DEFLATE", overview_resampling="nearest")
    copy_to(local, dst_uri)

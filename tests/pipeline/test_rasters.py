"""`WindowReader.read`: one read for a file's bands gives what reading them one by one gave."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from changesweep.pipeline.rasters import WindowReader
from tests.rasters import scene, write_raster


def _files(tmp_path) -> dict[str, tuple[str, float | None]]:
  """Each kind of validity a capture can carry, as `name -> (path, nodata)`."""
  data = scene(3)  # [4, 64, 80] uint16
  holes = data.copy()
  holes[:, 10:20, 5:30] = 0
  floats = data.astype(np.float32)
  floats[1, 30:34, 40:50] = np.nan
  floats[2, 0:3, :] = np.inf
  files = {
      "plain": (write_raster(str(tmp_path / "plain.tif"), data), None),
      "nodata": (write_raster(str(tmp_path / "nodata.tif"), holes, nodata=0), 0.0),
      "float_nan": (write_raster(str(tmp_path / "float.tif"), floats), None),
  }
  masked = str(tmp_path / "masked.tif")
  write_raster(masked, data)
  with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
    with rasterio.open(masked, "r+") as dst:
      mask = np.full((64, 80), 255, np.uint8)
      mask[40:, 60:] = 0
      dst.write_mask(mask)
  files["internal_mask"] = (masked, None)
  return files


@pytest.mark.parametrize("bands", [(0, 1, 2, 3), (2, 1, 0), (3,)])
def test_one_read_per_file_gives_the_band_by_band_pixels_and_validity(tmp_path, bands):
  reader = WindowReader()
  for name, (path, nodata) in _files(tmp_path).items():
    for window in (Window(0, 0, 64, 64), Window(16, 8, 64, 56), Window(70, 50, 10, 14)):
      got, valid = reader.read((path,), bands, window, nodata)
      want, want_valid = reader._read_planes((path,), bands, window, nodata, None, "bilinear")
      assert got.shape == want.shape == (window.height, window.width, len(bands)), name
      assert got.dtype == np.float32
      np.testing.assert_array_equal(got, want, err_msg=name)
      np.testing.assert_array_equal(valid, want_valid, err_msg=name)
      if window.col_off == 0 and name != "plain" and not (name == "float_nan" and bands == (3,)):
        assert not valid.all(), name  # the holes are in this window (and in the bands read)
  reader.close()

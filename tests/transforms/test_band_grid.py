"""One grid for a capture's band files: the finest, bilinear, the same in the sweep and training."""
import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import Affine

from changesweep.transforms.band_grid import (BandGridError, Grid, finest,
                                              read_on_finest_grid)
from tests.rasters import GRID, UTM, write_raster

X0, Y0 = GRID.c, GRID.f
CRS_WKT = rasterio.crs.CRS.from_string(UTM).to_wkt()


def grid(res, h, w, x0=X0, y0=Y0, crs=CRS_WKT):
  return Grid(crs, (res, 0.0, x0, 0.0, -res, y0), h, w)


@pytest.mark.parametrize("grids,expected", [
    ([grid(10, 40, 40)] * 3, 0),
    ([grid(20, 20, 20), grid(10, 40, 40), grid(60, 7, 7, y0=Y0 - 10)], 1),  # S2 10/20/60 m
    ([grid(10, 40, 40), grid(20, 20, 20, x0=X0 + 9.9)], 0),  # within half a coarse pixel
    ([Grid("", (1, 0, 0, 0, 1, 0), 8, 8)] * 2, 0),  # no georeference, one grid
])
def test_finest_is_the_finest_grid_of_one_extent(grids, expected):
  assert finest(grids) == expected


@pytest.mark.parametrize("grids,reason", [
    ([grid(10, 40, 40), grid(20, 20, 20, x0=X0 + 10.1)], "different extents"),
    ([grid(10, 40, 40), grid(20, 10, 20)], "different extents"),
    ([grid(10, 40, 40), grid(10, 40, 40, crs=rasterio.crs.CRS.from_epsg(32632).to_wkt())],
     "different CRSs"),
    ([Grid("", (1, 0, 0, 0, 1, 0), 8, 8), Grid("", (1, 0, 0, 0, 1, 0), 4, 4)],
     "no georeference"),
    ([grid(10, 90, 90), grid(100, 9, 9)], "factor 10.00"),
    ([], "at least one file"),
])
def test_files_that_cannot_share_a_grid_say_why(grids, reason):
  with pytest.raises(BandGridError, match=reason):
    finest(grids)


def test_coarse_bands_are_read_bilinear_onto_the_finest_grid(tmp_path):
  rng = np.random.default_rng(0)
  fine = rng.uniform(100, 200, (1, 40, 40)).astype(np.float32)
  coarse = rng.uniform(1000, 2000, (1, 20, 20)).astype(np.float32)
  paths = [write_raster(str(tmp_path / "B04.tif"), fine, descriptions=("B04",)),
           write_raster(str(tmp_path / "B11.tif"), coarse, descriptions=("B11",),
                        transform=Affine(20.0, 0.0, X0, 0.0, -20.0, Y0))]
  out = read_on_finest_grid(paths)
  assert out.pixels.shape == (40, 40, 2) and out.descriptions == ["B04", "B11"]
  assert out.grid == grid(10.0, 40, 40) and out.counts == [1, 1]
  np.testing.assert_array_equal(out.pixels[..., 0], fine[0])
  # GDAL's bilinear: each fine pixel centre interpolates the four nearest coarse centres.
  with rasterio.open(paths[1]) as src:
    reference = src.read(1, out_shape=(40, 40), resampling=Resampling.bilinear)
  np.testing.assert_allclose(out.pixels[..., 1], reference, rtol=1e-5)
  inner = out.pixels[1:-1, 1:-1, 1]
  expected = 0.75 * (0.75 * coarse[0, 0, 0] + 0.25 * coarse[0, 0, 1]) + 0.25 * (
      0.75 * coarse[0, 1, 0] + 0.25 * coarse[0, 1, 1])
  np.testing.assert_allclose(inner[0, 0], expected, rtol=1e-5)  # fine pixel (1, 1)


def test_a_file_off_the_extent_is_refused(tmp_path):
  paths = [write_raster(str(tmp_path / "B04.tif"), np.ones((1, 8, 8), np.uint16)),
           write_raster(str(tmp_path / "B11.tif"), np.ones((1, 4, 4), np.uint16))]  # 10 m, 4x4
  with pytest.raises(BandGridError, match="different extents"):
    read_on_finest_grid(paths)

"""The issue-17 archive: the 10 OSCD test cities with their later capture on another grid.

  python bench/grids_oscd.py OSCD_TEST_DIR OUT_DIR [--one_grid ONE_GRID_DIR]

For every city, OUT_DIR/<city>/<date>.tif holds 4 bands (B02, B03, B04, B08, described, uint16):
- the earlier capture on the shared files' own grid (EPSG:4326, the shape of the change mask
  cm.png), so maps on the default `--grid earlier` sit on the label grid and
  ../shared/tools/score_sweep.py can score them;
- the later capture reprojected (bilinear) to its UTM zone at 10 m, its grid origin moved by a
  fraction of a pixel (+0.37 px east, +0.61 px south) and cut shorter (the southern 8% of the rows
  dropped); pixels outside the source footprint are 0, the file's nodata.
OUT_DIR/experiment.json records each city's grids (outside the `{location}/{date}.tif` layout).
With --one_grid, ONE_GRID_DIR/<city>/<date>.tif holds both captures on the earlier grid, the
same bands and values: the baseline the issue's closing note compares against.
"""
from __future__ import annotations

import argparse
import warnings
import json
import math
import pathlib

import numpy as np
import rasterio
from rasterio import warp
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import Affine

BANDS = ("B02", "B03", "B04", "B08")
RESOLUTION = 10.0
SHIFT_PX = (0.37, 0.61)  # origin moved east and south, in target pixels
CUT_ROWS = 0.08  # share of rows dropped at the southern edge
NODATA = 0


def dates(city: pathlib.Path) -> list[str]:
  """The city's two capture dates as ISO strings (from dates.txt, YYYYMMDD)."""
  pairs = dict(line.split(": ") for line in (city / "dates.txt").read_text().splitlines()
               if ": " in line)
  return [f"{d[:4]}-{d[4:6]}-{d[6:8]}" for d in (pairs["date_1"].strip(),
                                                 pairs["date_2"].strip())]


def read_capture(city: pathlib.Path, index: int, shape: tuple[int, int]):
  """The 4 bands of one date on the 10 m grid, as make_anyband.py reads them."""
  planes = []
  for name in BANDS:
    with rasterio.open(city / f"imgs_{index}" / f"{name}.tif") as src:
      planes.append(src.read(1, out_shape=shape, resampling=Resampling.bilinear))
      crs, transform = src.crs, src.transform * Affine.scale(src.width / shape[1],
                                                             src.height / shape[0])
  return np.stack(planes), crs, transform


def utm_crs(crs: CRS, transform: Affine, shape: tuple[int, int]) -> CRS:
  """The UTM zone (north or south) of the capture's centre."""
  x, y = transform * (shape[1] / 2, shape[0] / 2)
  lon, lat = warp.transform(crs, "EPSG:4326", [x], [y])
  zone = int(math.floor((lon[0] + 180) / 6)) + 1
  return CRS.from_epsg((32600 if lat[0] >= 0 else 32700) + zone)


def later_grid(crs: CRS, transform: Affine, shape: tuple[int, int], dst_crs: CRS
               ) -> tuple[Affine, int, int]:
  """A 10 m grid in `dst_crs` over the footprint, moved by SHIFT_PX and cut shorter."""
  left, bottom, right, top = rasterio.transform.array_bounds(*shape, transform)
  dst, width, height = warp.calculate_default_transform(crs, dst_crs, shape[1], shape[0], left,
                                                        bottom, right, top,
                                                        resolution=RESOLUTION)
  moved = dst * Affine.translation(*SHIFT_PX)
  return moved, width, int(round(height * (1 - CUT_ROWS)))


def write(path: pathlib.Path, data: np.ndarray, crs: CRS, transform: Affine,
          nodata: float | None) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2],
                     count=data.shape[0], dtype="uint16", crs=crs, transform=transform,
                     nodata=nodata, compress="deflate", tiled=True, blockxsize=256,
                     blockysize=256) as dst:
    dst.write(data.astype("uint16"))
    dst.descriptions = BANDS


def make_city(city: pathlib.Path, out: pathlib.Path, one_grid: pathlib.Path | None) -> dict:
  """Writes one city's two captures; returns what was done."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
    with rasterio.open(city / "cm.png") as mask:  # the label grid: no georeference of its own
      shape = mask.shape
  first, second = dates(city)
  before, crs, transform = read_capture(city, 1, shape)
  after, _, _ = read_capture(city, 2, shape)
  write(out / city.name / f"{first}.tif", before, crs, transform, None)
  dst_crs = utm_crs(crs, transform, shape)
  dst_transform, width, height = later_grid(crs, transform, shape, dst_crs)
  warped = np.zeros((len(BANDS), height, width), np.uint16)
  warp.reproject(after, warped, src_transform=transform, src_crs=crs, dst_transform=dst_transform,
                 dst_crs=dst_crs, resampling=Resampling.bilinear, dst_nodata=NODATA)
  write(out / city.name / f"{second}.tif", warped, dst_crs, dst_transform, NODATA)
  if one_grid is not None:
    write(one_grid / city.name / f"{first}.tif", before, crs, transform, None)
    write(one_grid / city.name / f"{second}.tif", after, crs, transform, None)
  return {"location": city.name, "before": f"{city.name}/{first}.tif",
          "after": f"{city.name}/{second}.tif", "before_crs": crs.to_string(),
          "before_shape": list(shape), "after_crs": dst_crs.to_string(),
          "after_shape": [height, width], "after_transform": list(dst_transform)[:6],
          "after_valid_fraction": round(float((warped[0] != NODATA).mean()), 4)}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("oscd_test", type=pathlib.Path)
  parser.add_argument("out", type=pathlib.Path)
  parser.add_argument("--one_grid", type=pathlib.Path, default=None,
                      help="also write both captures on the earlier grid here (the baseline)")
  args = parser.parse_args(argv)
  cities = sorted(p for p in args.oscd_test.iterdir() if (p / "dates.txt").exists())
  records = [make_city(c, args.out, args.one_grid) for c in cities]
  (args.out / "experiment.json").write_text(json.dumps(
      {"what": "later capture reprojected to UTM at 10 m, origin moved by a fraction of a pixel, "
               "cut shorter", "shift_px": SHIFT_PX, "cut_rows": CUT_ROWS, "bands": BANDS,
       "cities": records}, indent=1))
  print(json.dumps({"cities": len(records), "out": str(args.out)}))


if __name__ == "__main__":
  main()

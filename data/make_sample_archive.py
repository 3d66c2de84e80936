"""Writes the sample archive that ships with the repo, from the OSCD test cities.

Each city's two Sentinel-2 captures (bands B02, B03, B04, B08 at 10 m, top-of-atmosphere
digital numbers) become 4-band GeoTIFFs under `sample_archive/{location}/{date}.tif`, cropped to
the window with the most labelled change, and the OSCD change mask of the same window goes to
`sample_labels/{location}.png` (outside the archive, so a sweep never lists it).

OSCD ships these bands without georeferencing; each city's GeoJSON gives its footprint, so the
crops are placed on a 10 m UTM grid at the footprint's corner (approximate, good to a few pixels).

    python data/make_sample_archive.py --oscd ../shared/data/oscd
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import rasterio
from rasterio.transform import Affine
from rasterio.warp import transform as warp_transform

CITIES = ("dubai", "lasvegas", "montpellier", "rio")
BANDS = ("B02", "B03", "B04", "B08")
CROP = (300, 360)  # rows, cols: a 2x2 grid of 256 px chips with overlap
HERE = os.path.dirname(os.path.abspath(__file__))


def best_window(mask: np.ndarray, rows: int, cols: int, step: int = 8) -> tuple[int, int]:
  """Top-left corner of the `rows` x `cols` window holding the most change pixels."""
  integral = np.pad((mask == 255).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
  best, where = -1, (0, 0)
  for r in range(0, mask.shape[0] - rows + 1, step):
    for c in range(0, mask.shape[1] - cols + 1, step):
      total = (integral[r + rows, c + cols] - integral[r, c + cols] - integral[r + rows, c]
               + integral[r, c])
      if total > best:
        best, where = total, (r, c)
  return where


def utm_grid(geojson_path: str) -> tuple[str, Affine]:
  """A 10 m UTM transform whose origin is the north-west corner of the city's footprint."""
  with open(geojson_path) as f:
    ring = json.load(f)["features"][0]["geometry"]["coordinates"][0]
  lons, lats = zip(*ring)
  lon0, lat0 = min(lons), max(lats)
  zone = int((lon0 + 180) // 6) + 1
  crs = f"EPSG:{32600 + zone if lat0 >= 0 else 32700 + zone}"
  (x,), (y,) = warp_transform("EPSG:4326", crs, [lon0], [lat0])
  return crs, Affine(10.0, 0.0, round(x), 0.0, -10.0, round(y))


def write_city(oscd: str, city: str, out: str, labels: str) -> None:
  src_dir = os.path.join(oscd, "test", city)
  with rasterio.open(os.path.join(src_dir, "cm.png")) as m:
    mask = m.read(1)
  rows, cols = CROP
  r0, c0 = best_window(mask, rows, cols)
  crs, grid = utm_grid(os.path.join(src_dir, f"{city}.geojson"))
  transform = grid * Affine.translation(c0, r0)
  with open(os.path.join(src_dir, "dates.txt")) as f:
    dates = [line.split(":")[1].strip() for line in f if ":" in line]
  os.makedirs(os.path.join(out, city), exist_ok=True)
  for t, date in enumerate(dates, start=1):
    stack = []
    for band in BANDS:
      with rasterio.open(os.path.join(src_dir, f"imgs_{t}", f"{band}.tif")) as b:
        stack.append(b.read(1)[r0:r0 + rows, c0:c0 + cols])
    path = os.path.join(out, city, f"{date[:4]}-{date[4:6]}-{date[6:]}.tif")
    profile = dict(driver="GTiff", height=rows, width=cols, count=len(BANDS), dtype="uint16",
                   crs=crs, transform=transform, nodata=0, compress="deflate", predictor=2,
                   tiled=True, blockxsize=128, blockysize=128)
    with rasterio.open(path, "w", **profile) as dst:
      dst.write(np.stack(stack))
      dst.descriptions = BANDS
      dst.update_tags(SOURCE="OSCD test split (Daudt et al. 2018), Copernicus Sentinel-2 L1C",
                      CITY=city, DATE=date)
  os.makedirs(labels, exist_ok=True)
  with rasterio.open(os.path.join(labels, f"{city}.png"), "w", driver="PNG", height=rows,
                     width=cols, count=1, dtype="uint8") as dst:
    dst.write(mask[r0:r0 + rows, c0:c0 + cols][None])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--oscd", required=True, help="the OSCD folder (with test/<city>/)")
  parser.add_argument("--out", default=os.path.join(HERE, "sample_archive"))
  parser.add_argument("--labels", default=os.path.join(HERE, "sample_labels"))
  args = parser.parse_args()
  for city in CITIES:
    write_city(args.oscd, city, args.out, args.labels)


if __name__ == "__main__":
  main()

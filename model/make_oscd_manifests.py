"""Writes the labelled-pair manifests of the OSCD dataset (RGB renderings).

Paths in the manifests are relative to the data root that holds `oscd/` (in this repository
`../shared/data`), so the files carry no machine paths; pass that root as `--data_root` to
`changesweep train` / `changesweep evaluate`.

OSCD: Daudt, Le Saux, Boulch, Gousseau, "Urban Change Detection for Multispectral Earth
Observation Using Convolutional Neural Networks", IGARSS 2018. Contains modified Copernicus
Sentinel data [2015-2018].

Also writes `oscd_test_s2.csv`: the test cities with the Sentinel-2 bands B04;B03;B02
(red, green, blue; uint16 digital numbers, one file per band) instead of the RGB renderings,
for `changesweep evaluate --normalization pair`; `oscd_test_s2_4.csv` / `oscd_test_s2_13.csv`
with B02;B03;B04;B08 / all 13 bands; and `oscd_train_s2_4.csv`, the train cities with
B02;B03;B04;B08 (the 10 m bands, on the grid of `cm.tif`), for training a fixed-band
Sentinel-2 model.

Usage:
  python -m changesweep.model.make_oscd_manifests --data_root ../shared/data --out model/manifests
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

# Train masks are cm.tif with 1 = no change, 2 = change; test masks cm.png with 0 / 255.
SPLITS = {
    "train": ("cm.tif", 2, 1),
    "test": ("cm.png", 255, 0),
}


def manifest_rows(data_root: str, split: str) -> list[dict[str, str]]:
  """Rows of one split's manifest, paths relative to `data_root`.

  Raises:
    FileNotFoundError: If the split folder or a city's files are missing.
  """
  mask_name, change, nochange = SPLITS[split]
  base = os.path.join(data_root, "oscd", split)
  if not os.path.isdir(base):
    raise FileNotFoundError(f"no OSCD {split} folder at {base}")
  rows = []
  for city in sorted(os.listdir(base)):
    folder = os.path.join(base, city)
    if not os.path.isdir(folder):
      continue
    rel = f"oscd/{split}/{city}"
    for name in ("img1.png", "img2.png", mask_name):
      if not os.path.exists(os.path.join(folder, name)):
        raise FileNotFoundError(f"{os.path.join(folder, name)} is missing")
    rows.append({"pair_id": city, "before": f"{rel}/img1.png", "after": f"{rel}/img2.png",
                 "mask": f"{rel}/{mask_name}", "change_value": str(change),
                 "nochange_value": str(nochange)})
  if not rows:
    raise FileNotFoundError(f"no cities under {base}")
  return rows


S2_4 = ("B02", "B03", "B04", "B08")
S2_13 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
         "B12")
# manifest name -> (split, Sentinel-2 bands in the order the captures list them)
S2_VARIANTS = {"oscd_test_s2.csv": ("test", ("B04", "B03", "B02")),
               "oscd_test_s2_4.csv": ("test", S2_4),
               "oscd_test_s2_13.csv": ("test", S2_13),
               "oscd_train_s2_4.csv": ("train", S2_4)}


def band_rows(rows: list[dict[str, str]], bands: tuple[str, ...]) -> list[dict[str, str]]:
  """`rows` with each capture replaced by its single-band files `imgs_1|imgs_2/<BAND>.tif`."""
  out = []
  for row in rows:
    row = dict(row)
    for column, folder in (("before", "imgs_1"), ("after", "imgs_2")):
      base = os.path.dirname(row[column])
      row[column] = ";".join(f"{base}/{folder}/{band}.tif" for band in bands)
    out.append(row)
  return out


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_root", default="../shared/data",
                      help="directory holding oscd/ (default: ../shared/data)")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "manifests"))
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  os.makedirs(args.out, exist_ok=True)
  for split in SPLITS:
    rows = manifest_rows(args.data_root, split)
    path = os.path.join(args.out, f"oscd_{split}.csv")
    with open(path, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
      writer.writeheader()
      writer.writerows(rows)
    print(f"wrote {path}: {len(rows)} pairs")
  # Every city also has all 13 Sentinel-2 bands as single-band uint16 files (10/20/60 m;
  # readers resample them onto the 10 m grid).
  for name, (split, bands) in S2_VARIANTS.items():
    rows = band_rows(manifest_rows(args.data_root, split), bands)
    path = os.path.join(args.out, name)
    with open(path, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
      writer.writeheader()
      writer.writerows(rows)
    print(f"wrote {path}: {len(rows)} pairs (Sentinel-2 {';'.join(bands)} digital numbers)")
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Band codes of a capture for the any-band model, and reading a capture onto one grid.

`band_code(name)` names bands the way the sweep does (`changesweep.transforms.bands`).
Unnamed bands are never guessed:
a single unnamed band is a band of unknown identity, a 3-band PNG/JPEG is red, green, blue by
the format's own definition, anything else needs `--bands`.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from changesweep.transforms import bands as band_ids
from changesweep.transforms import normalization as norm

INDEX_NAMES = {"ndvi": ("B08", "B04"), "ndwi": ("B03", "B08"), "nbr": ("B08", "B12")}
UNKNOWN_NAMES = ("unknown",)
RGB_DRIVERS = ("PNG", "JPEG")


class BandInputError(ValueError):
  """A capture's bands cannot be fed to the model (one line, shown to the user)."""


def band_code(name: str | None) -> float | None:
  """The band_code of a band name or description, or None when it names no band a model reads.

  Identification is the sweep's (`changesweep.transforms.bands.identify`), so evaluate and the
  sweep name bands alike; the word "unknown" names a band of unknown identity.
  """
  if name and name.strip().lower() in UNKNOWN_NAMES:
    return norm.CODE_UNKNOWN
  identity = band_ids.identify(name)
  if identity is None or identity.kind == "mask":
    return None
  return band_ids.band_code(identity)


def capture_codes(names: Sequence[str | None], driver: str | None = None) -> list[float]:
  """Band codes of a capture from its band names (descriptions), never by guessing roles.

  Raises:
    BandInputError: some or all of several bands are unnamed (and the file is no RGB image).
  """
  codes = [band_code(n) for n in names]
  if all(c is not None for c in codes):
    return [float(c) for c in codes]
  if all(c is None for c in codes):
    if len(codes) == 1:
      return [norm.CODE_UNKNOWN]
    if len(codes) == 3 and (driver or "").upper() in RGB_DRIVERS:
      return [norm.S2_WAVELENGTHS[b] for b in ("B04", "B03", "B02")]
    raise BandInputError(f"capture has {len(codes)} unnamed bands; name them with --bands "
                         "(e.g. --bands B02,B03,B04,B08) or band descriptions")
  unnamed = [i + 1 for i, c in enumerate(codes) if c is None]
  raise BandInputError(f"bands {unnamed} of {list(names)} have names that are not band names; "
                       "pass --bands")


def select_bands(pixels: np.ndarray, codes: Sequence[float], wanted: Sequence[str]
                 ) -> tuple[np.ndarray, list[float]]:
  """The wanted bands of a capture, deriving NDVI/NDWI/NBR from their bands where asked.

  Args:
    pixels: `[H, W, C]` capture.
    codes: Its band codes.
    wanted: Band names (e.g. `B02`, `nir`, `NDVI`).

  Raises:
    BandInputError: a wanted band is absent or not a band name.
  """
  out, out_codes = [], []
  codes = list(codes)

  def find(code: float) -> int | None:
    hits = [i for i, c in enumerate(codes) if c > 0 and abs(c - code) < 1e-3]
    return hits[0] if hits else None

  for w in wanted:
    key = w.strip().lower()
    if key in INDEX_NAMES and find(norm.CODE_INDEX) is None:
      a, b = (find(norm.S2_WAVELENGTHS[n]) for n in INDEX_NAMES[key])
      if a is None or b is None:
        raise BandInputError(f"{w} needs bands {list(INDEX_NAMES[key])}; the capture has "
                             f"band codes {codes}")
      xa, xb = pixels[..., a], pixels[..., b]
      out.append((xa - xb) / np.maximum(xa + xb, 1.0))
      out_codes.append(norm.CODE_INDEX)
      continue
    code = band_code(w)
    if code is None:
      raise BandInputError(f"--bands: {w!r} is not a band name")
    i = find(code) if code > 0 else next((j for j, c in enumerate(codes) if c == code), None)
    if i is None:
      raise BandInputError(f"band {w!r} is not in the capture (band codes {codes})")
    out.append(pixels[..., i])
    out_codes.append(codes[i])
  return np.stack(out, -1).astype(np.float32), out_codes


def read_capture(paths: Sequence[str] | str) -> tuple[np.ndarray, list[str | None], str]:
  """Reads one multi-band raster or several single-band rasters onto the finest grid.

  Bands of different resolutions (Sentinel-2's 10/20/60 m files) are resampled bilinearly to
  the finest file's grid with the sweep's helper (`transforms.band_grid`); the files must
  cover one extent (to half a coarse pixel). A single-band file without a
  description is named by its file name when that is a band name (`B04.tif`).

  Returns:
    `(pixels float32 [H, W, C], band names (None where unnamed), driver of the first file)`.
  """
  from changesweep.transforms.band_grid import BandGridError, read_on_finest_grid
  if isinstance(paths, str):
    paths = tuple(p for p in paths.split(";") if p)
  try:
    read = read_on_finest_grid(paths)
  except BandGridError as e:
    raise BandInputError(f"{';'.join(paths)}: {e}") from None
  if len(paths) > 1 and len(read.descriptions) != len(paths):
    p, n = next((p, n) for p, n in zip(paths, read.counts) if n != 1)
    raise BandInputError(f"{p}: a list of files must hold one band each, this has {n}")
  names = list(read.descriptions)
  if len(names) == len(paths):  # an unnamed single-band file is named by its file name
    for k, p in enumerate(paths):
      stem = os.path.splitext(os.path.basename(p))[0]
      if not names[k] and band_code(stem) is not None:
        names[k] = stem
  return read.pixels, names, read.driver


def describe(codes: Sequence[float]) -> str:
  """A short human name of a band set ("B02,B03,B04,B08", "index", "unknown")."""
  inverse = {v: k for k, v in norm.S2_WAVELENGTHS.items()}
  special = {norm.CODE_UNKNOWN: "unknown", norm.CODE_INDEX: "index", norm.CODE_SAR: "SAR"}
  return ",".join(inverse.get(round(c, 3), special.get(c, f"{c:g}um")) for c in codes)

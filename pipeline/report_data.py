"""What the report reads: a finished sweep's rows and summary, and small arrays of its rasters.

Rows come from the sweep's JSONL tables (`sinks.read_jsonl_rows`), the summary from `run.json`.
Rasters are read downsampled (`out_shape`), so a quicklook of a large scene stays small in
memory. Nothing here draws or formats: `report_figures` and `report_page` do.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from typing import Iterable, NamedTuple

import numpy as np
from apache_beam.io.filesystems import FileSystems

from changesweep.pipeline import sinks, times
from changesweep.pipeline.elements import PROB_SCALE
from changesweep.pipeline.rasters import open_raster
from changesweep.transforms.bands import BandError, resolve_bands

QUICKLOOK_PX = 512
RGB_BANDS = ("B04", "B03", "B02")


# --------------------------------------------------------------------------------------------
# Rows


class Run(NamedTuple):
  """A finished sweep as the report sees it.

  Attributes:
    summary: its run.json.
    ranked: its pair rows, highest change score first (`rank_pairs`).
    dead: its dead-letter rows.
  """
  summary: dict
  ranked: list[dict]
  dead: list[dict]


def rank_pairs(pairs: Iterable[dict]) -> list[dict]:
  """Pairs by change score, highest first (no score last); ties by location, then date."""
  return sorted(pairs, key=lambda r: (r.get("change_score") is None,
                                      -(r.get("change_score") or 0.0), r.get("location") or "",
                                      r.get("after_captured_at") or ""))


def read_summary(output: str) -> dict:
  """The sweep's run.json.

  Raises:
    FileNotFoundError: `output` holds no finished sweep (run.json is written at its end).
  """
  path = FileSystems.join(output, "run.json")
  if not FileSystems.exists(path):
    raise FileNotFoundError(f"{path} not found: OUT must be the --output folder of a finished "
                            "sweep (run.json is written when the sweep ends)")
  with FileSystems.open(path) as f:
    return json.loads(f.read().decode())


def load_run(output: str) -> Run:
  """Summary, ranked pairs and dead letters of the finished sweep in `output` (local or gs://).

  Raises:
    FileNotFoundError: `output` holds no finished sweep.
  """
  summary = read_summary(output)
  return Run(summary, rank_pairs(sinks.read_jsonl_rows(output, "pairs")),
             sinks.read_jsonl_rows(output, "dead_letter"))


def capture_time(text: str) -> dt.datetime:
  """A row's ISO capture time ('...Z' allowed) as a naive UTC datetime, for plotting."""
  return times.to_datetime(text)


# --------------------------------------------------------------------------------------------
# Rasters -> small arrays


def _out_shape(height: int, width: int, max_px: int) -> tuple[int, int]:
  scale = min(1.0, max_px / max(height, width))
  return max(1, round(height * scale)), max(1, round(width * scale))


def pick_rgb(names: list[str | None], wanted: tuple[str, ...] = RGB_BANDS) -> list[int]:
  """1-based indexes of the true-colour bands, else of the first three bands (or fewer).

  Band names resolve as the sweep resolves them (`transforms.bands`: aliases such as 'red',
  'B4' for 'B04'). A capture without them still gets a picture, so absence is not an error.
  """
  try:
    return [i + 1 for i in resolve_bands(wanted, tuple(names))]
  except BandError:
    return list(range(1, min(3, len(names)) + 1))


def stretch(bands: np.ndarray, valid: np.ndarray, low: float = 2, high: float = 98) -> np.ndarray:
  """(c, h, w) -> (h, w, 4) RGBA floats: each band stretched between its 2nd and 98th
  percentile over the valid pixels; invalid pixels are transparent."""
  c, h, w = bands.shape
  rgba = np.zeros((h, w, 4), np.float32)
  for i in range(c):
    band = bands[i].astype(np.float64)
    vals = band[valid]
    if vals.size:
      lo, hi = np.percentile(vals, [low, high])
      rgba[..., i] = np.clip((band - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
  if c < 3:  # grey
    rgba[..., 1] = rgba[..., 2] = rgba[..., 0]
  rgba[..., 3] = valid
  return rgba


def _band_name(path: str, description: str | None) -> str:
  """A single-band file's band: its description, else the name's last '_' part (x_B04.tif)."""
  return description or os.path.splitext(os.path.basename(path))[0].rsplit("_", 1)[-1]


def read_quicklook(uri: str, shape: tuple[int, int] | None = None,
                   max_px: int = QUICKLOOK_PX) -> tuple[np.ndarray, tuple]:
  """A capture's true-colour quicklook, read downsampled so memory stays small.

  Args:
    uri: the capture: one multi-band file, or ';'-joined single-band files (one per band).
    shape: (rows, cols) to read at; default: the scene shrunk to at most `max_px` a side.
    max_px: longest side of the default shape.

  Returns:
    (RGBA float image (h, w, 4), (left, bottom, right, top) bounds or None if not georeferenced)
  """
  from rasterio.enums import Resampling

  files = uri.split(";")
  arrays, masks, bounds = [], [], None
  if len(files) == 1:
    with open_raster(files[0]) as src:
      idx = pick_rgb(list(src.descriptions))
      shape = shape or _out_shape(src.height, src.width, max_px)
      data = src.read(idx, out_shape=(len(idx), *shape), masked=True,
                      resampling=Resampling.average)
      arrays, masks = [data.filled(0)], [np.ma.getmaskarray(data).any(axis=0)]
      bounds = tuple(src.bounds) if src.crs else None
  else:
    names = []
    for f in files:
      with open_raster(f) as src:
        names.append(_band_name(f, src.descriptions[0]))
    for i in pick_rgb(names):
      with open_raster(files[i - 1]) as src:
        shape = shape or _out_shape(src.height, src.width, max_px)
        data = src.read(1, out_shape=shape, masked=True, resampling=Resampling.average)
        arrays.append(data.filled(0)[None])
        masks.append(np.ma.getmaskarray(data))
        bounds = tuple(src.bounds) if src.crs else None
  bands = np.concatenate(arrays).astype(np.float32)
  valid = ~np.any(np.stack(masks), axis=0) & np.all(np.isfinite(bands), axis=0)
  return stretch(bands, valid), bounds


def read_change_map(uri: str, shape: tuple[int, int]) -> np.ndarray:
  """The change map read at `shape`: probabilities in [0, 1], NaN where nodata."""
  from rasterio.enums import Resampling

  with open_raster(uri) as src:
    data = src.read(1, out_shape=shape, masked=True, resampling=Resampling.nearest)
  return np.ma.filled(data.astype(np.float32) / PROB_SCALE, np.nan)

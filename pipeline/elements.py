"""Typed, immutable elements that flow through the sweep (metadata only; pixels stay in files)."""
from __future__ import annotations

import hashlib
import json
import posixpath
import re
from typing import NamedTuple

import numpy as np

# Change probabilities travel and are stored as bytes: 0..254 is probability x 254, 255 nodata.
PROB_SCALE = 254
PROB_NODATA = 255


class SceneRef(NamedTuple):
  """One capture of one location: where its bands live and the grid they sit on.

  Attributes:
    location: the location id (from the layout template or the manifest).
    captured_at: capture time, ISO 8601.
    uris: one multi-band file, or one file per band (then `band_names` gives their order).
    band_names: a name per band (None where the file does not name it).
    height, width: pixel grid size.
    dtype: the raster's data type.
    crs: the CRS as WKT ("" when the raster is not georeferenced).
    transform: the affine geotransform (a, b, c, d, e, f).
    nodata: the nodata value, if any.
    size_bytes: bytes on storage, all files together.
    usable_fraction: share of valid pixels (not nodata, NaN, cloud or masked), from a decimated
      read; 1.0 where not measured.
    band_means, band_stds: statistics of the valid pixels, per band (empty where not measured).
    mask_uri: a sidecar mask file on the same grid, or None.
    mask_band: the 0-based band that flags bad pixels, or None.
    derived_stats: `(transforms.bands.Derived, mean, std, median, mad)` of each derived band
      (NDVI ...) the model reads from this capture, from the same decimated read (empty where
      none).
    band_medians, band_mads: robust statistics of the valid pixels, per band: the median and
      1.4826 * MAD (`usability.robust_stats`); empty where not measured.
  """
  location: str
  captured_at: str
  uris: tuple[str, ...]
  band_names: tuple[str | None, ...]
  height: int
  width: int
  dtype: str
  crs: str
  transform: tuple[float, ...]
  nodata: float | None
  size_bytes: int
  usable_fraction: float = 1.0
  band_means: tuple[float, ...] = ()
  band_stds: tuple[float, ...] = ()
  mask_uri: str | None = None
  mask_band: int | None = None
  derived_stats: tuple = ()
  band_medians: tuple[float, ...] = ()
  band_mads: tuple[float, ...] = ()

  @property
  def uri(self) -> str:
    """A single string naming the capture (files joined with ';')."""
    return ";".join(self.uris)

  @property
  def count(self) -> int:
    return len(self.band_names)


class Pair(NamedTuple):
  """Two consecutive captures of one location, and the bands of each that the model reads.

  Attributes:
    pair_id: deterministic id: the same captures always give the same id.
    before, after: the two captures, `before` earlier.
    before_bands, after_bands: 0-based band positions to read, in model order; a derived band
      (NDVI ...) is a `transforms.bands.Derived` of two positions instead.
    band_names, band_codes: for an any-band model, each slot's band identity and its code
      (`transforms.bands.band_code`); empty for fixed-band models.
    grid: the common grid (`pipeline.grids.PairGrid`) when the captures' grids differ or the
      after capture is coregistered, else None.
    shift: the measured misregistration (`pipeline.grids.ShiftRecord`), None until measured.
  """
  pair_id: str
  before: SceneRef
  after: SceneRef
  before_bands: tuple[int, ...]
  after_bands: tuple[int, ...]
  band_names: tuple[str, ...] = ()
  band_codes: tuple[float, ...] = ()
  grid: object | None = None
  shift: object | None = None

  # The grid the pair is scored on: the after capture's, or the planned common grid
  # (`pipeline.grids.PairGrid`) when the two captures sit on different grids.
  @property
  def height(self) -> int:
    return self.grid.target.height if self.grid is not None else self.after.height

  @property
  def width(self) -> int:
    return self.grid.target.width if self.grid is not None else self.after.width

  @property
  def crs(self) -> str:
    return self.grid.target.crs_wkt if self.grid is not None else self.after.crs

  @property
  def transform(self) -> tuple[float, ...]:
    return tuple(self.grid.target.transform) if self.grid is not None else self.after.transform

  def read_grid(self, which: str):
    """The grid to read `which` ("before"/"after") on, or None to read the file as it is."""
    return self.grid.read_grid(which) if self.grid is not None else None

  @property
  def location(self) -> str:
    return self.after.location


class DeadLetter(NamedTuple):
  """An input the sweep could not use, and why.

  Attributes:
    uri: the file(s) at fault (';'-joined).
    stage: where it was rejected (listing, metadata, pairing, chips, scoring).
    reason: a sentence a person can act on.
    location: the location id, when known.
    pair_id: the pair id, when the rejection concerns a pair.
  """
  uri: str
  stage: str
  reason: str
  location: str | None = None
  pair_id: str | None = None

  def to_row(self) -> dict:
    return self._asdict()


def file_names(scene: SceneRef) -> str:
  """The names of a capture's files without their folders (';'-joined)."""
  return ";".join(posixpath.basename(u) for u in scene.uris)


def make_pair_id(before: SceneRef, after: SceneRef) -> str:
  """A stable id from the location, both capture times and both captures' file names.

  Never from where the archive sits: the same archive swept from another folder, a mirror or
  a re-mounted bucket, or listed by a manifest instead of a layout, keeps its pair ids. (A
  location has one capture per time, so folders add nothing that identifies the pair.)
  """
  text = "\x1f".join([after.location, before.captured_at, after.captured_at,
                      file_names(before), file_names(after)])
  return hashlib.sha1(text.encode()).hexdigest()[:16]


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
  """A file-name-safe form of an archive-supplied name: it can never leave its folder."""
  name = _UNSAFE.sub("_", text).strip("._") or "_"
  return name[:100]


class ChipKey(NamedTuple):
  """Identifies one chip through scoring, with what its rows need (no pair held downstream).

  Attributes:
    pair_id: the pair.
    index: the chip's index in the pair's grid (`transforms.tiling.chip_grid`).
    height, width: the pair's grid, so the chip's window can be recomputed anywhere.
    location, capture_date: copied into the chip's row.
  """
  pair_id: str
  index: int
  height: int
  width: int
  location: str
  capture_date: str

  def to_bytes(self) -> bytes:
    """The key as tf.Transform carries it (a bytes column); `from_bytes` reverses it."""
    return json.dumps(list(self), separators=(",", ":")).encode()

  @classmethod
  def from_bytes(cls, data: bytes | str) -> "ChipKey":
    return cls(*json.loads(data))


class ChipScore(NamedTuple):
  """The model's output for one chip: probabilities quantised to bytes, and validity.

  Attributes:
    chip_index: the chip's index in the pair's grid.
    prob: `[S, S]` uint8, change probability x PROB_SCALE (0 where invalid).
    valid: `[S, S]` bool, both captures usable.
  """
  chip_index: int
  prob: np.ndarray
  valid: np.ndarray


class ChipFailure(NamedTuple):
  """A chip that could not be read or scored; its whole pair is then dead-lettered."""
  pair_id: str
  chip_index: int
  reason: str


class PooledMap(NamedTuple):
  """A pair's change map pooled to cells of `factor` px (at most 2048^2 cells).

  Attributes:
    factor: cell side in pixels of the pair's grid (1 up to 2048^2 px scenes).
    height, width: the pair's grid in pixels.
    flagged: uint32 `[h', w']` pixels with p >= threshold per cell.
    valid: uint32 `[h', w']` valid pixels per cell.
    prob_sum: float64 `[h', w']` sum of the change probabilities (0..1) of valid pixels.
    prob_max: uint8 `[h', w']` maximum quantised probability (0..254) per cell.

  Assembled from chip patches (`pair_summary`), `valid`, `prob_sum` and `prob_max` are exact
  in every cell with a flagged pixel (all that regions and polygons read) and may be 0 in
  cells without one.
  """
  factor: int
  height: int
  width: int
  flagged: np.ndarray
  valid: np.ndarray
  prob_sum: np.ndarray
  prob_max: np.ndarray


class FirstCapture(NamedTuple):
  """The earliest usable capture of a location: reported, not scored."""
  location: str
  captured_at: str
  uri: str

  def to_row(self) -> dict:
    return self._asdict()


class CaptureRecord(NamedTuple):
  """One usable capture in a location's history.

  Attributes:
    location, captured_at, uri: which capture.
    usable_fraction: share of its pixels that are valid (not nodata, cloud or masked).
    band_means, band_stds: statistics of its valid pixels, per model band.
    pair_id, change_score: the scored pair that ends at this capture, if any.
    anomaly_score, anomaly_method: that pair's anomaly, once scored.
  """
  location: str
  captured_at: str
  uri: str
  usable_fraction: float
  band_means: tuple[float, ...]
  band_stds: tuple[float, ...]
  pair_id: str | None = None
  change_score: float | None = None
  anomaly_score: float | None = None
  anomaly_method: str | None = None

  def to_row(self, run_id: str) -> dict:
    row = self._asdict()
    row["band_means"] = list(self.band_means)
    row["band_stds"] = list(self.band_stds)
    row["run_id"] = run_id
    return row

  @classmethod
  def from_row(cls, row: dict) -> "CaptureRecord":
    return cls(row["location"], row["captured_at"], row["uri"], float(row["usable_fraction"]),
               tuple(row["band_means"]), tuple(row["band_stds"]), row.get("pair_id"),
               row.get("change_score"), row.get("anomaly_score"), row.get("anomaly_method"))

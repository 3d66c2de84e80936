"""Labelled pairs: manifest parsing, raster loading, chip sampling and augmentation.

A labelled-pair manifest is a CSV with the columns `pair_id,before,after,mask` and the
optional `change_value` (default 255) and `nochange_value` (default 0). `before` and `after`
are one multi-band raster or a `;`-separated list of single-band rasters (bands joined in
the order listed). Paths are relative to a data root (default: the manifest's directory);
absolute paths are used as they are. Mask pixels equal to neither value are ignored.

Labels are int8 maps: 1 = change, 0 = no change, -1 = ignored.

Augmentations work on normalised (z-scored) chips:
* geometry: flips, 90-degree rotations, swapping the two captures (labels unchanged);
* nuisance changes that must NOT be flagged, applied to one capture only: per-band gain and
  offset (illumination, sensor/rendering shift, seasonal colour shift), haze (blend towards a
  bright flat value), Gaussian noise, blur, and a misregistration of up to one pixel;
* synthetic changes: a patch of real imagery from elsewhere in the archive pasted into one
  capture, labelled change (used as extra positives and for self-supervised pre-training).
"""
from __future__ import annotations

import csv
import dataclasses
import os
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from changesweep.model.photometric import (  # noqa: F401  (re-exported: data.raw_nuisance ...)
    raw_gamma, raw_nuisance, shift_image)

REQUIRED_COLUMNS = ("pair_id", "before", "after", "mask")
DEFAULT_CHANGE_VALUE = 255
DEFAULT_NOCHANGE_VALUE = 0
IGNORE = -1


class PairRecord(NamedTuple):
  """One row of a labelled-pair manifest, with paths resolved.

  Attributes:
    pair_id: Identifier of the pair (unique within a manifest).
    before: Raster path(s) of the earlier capture (one multi-band file or single-band files).
    after: Raster path(s) of the later capture.
    mask: Path of the change mask, or None for an unlabelled pair.
    change_value: Mask value meaning change.
    nochange_value: Mask value meaning no change.
  """
  pair_id: str
  before: tuple[str, ...]
  after: tuple[str, ...]
  mask: str | None
  change_value: float = DEFAULT_CHANGE_VALUE
  nochange_value: float = DEFAULT_NOCHANGE_VALUE


@dataclasses.dataclass(frozen=True)
class Pair:
  """A loaded pair.

  Attributes:
    pair_id: Identifier of the pair.
    before: float32 `[H, W, C]` pixels of the earlier capture.
    after: float32 `[H, W, C]` pixels of the later capture.
    label: int8 `[H, W]` (1 change, 0 no change, -1 ignored), or None when unlabelled.
  """
  pair_id: str
  before: np.ndarray
  after: np.ndarray
  label: np.ndarray | None


def _resolve(path: str, root: str) -> str:
  path = path.strip()
  if not path:
    raise ValueError("empty path in manifest")
  return path if os.path.isabs(path) else os.path.normpath(os.path.join(root, path))


def _number(value: str | None, default: float, column: str, row: int) -> float:
  if value is None or str(value).strip() == "":
    return default
  try:
    return float(value)
  except ValueError:
    raise ValueError(f"row {row}: {column}={value!r} is not a number") from None


def parse_manifest(lines: Iterable[str], data_root: str, require_mask: bool = True
                   ) -> list[PairRecord]:
  """Parses manifest text (see module docstring).

  Args:
    lines: CSV lines including the header.
    data_root: Directory that relative paths are resolved against.
    require_mask: Whether every row must name a mask.

  Returns:
    The rows as `PairRecord`s, in file order.

  Raises:
    ValueError: On a missing column, an empty field, a duplicate pair_id, equal change and
      no-change values, or a value that is not a number.
  """
  reader = csv.DictReader(line for line in lines if line.strip() and not line.startswith("#"))
  fields = [f.strip() for f in (reader.fieldnames or [])]
  missing = [c for c in REQUIRED_COLUMNS if c not in fields and not (c == "mask" and not
                                                                      require_mask)]
  if missing:
    raise ValueError(f"manifest lacks columns {missing}; has {fields}")
  records, seen = [], set()
  for row_number, row in enumerate(reader, start=2):
    row = {(k or "").strip(): (v if v is None else v.strip()) for k, v in row.items()}
    pair_id = row.get("pair_id") or ""
    if not pair_id:
      raise ValueError(f"row {row_number}: empty pair_id")
    if pair_id in seen:
      raise ValueError(f"row {row_number}: duplicate pair_id {pair_id!r}")
    seen.add(pair_id)
    paths = {}
    for column in ("before", "after"):
      value = row.get(column) or ""
      parts = [p for p in value.split(";") if p.strip()]
      if not parts:
        raise ValueError(f"row {row_number}: empty {column} for pair {pair_id!r}")
      paths[column] = tuple(_resolve(p, data_root) for p in parts)
    mask = row.get("mask") or None
    if mask is None and require_mask:
      raise ValueError(f"row {row_number}: empty mask for pair {pair_id!r}")
    change = _number(row.get("change_value"), DEFAULT_CHANGE_VALUE, "change_value", row_number)
    nochange = _number(row.get("nochange_value"), DEFAULT_NOCHANGE_VALUE, "nochange_value",
                       row_number)
    if change == nochange:
      raise ValueError(f"row {row_number}: change_value and nochange_value are both {change}")
    records.append(PairRecord(pair_id, paths["before"], paths["after"],
                              _resolve(mask, data_root) if mask else None, change, nochange))
  if not records:
    raise ValueError("manifest has no rows")
  return records


def read_manifest(path: str, data_root: str | None = None, require_mask: bool = True,
                  check_files: bool = True) -> list[PairRecord]:
  """Reads a manifest file; relative paths resolve against `data_root` (default: its dir).

  Raises:
    FileNotFoundError: If the manifest, or (with `check_files`) a raster it names, is missing.
    ValueError: See `parse_manifest`.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"manifest not found: {path}")
  root = data_root if data_root is not None else os.path.dirname(os.path.abspath(path))
  with open(path, newline="") as f:
    records = parse_manifest(f, root, require_mask=require_mask)
  if check_files:
    for r in records:
      for p in r.before + r.after + ((r.mask,) if r.mask else ()):
        if not os.path.exists(p):
          raise FileNotFoundError(f"pair {r.pair_id!r}: file not found: {p} (data_root={root})")
  return records


def read_raster(paths: Sequence[str] | str) -> np.ndarray:
  """Reads one multi-band raster or several single-band rasters as float32 `[H, W, C]`.

  Single-band files of different resolutions (Sentinel-2's 10/20/60 m bands) are resampled
  bilinearly onto the finest grid by the sweep's own reader (`band_grid.read_on_finest_grid`).
  """
  import rasterio
  import warnings
  if isinstance(paths, str):
    paths = tuple(p for p in paths.split(";") if p)
  bands = []
  shape = None
  for p in paths:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # PNG/JPEG have no georeference
      with rasterio.open(p) as src:
        data = src.read()
    if len(paths) > 1 and data.shape[0] != 1:
      raise ValueError(f"{p}: a list of files must hold one band each, this has {data.shape[0]}")
    if shape is not None and data.shape[1:] != shape:
      from changesweep.transforms import band_grid
      return band_grid.read_on_finest_grid(list(paths)).pixels
    shape = data.shape[1:]
    bands.append(data)
  return np.transpose(np.concatenate(bands, axis=0), (1, 2, 0)).astype(np.float32)


def read_mask(path: str, change_value: float = DEFAULT_CHANGE_VALUE,
              nochange_value: float = DEFAULT_NOCHANGE_VALUE) -> np.ndarray:
  """Reads a mask raster (first band) as int8: 1 change, 0 no change, -1 ignored."""
  raw = read_raster([path])[..., 0]
  label = np.full(raw.shape, IGNORE, np.int8)
  label[raw == nochange_value] = 0
  label[raw == change_value] = 1
  return label


class PairShapeError(ValueError):
  """A pair whose captures or mask differ in shape or band count (unusable input)."""


def load_pair(record: PairRecord, read=read_raster) -> Pair:
  """Loads the rasters of one manifest row; `read(paths)` reads a capture (default: as it is).

  Raises:
    PairShapeError: If the captures or the mask differ in shape or band count.
  """
  before = read(record.before)
  after = read(record.after)
  if before.shape != after.shape:
    raise PairShapeError(f"pair {record.pair_id!r}: before {before.shape} != after "
                         f"{after.shape}")
  label = None
  if record.mask:
    label = read_mask(record.mask, record.change_value, record.nochange_value)
    if label.shape != before.shape[:2]:
      raise PairShapeError(f"pair {record.pair_id!r}: mask {label.shape} != image "
                           f"{before.shape[:2]}")
  return Pair(record.pair_id, before, after, label)


def split_rows(pair: Pair, val_fraction: float) -> tuple[Pair, Pair]:
  """Spatial hold-out: the last `val_fraction` of rows is validation, the rest training."""
  h = pair.before.shape[0]
  cut = int(round(h * (1.0 - val_fraction)))
  def part(sl):
    return Pair(pair.pair_id, pair.before[sl], pair.after[sl],
                None if pair.label is None else pair.label[sl])
  return part(slice(0, cut)), part(slice(cut, h))


def pad_to(array: np.ndarray, height: int, width: int, value: float = 0.0,
           mode: str = "reflect") -> np.ndarray:
  """Pads the first two axes at the bottom/right to at least `height` x `width`."""
  ph, pw = max(0, height - array.shape[0]), max(0, width - array.shape[1])
  if not ph and not pw:
    return array
  pad = [(0, ph), (0, pw)] + [(0, 0)] * (array.ndim - 2)
  if mode == "constant" or min(array.shape[:2]) < 2:
    return np.pad(array, pad, mode="constant", constant_values=value)
  # reflect needs pads shorter than the array; repeat until large enough.
  out = array
  while out.shape[0] < height or out.shape[1] < width:
    ph, pw = max(0, height - out.shape[0]), max(0, width - out.shape[1])
    ph, pw = min(ph, out.shape[0] - 1), min(pw, out.shape[1] - 1)
    out = np.pad(out, [(0, ph), (0, pw)] + [(0, 0)] * (array.ndim - 2), mode=mode)
  return out


def iter_chips(pair: Pair, size: int) -> Iterator[tuple[str, np.ndarray, np.ndarray,
                                                        np.ndarray]]:
  """Non-overlapping `size` chips covering a pair (edge chips padded, valid=0 there).

  Yields:
    `(chip_key, before [S,S,C], after, valid [S,S] float32)`.
  """
  h, w = pair.before.shape[:2]
  for y in range(0, h, size):
    for x in range(0, w, size):
      b = pair.before[y:y + size, x:x + size]
      a = pair.after[y:y + size, x:x + size]
      valid = np.ones(b.shape[:2], np.float32)
      yield (f"{pair.pair_id}/{y}_{x}", pad_to(b, size, size, mode="constant"),
             pad_to(a, size, size, mode="constant"), pad_to(valid, size, size, mode="constant"))


# ----------------------------------------------------------------------------- augmentation


def random_geometry(rng: np.random.Generator, *arrays: np.ndarray) -> list[np.ndarray]:
  """Applies one random flip/rot90 (the same to all arrays, first two axes)."""
  k = int(rng.integers(4))
  flip = bool(rng.integers(2))
  out = []
  for a in arrays:
    a = np.rot90(a, k, axes=(0, 1))
    if flip:
      a = a[:, ::-1]
    out.append(np.ascontiguousarray(a))
  return out


def nuisance(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0,
             max_shift: int = 1) -> np.ndarray:
  """Nuisance change on a normalised `[H, W, C]` capture: must not be flagged as change.

  Per-band gain/offset (illumination, seasonal colour and sensor shift), optional haze, noise,
  slight blur and a misregistration of up to `max_shift` pixels.
  """
  c = image.shape[-1]
  out = image
  gain = np.exp(rng.normal(0.0, 0.15 * strength, c) + rng.normal(0.0, 0.1 * strength))
  offset = rng.normal(0.0, 0.25 * strength, c) + rng.normal(0.0, 0.2 * strength)
  out = out * gain.astype(np.float32) + offset.astype(np.float32)
  if rng.random() < 0.25 * strength:  # haze: blend towards a bright flat veil
    alpha = rng.uniform(0.05, 0.3 * strength)
    out = (1 - alpha) * out + alpha * (out.mean() + 1.0)
  if rng.random() < 0.5:
    out = out + rng.normal(0.0, rng.uniform(0.0, 0.08 * strength), out.shape)
  if rng.random() < 0.2:  # slight blur (different rendering / resampling)
    out = (out + np.roll(out, 1, 0) + np.roll(out, 1, 1) + np.roll(out, (1, 1), (0, 1))) / 4
  if max_shift and rng.random() < 0.5:
    out = shift_image(out, int(rng.integers(-max_shift, max_shift + 1)),
                      int(rng.integers(-max_shift, max_shift + 1)))
  return out.astype(np.float32)


def paste_change(after: np.ndarray, label: np.ndarray, donor: np.ndarray,
                 rng: np.random.Generator, max_frac: float = 0.25) -> tuple[np.ndarray,
                                                                            np.ndarray]:
  """Pastes a random blob of `donor` (real imagery from elsewhere) into `after`.

  All pasted pixels are labelled change; the blob is a union of random rectangles
  (building/road-like).

  Returns:
    `(after, label)` copies.
  """
  h, w = after.shape[:2]
  blob = np.zeros((h, w), bool)
  for _ in range(int(rng.integers(1, 5))):
    bh = int(rng.integers(3, max(4, int(h * max_frac))))
    bw = int(rng.integers(3, max(4, int(w * max_frac))))
    y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
    blob[y:y + bh, x:x + bw] = True
  after = after.copy()
  label = label.copy()
  after[blob] = donor[blob]
  label[blob] = 1
  return after, label


@dataclasses.dataclass
class ChipSampler:
  """Draws augmented training chips from normalised pairs.

  Attributes:
    pairs: Normalised labelled pairs (training part).
    size: Chip size.
    seed: Random seed.
    positive_fraction: Share of chips centred on a change pixel.
    nuisance_prob: Probability that each capture receives a nuisance change.
    paste_prob: Probability of a synthetic pasted change.
    identity_prob: Probability of a no-change pair (one capture with itself + nuisance).
    gamma_prob: Probability that a capture receiving a nuisance also gets a gamma change of
      its raw values (`raw_gamma`, needs `raw_stats`); 0 draws nothing, so the chips are those
      of a sampler without it.
    gamma_sigma: Spread of `ln(gamma)` (normal).
    raw_stats: `(mean, std)` per band that normalised the pairs (for `raw_gamma`).
  """
  pairs: Sequence[Pair]
  size: int = 128
  seed: int = 0
  positive_fraction: float = 0.5
  nuisance_prob: float = 0.5
  paste_prob: float = 0.1
  identity_prob: float = 0.05
  gamma_prob: float = 0.0
  gamma_sigma: float = 0.2
  raw_stats: tuple[np.ndarray, np.ndarray] | None = None

  def __post_init__(self):
    self.rng = np.random.default_rng(self.seed)
    weights = np.array([max(p.before.shape[0] - self.size, 1) * max(p.before.shape[1] -
                                                                    self.size, 1)
                        for p in self.pairs], np.float64)
    self.weights = weights / weights.sum()
    self.positives = []
    for p in self.pairs:
      ys, xs = np.nonzero(p.label == 1)
      self.positives.append(np.stack([ys, xs], 1) if len(ys) else np.zeros((0, 2), int))

  def _window(self, i: int, positive: bool) -> tuple[int, int]:
    p = self.pairs[i]
    h, w = p.before.shape[:2]
    s = self.size
    if positive and len(self.positives[i]):
      cy, cx = self.positives[i][int(self.rng.integers(len(self.positives[i])))]
      y = int(np.clip(cy - s // 2 + self.rng.integers(-s // 4, s // 4 + 1), 0, h - s))
      x = int(np.clip(cx - s // 2 + self.rng.integers(-s // 4, s // 4 + 1), 0, w - s))
      return y, x
    return int(self.rng.integers(0, h - s + 1)), int(self.rng.integers(0, w - s + 1))

  def chip(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One augmented `(before, after, label)` chip."""
    rng = self.rng
    i = int(rng.choice(len(self.pairs), p=self.weights))
    y, x = self._window(i, rng.random() < self.positive_fraction)
    s = self.size
    p = self.pairs[i]
    b = p.before[y:y + s, x:x + s]
    a = p.after[y:y + s, x:x + s]
    lab = p.label[y:y + s, x:x + s].astype(np.int8)
    if rng.random() < self.identity_prob:
      a = b if rng.random() < 0.5 else a
      b = a
      lab = np.where(lab == IGNORE, IGNORE, 0).astype(np.int8)
    if rng.random() < self.paste_prob:
      j = int(rng.choice(len(self.pairs), p=self.weights))
      dy, dx = self._window(j, False)
      donor = self.pairs[j].after[dy:dy + s, dx:dx + s]
      a, lab = paste_change(a, lab, donor, rng)
    if rng.random() < self.nuisance_prob:
      b = nuisance(self._gamma(b), rng)
    if rng.random() < self.nuisance_prob:
      a = nuisance(self._gamma(a), rng)
    if rng.random() < 0.5:
      a, b = b, a
    b, a, lab = random_geometry(rng, b, a, lab)
    return b.astype(np.float32), a.astype(np.float32), lab

  def _gamma(self, image: np.ndarray) -> np.ndarray:
    if not self.gamma_prob or self.rng.random() >= self.gamma_prob:
      return image
    if self.raw_stats is None:
      raise ValueError("gamma_prob needs raw_stats (the statistics that normalised the pairs)")
    gamma = float(np.exp(self.rng.normal(0.0, self.gamma_sigma)))
    return raw_gamma(image, gamma, *self.raw_stats)

  def batch(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    chips = [self.chip() for _ in range(n)]
    return (np.stack([c[0] for c in chips]), np.stack([c[1] for c in chips]),
            np.stack([c[2] for c in chips]))

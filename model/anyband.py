"""Training data for the any-band model: Sentinel-2 digital numbers, random band sets.

A capture here is all 13 Sentinel-2 L1C bands of one OSCD city and date (uint16 DNs at
10/20/60 m, read with bilinear resampling onto the 10 m grid of the change mask, as the sweep
does). Each training batch draws one band set and feeds the model only those bands, in a
random order, sometimes with empty slots between them:

* single optical bands (sometimes as a band of unknown identity, code -1),
* derived indices (NDVI, NDWI after McFeeters, NBR; code -2),
* SAR-like backscatter simulated from NIR/SWIR reflectance with multiplicative gamma speckle,
  in linear power or dB (code -3; no SAR labels are at hand),
* RGB, RGB+NIR, all 13 bands, and random subsets.

Each capture is normalised with its own robust statistics (`transforms.normalization`,
computed from a fixed random sample of the capture's pixels, as the pipeline computes them
from an overview) or, for comparison, with archive-wide statistics.

Nuisance changes keep the label "no change": per-band gain and offset, gamma and haze are
applied to the raw DNs of one capture *and* to its statistics sample (they act on the whole
capture, so per-capture statistics see them too); noise, blur and a misregistration of up to
one pixel are applied after normalisation (`data.nuisance`). Self-pairs and pasted synthetic
changes as in `data.ChipSampler`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from changesweep.model import data as pair_data
from changesweep.transforms import normalization as norm

S2_BANDS = norm.S2_BANDS
INDICES = {"NDVI": ("B08", "B04"), "NDWI": ("B03", "B08"), "NBR": ("B08", "B12")}
INDEX_NAMES = tuple(INDICES)
# Channels of a loaded capture: the 13 bands, then the 3 indices.
CHANNELS = S2_BANDS + INDEX_NAMES
STAT_SAMPLE = 16384


def channel_code(name: str) -> float:
  """band_code of a loaded channel (wavelength of an S2 band, CODE_INDEX for an index)."""
  if name in norm.S2_WAVELENGTHS:
    return float(norm.S2_WAVELENGTHS[name])
  if name in INDICES:
    return norm.CODE_INDEX
  raise ValueError(f"unknown channel {name!r}")


def read_s2_capture(folder: str, shape: tuple[int, int] | None = None,
                    bands: Sequence[str] = S2_BANDS) -> np.ndarray:
  """Reads `folder/<BAND>.tif` for every band onto the finest band's grid (the 10 m one),
  bilinear, with the sweep's own helper (`transforms.band_grid.read_on_finest_grid`).

  Args:
    folder: Directory with one single-band file per band, named like `B02.tif`.
    shape: The `(height, width)` the grid must have (the change mask's), or None.
    bands: Band names in output order.

  Returns:
    float32 `[H, W, len(bands)]` digital numbers.

  Raises:
    ValueError: the finest grid is not `shape`, or the files cannot share one grid.
  """
  from changesweep.transforms.band_grid import read_on_finest_grid

  out = read_on_finest_grid([os.path.join(folder, f"{name}.tif") for name in bands])
  if shape is not None and out.pixels.shape[:2] != tuple(shape):
    raise ValueError(f"{folder}: the bands' finest grid is {out.pixels.shape[:2]}, the change "
                     f"mask {tuple(shape)}")
  return out.pixels


def add_indices(raw: np.ndarray) -> np.ndarray:
  """Appends NDVI, NDWI and NBR (from S2 DNs `[..., 13]`) as channels 13..15."""
  pos = {b: i for i, b in enumerate(S2_BANDS)}
  out = [raw]
  for a, b in INDICES.values():
    xa, xb = raw[..., pos[a]], raw[..., pos[b]]
    out.append(((xa - xb) / np.maximum(xa + xb, 1.0))[..., None])
  return np.concatenate(out, axis=-1).astype(np.float32)


@dataclasses.dataclass
class Capture:
  """One capture: raw DNs of all 13 bands and a fixed sample of its pixels for statistics."""
  raw: np.ndarray        # [H, W, 13]
  sample: np.ndarray     # [N, 13]


@dataclasses.dataclass
class City:
  """A labelled pair of captures (a training or validation part of one city)."""
  name: str
  before: Capture
  after: Capture
  label: np.ndarray      # int8 [H, W]


def _sample(raw: np.ndarray, seed: int) -> np.ndarray:
  flat = raw.reshape(-1, raw.shape[-1])
  idx = np.random.default_rng(seed).choice(flat.shape[0], min(STAT_SAMPLE, flat.shape[0]),
                                           replace=False)
  return flat[np.sort(idx)]


def load_cities(root: str, names: Sequence[str] | None = None, val_fraction: float = 0.2
                ) -> tuple[list[City], list[City]]:
  """Loads OSCD train cities (`root/<city>/imgs_1|imgs_2`, `cm.tif` 1/2) and splits rows.

  The statistics sample of a capture comes from the whole capture (no labels are involved,
  and the sweep takes statistics over the whole capture too).

  Returns:
    `(train parts, validation parts)`: the first and the last `val_fraction` of rows.
  """
  names = sorted(names or [d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))])
  train, val = [], []
  for i, name in enumerate(names):
    folder = os.path.join(root, name)
    label = pair_data.read_mask(os.path.join(folder, "cm.tif"), 2, 1)
    b = read_s2_capture(os.path.join(folder, "imgs_1"), label.shape)
    a = read_s2_capture(os.path.join(folder, "imgs_2"), label.shape)
    sb, sa = _sample(b, 2 * i), _sample(a, 2 * i + 1)
    cut = int(round(label.shape[0] * (1.0 - val_fraction)))
    for part, sl in ((train, slice(0, cut)), (val, slice(cut, None))):
      part.append(City(name, Capture(b[sl], sb), Capture(a[sl], sa), label[sl]))
  return train, val


def archive_stats(cities: Sequence[City]) -> tuple[np.ndarray, np.ndarray]:
  """Mean and standard deviation of every channel (13 bands + 3 indices) over an archive."""
  sums = np.zeros(len(CHANNELS))
  sq = np.zeros(len(CHANNELS))
  n = 0
  for c in cities:
    for cap in (c.before, c.after):
      x = add_indices(cap.sample).astype(np.float64)
      sums += x.sum(0)
      sq += (x * x).sum(0)
      n += x.shape[0]
  mean = sums / n
  std = np.sqrt(np.maximum(sq / n - mean ** 2, 1e-12))
  return mean.astype(np.float32), std.astype(np.float32)


# ----------------------------------------------------------------------------- band sets


@dataclasses.dataclass(frozen=True)
class BandSet:
  """The bands one batch feeds: loaded channels (or "SAR_VV"/"SAR_VH") and their codes."""
  channels: tuple[str, ...]
  codes: tuple[float, ...]
  sar_db: bool = False


SAR_SOURCES = {"SAR_VV": ("B08", 1.0), "SAR_VH": ("B11", 0.25)}
VALIDATION_SETS = {
    "rgb": ("B04", "B03", "B02"),
    "s2_4": ("B02", "B03", "B04", "B08"),
    "s2_13": S2_BANDS,
    "ndvi": ("NDVI",),  # validated as an unnamed band (code -1), as NDVI archives come
}
UNKNOWN_VALIDATION_SETS = ("ndvi",)


def fixed_band_set(channels: Sequence[str], unknown: bool = False) -> BandSet:
  """The band set of these channels, with their codes (or all of unknown identity)."""
  codes = tuple(norm.CODE_UNKNOWN if unknown else channel_code(c) for c in channels)
  return BandSet(tuple(channels), codes)


# Cumulative shares of the band-set kinds per mix: one optical band, an index, SAR-like, RGB,
# B02/B03/B04/B08, all 13 (the rest: a random subset). "default" is v1/v2's (module docstring);
# "single" gives one-band captures (an optical band, an index, SAR) 55% of the batches instead
# of 38%, since an unnamed index archive is the furthest from its target.
# "multispectral": optical band sets of at least 4 bands only (B02/B03/B04/B08, all 13, or a
# random subset of 4 or more), for a model specialised on multispectral captures.
BAND_MIXES = {"default": (0.15, 0.30, 0.38, 0.49, 0.63, 0.77),
              "single": (0.20, 0.45, 0.55, 0.63, 0.74, 0.85),
              "multispectral": (0.0, 0.0, 0.0, 0.0, 0.35, 0.70)}
# Fewest bands of a random subset per mix (default 2).
MIX_MIN_SUBSET = {"multispectral": 4}


def draw_band_set(rng: np.random.Generator, mix: str = "default") -> BandSet:
  """One random band set of the `mix` (a key of `BAND_MIXES`; see module docstring)."""
  one, index, sar, rgb, four, all13 = BAND_MIXES[mix]
  u = rng.random()
  if u < one:  # one optical band, sometimes of unknown identity
    band = S2_BANDS[int(rng.integers(len(S2_BANDS)))]
    code = norm.CODE_UNKNOWN if rng.random() < 0.3 else channel_code(band)
    return BandSet((band,), (code,))
  if u < index:  # an index; unnamed in many archives, so often of unknown identity
    name = INDEX_NAMES[int(rng.choice(3, p=[0.6, 0.2, 0.2]))]
    code = norm.CODE_UNKNOWN if rng.random() < 0.4 else norm.CODE_INDEX
    return BandSet((name,), (code,))
  if u < sar:  # SAR-like, one or two polarisations (one unnamed band: unknown identity)
    chans = ("SAR_VV",) if rng.random() < 0.5 else ("SAR_VV", "SAR_VH")
    code = norm.CODE_UNKNOWN if len(chans) == 1 and rng.random() < 0.2 else norm.CODE_SAR
    return BandSet(chans, (code,) * len(chans), sar_db=bool(rng.random() < 0.5))
  if u < rgb:
    chans = ("B04", "B03", "B02")
  elif u < four:
    chans = ("B02", "B03", "B04", "B08")
  elif u < all13:
    chans = S2_BANDS
  else:
    k = int(rng.integers(MIX_MIN_SUBSET.get(mix, 2), len(S2_BANDS)))
    chans = tuple(S2_BANDS[i] for i in sorted(rng.choice(len(S2_BANDS), k, replace=False)))
    if rng.random() < 0.2:
      chans = chans + (INDEX_NAMES[int(rng.integers(3))],)
  return fixed_band_set(chans)


def speckle(intensity: np.ndarray, looks: float, rng: np.random.Generator) -> np.ndarray:
  """Multiplicative speckle: intensity times a unit-mean gamma variable with `looks` looks."""
  return (intensity * rng.gamma(looks, 1.0 / looks, intensity.shape)).astype(np.float32)


def to_db(x: np.ndarray) -> np.ndarray:
  return (10.0 * np.log10(np.maximum(x, 1e-6))).astype(np.float32)


# ----------------------------------------------------------------------------- nuisance


def raw_nuisance_params(rng: np.random.Generator, strength: float = 1.0) -> dict:
  """Parameters of a point-wise nuisance on raw DNs (applied to a chip and its stats sample)."""
  c = len(S2_BANDS)
  p = {"gain": np.exp(rng.normal(0, 0.1 * strength, c) + rng.normal(0, 0.1 * strength)),
       "offset": rng.normal(0, 80.0 * strength, c) + rng.normal(0, 80.0 * strength),
       "gamma": float(np.exp(rng.normal(0, 0.15 * strength))) if rng.random() < 0.3 else 1.0,
       "haze": float(rng.uniform(0.03, 0.3 * strength)) if rng.random() < 0.25 else 0.0,
       "veil": float(rng.uniform(2000, 4500))}
  return p


def apply_raw_nuisance(raw: np.ndarray, p: dict) -> np.ndarray:
  """Applies `raw_nuisance_params` to DNs `[..., 13]` (point-wise, so chip and sample agree)."""
  x = np.maximum(raw * p["gain"] + p["offset"], 0.0)
  if p["gamma"] != 1.0:
    x = 10000.0 * (x / 10000.0) ** p["gamma"]
  if p["haze"]:
    x = (1.0 - p["haze"]) * x + p["haze"] * p["veil"]
  return x.astype(np.float32)


# ----------------------------------------------------------------------------- sampler


def capture_view(raw_chip: np.ndarray, sample: np.ndarray, band_set: BandSet, mode: str,
                 archive: tuple[np.ndarray, np.ndarray] | None, rng: np.random.Generator,
                 looks: float = 4.0) -> np.ndarray:
  """Normalised chip `[s, s, len(band_set)]` of one capture for a band set.

  Args:
    raw_chip: `[s, s, 13]` raw DNs (after any raw nuisance).
    sample: `[N, 13]` the capture's statistics sample (after the same nuisance).
    band_set: The bands to produce.
    mode: "capture_robust", "archive", "archive_optical" (archive statistics for optical
      bands, the capture's own mean/std for indices and unknown bands) or
      "archive_optical_robust" (the same with the capture's median/MAD).
    archive: `(mean [16], std [16])` for the archive modes.
    rng: Random source (speckle).
    looks: Looks of the simulated SAR speckle.
  """
  if band_set.channels[0].startswith("SAR_"):
    chans, samp = [], []
    pos = {b: i for i, b in enumerate(S2_BANDS)}
    for name in band_set.channels:
      src, factor = SAR_SOURCES[name]
      inten = np.maximum(raw_chip[..., pos[src]], 1.0) / 10000.0 * factor
      si = np.maximum(sample[:, pos[src]], 1.0) / 10000.0 * factor
      inten, si = speckle(inten, looks, rng), speckle(si, looks, rng)
      if band_set.sar_db:
        inten, si = to_db(inten), to_db(si)
      chans.append(inten)
      samp.append(si)
    x = np.stack(chans, -1)
    center, scale = norm.capture_stats(np.stack(samp, -1), band_set.codes)
    return norm.normalize_np(x, center, scale, band_set.codes)
  idx = [CHANNELS.index(c) for c in band_set.channels]
  x = add_indices(raw_chip)[..., idx]
  if mode == "archive":
    center, scale = archive[0][idx], archive[1][idx]
  elif mode in norm.OPTICAL_ONLY_MODES:
    center, scale = norm.mixed_stats(mode, band_set.codes, (archive[0][idx], archive[1][idx]),
                                     add_indices(sample)[:, idx])
  else:
    center, scale = norm.capture_stats(add_indices(sample)[:, idx], band_set.codes)
  return norm.normalize_np(x, center, scale, band_set.codes)


@dataclasses.dataclass
class AnyBandSampler:
  """Draws augmented training batches of one random band set each.

  Attributes:
    cities: Training parts.
    size: Chip side.
    seed: Random seed (every draw comes from it).
    mode: Normalisation, one of `normalization.NORMALIZATIONS`.
    archive: Archive statistics for the "archive" mode.
    positive_fraction: Share of chips centred on a change pixel.
    nuisance_prob: Probability that each capture receives a nuisance.
    paste_prob: Probability of a pasted synthetic change.
    identity_prob: Probability of a self-pair.
    pad_prob: Probability that a batch gets empty slots between its bands.
    dn_noise: Largest sigma (DNs) of Gaussian noise added to the raw DNs of half the captures
      that get a nuisance (0: none, as for the v1 model).
    band_mix: Shares of the band-set kinds (a key of `BAND_MIXES`).
  """
  cities: Sequence[City]
  size: int = 96
  seed: int = 0
  mode: str = "capture_robust"
  archive: tuple[np.ndarray, np.ndarray] | None = None
  positive_fraction: float = 0.5
  nuisance_prob: float = 0.5
  paste_prob: float = 0.1
  identity_prob: float = 0.05
  pad_prob: float = 0.15
  dn_noise: float = 0.0
  band_mix: str = "default"

  def __post_init__(self):
    if self.band_mix not in BAND_MIXES:
      raise ValueError(f"band_mix {self.band_mix!r} is not one of {tuple(BAND_MIXES)}")
    self.rng = np.random.default_rng(self.seed)
    w = np.array([max(c.label.shape[0] - self.size, 1) * max(c.label.shape[1] - self.size, 1)
                  for c in self.cities], np.float64)
    self.weights = w / w.sum()
    self.positives = []
    for c in self.cities:
      ys, xs = np.nonzero(c.label == 1)
      self.positives.append(np.stack([ys, xs], 1) if len(ys) else np.zeros((0, 2), int))

  def _window(self, i: int, positive: bool) -> tuple[int, int]:
    h, w = self.cities[i].label.shape
    s = self.size
    pos = self.positives[i]
    if positive and len(pos):
      cy, cx = pos[int(self.rng.integers(len(pos)))]
      y = int(np.clip(cy - s // 2 + self.rng.integers(-s // 4, s // 4 + 1), 0, h - s))
      x = int(np.clip(cx - s // 2 + self.rng.integers(-s // 4, s // 4 + 1), 0, w - s))
      return y, x
    return int(self.rng.integers(0, h - s + 1)), int(self.rng.integers(0, w - s + 1))

  def _view(self, cap: Capture, y: int, x: int, band_set: BandSet, nuisance: bool
            ) -> np.ndarray:
    s = self.size
    raw, sample = cap.raw[y:y + s, x:x + s], cap.sample
    if nuisance:
      p = raw_nuisance_params(self.rng)
      raw, sample = apply_raw_nuisance(raw, p), apply_raw_nuisance(sample, p)
      if self.dn_noise and self.rng.random() < 0.5:
        # sensor noise of one level in DNs for every band: large against the spread of the
        # quiet 60 m bands (B01, B09, B10), which must not read it as change
        sigma = float(self.rng.uniform(0.0, self.dn_noise))
        raw = np.maximum(raw + self.rng.normal(0.0, sigma, raw.shape), 0.0).astype(np.float32)
    looks = float(self.rng.uniform(2.0, 8.0))
    return capture_view(raw, sample, band_set, self.mode, self.archive, self.rng, looks)

  def chip(self, band_set: BandSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One augmented `(before, after, label)` chip for a band set."""
    rng, s = self.rng, self.size
    i = int(rng.choice(len(self.cities), p=self.weights))
    y, x = self._window(i, rng.random() < self.positive_fraction)
    city = self.cities[i]
    lab = city.label[y:y + s, x:x + s].astype(np.int8)
    caps = [city.before, city.after]
    if rng.random() < self.identity_prob:
      caps = [caps[int(rng.integers(2))]] * 2
      lab = np.where(lab == pair_data.IGNORE, pair_data.IGNORE, 0).astype(np.int8)
    nb, na = rng.random() < self.nuisance_prob, rng.random() < self.nuisance_prob
    b = self._view(caps[0], y, x, band_set, nb)
    a = self._view(caps[1], y, x, band_set, na)
    if rng.random() < self.paste_prob:
      j = int(rng.choice(len(self.cities), p=self.weights))
      dy, dx = self._window(j, False)
      donor = self._view(self.cities[j].after, dy, dx, band_set, False)
      a, lab = pair_data.paste_change(a, lab, donor, rng)
    if nb:
      b = pair_data.nuisance(b, rng, strength=0.5)
    if na:
      a = pair_data.nuisance(a, rng, strength=0.5)
    if rng.random() < 0.5:
      a, b = b, a
    b, a, lab = pair_data.random_geometry(rng, b, a, lab)
    return b, a, lab

  def batch(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`(before [n,s,s,K], after, band_code [n,K], label [n,s,s])` of one random band set,
    its bands in random order, sometimes with empty slots."""
    band_set = draw_band_set(self.rng, self.band_mix)
    chips = [self.chip(band_set) for _ in range(n)]
    b = np.stack([c[0] for c in chips])
    a = np.stack([c[1] for c in chips])
    lab = np.stack([c[2] for c in chips])
    codes = np.asarray(band_set.codes, np.float32)
    order = self.rng.permutation(len(codes))
    b, a, codes = b[..., order], a[..., order], codes[order]
    if self.rng.random() < self.pad_prob and len(codes) < norm.MAX_BANDS:
      k = len(codes) + int(self.rng.integers(1, norm.MAX_BANDS - len(codes) + 1))
      slots = np.sort(self.rng.choice(k, len(codes), replace=False))
      pb = np.zeros(b.shape[:3] + (k,), np.float32)
      pa = np.zeros_like(pb)
      pc = np.zeros(k, np.float32)
      pb[..., slots], pa[..., slots], pc[slots] = b, a, codes
      b, a, codes = pb, pa, pc
    return b, a, np.tile(codes[None], (n, 1)), lab


def validation_views(val_parts: Sequence[City], sets: Sequence[str], mode: str,
                     archive: tuple[np.ndarray, np.ndarray] | None) -> dict:
  """`{set: (band codes, [(before, after, label) per city])}` of the `VALIDATION_SETS` named,
  normalised as `mode` does (the input of `train_anyband.validate`)."""
  views = {}
  for name in sets:
    bs = fixed_band_set(VALIDATION_SETS[name], unknown=name in UNKNOWN_VALIDATION_SETS)
    views[name] = (np.asarray(bs.codes, np.float32),
                   [validation_view(c, bs, mode, archive) + (c.label,) for c in val_parts])
  return views


def validation_view(city: City, band_set: BandSet, mode: str,
                    archive: tuple[np.ndarray, np.ndarray] | None
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Whole normalised validation part of a city for a fixed (optical/index) band set."""
  rng = np.random.default_rng(0)
  return (capture_view(city.before.raw, city.before.sample, band_set, mode, archive, rng),
          capture_view(city.after.raw, city.after.sample, band_set, mode, archive, rng))

"""Changes of a capture's pixel values that are not change on the ground.

Shared by training (augmentations a model must learn to ignore) and evaluation (the issue's
nuisance checks: a capture paired with itself after one of them must not be flagged), so both
sides apply the same arithmetic.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

NUISANCES = ("brightness", "gamma", "noise", "shift", "haze")


def shift_image(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """Shifts by whole pixels, replicating the edge (a misregistration)."""
  if dy == 0 and dx == 0:
    return image
  h, w = image.shape[:2]
  ys = np.clip(np.arange(h) - dy, 0, h - 1)
  xs = np.clip(np.arange(w) - dx, 0, w - 1)
  return image[ys][:, xs]


def raw_gamma(image: np.ndarray, gamma: float, mean: np.ndarray, std: np.ndarray
              ) -> np.ndarray:
  """A gamma change of a normalised capture's raw values: must not be flagged as change.

  The z-scores go back to raw values (`z * std + mean`, the training statistics), each band
  is raised to `gamma` relative to a bright reference (`mean + 3 * std`, about the top of its
  range, as a rendering's contrast curve or a different processing would), and normalised
  again. Unlike the gain and offset of `nuisance`, this bends dark and bright pixels
  differently.
  """
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  ref = mean + 3.0 * std
  raw = np.maximum(image * std + mean, 0.0)
  return ((ref * (raw / ref) ** gamma - mean) / std).astype(np.float32)


def raw_nuisance(image: np.ndarray, rng: np.random.Generator, value_range: float | None = None
                 ) -> np.ndarray:
  """The nuisance check's change on raw pixels: brightness/contrast shift, noise, 1-px shift.

  Brightness +-5% of the range, contrast x0.9..1.1 about the image mean, Gaussian noise of 1%
  of the range and a one-pixel shift in a random direction. The range is 255 for 8-bit data,
  otherwise the image maximum.
  """
  if value_range is None:
    value_range = 255.0 if float(image.max()) <= 255.0 else float(image.max())
  mean = image.mean(axis=(0, 1), keepdims=True)
  contrast = rng.uniform(0.9, 1.1)
  brightness = rng.uniform(-0.05, 0.05) * value_range
  out = (image - mean) * contrast + mean + brightness
  out = out + rng.normal(0.0, 0.01 * value_range, image.shape)
  dy, dx = [(1, 0), (-1, 0), (0, 1), (0, -1)][int(rng.integers(4))]
  out = shift_image(out, dy, dx)
  return np.clip(out, 0, value_range).astype(np.float32)


def apply_nuisance(x: np.ndarray, codes: Sequence[float], kind: str,
                   rng: np.random.Generator) -> np.ndarray:
  """One nuisance of the issue's list, in 8-bit units of the capture.

  8-bit data is used as it is; indices ([-1, 1]) map to 0..255 linearly; other data (DNs,
  reflectance) map 0..R to 0..255 with R the 99.5th percentile of the capture. Nuisances:
  brightness x1.15 + 12, gamma 0.8, Gaussian noise of sigma 4, a 1-pixel shift, and 15% haze
  towards 200.
  """
  finite = x[np.isfinite(x)]
  if all(c == -2.0 for c in codes) or (finite.size and finite.min() >= -1.0 and
                                       finite.max() <= 1.0):
    lo, span = -1.0, 2.0
  elif finite.size and finite.max() <= 255.0:
    lo, span = 0.0, 255.0
  else:
    lo, span = 0.0, float(np.percentile(finite, 99.5)) if finite.size else 1.0
  u = (x - lo) / span * 255.0
  if kind == "brightness":
    u = u * 1.15 + 12.0
  elif kind == "gamma":
    u = 255.0 * (np.maximum(u, 0.0) / 255.0) ** 0.8
  elif kind == "noise":
    u = u + rng.normal(0.0, 4.0, u.shape)
  elif kind == "shift":
    u = shift_image(u, 0, 1)
  elif kind == "haze":
    u = 0.85 * u + 0.15 * 200.0
  else:
    raise ValueError(f"unknown nuisance {kind!r}")
  if span == 255.0 and lo == 0.0:
    u = np.clip(u, 0.0, 255.0)
  return (u / 255.0 * span + lo).astype(np.float32)

"""How any band set meets the 3-channel HED/VGG stem: select RGB, copy one band, or a whitened PCA."""
from __future__ import annotations

import dataclasses

import numpy as np

_VGG_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)
_BGR = {"B02": 0, "B03": 1, "B04": 2}  # blue, green, red
NOMINAL_STD = 50.0  # spread of a band fed to VGG when its own units are not 8-bit


@dataclasses.dataclass(frozen=True)
class StemMap:
  """The linear map from a capture's z-scored bands to VGG's input.

  Attributes:
    mode: "rgb", "replicate" or "pca" (see the module doc).
    matrix: `[C, 3]`; VGG input (BGR minus ImageNet mean) = `z @ matrix + offset`.
    offset: `[3]`.
  """
  mode: str
  matrix: np.ndarray
  offset: np.ndarray

  def as_json(self) -> dict:
    return {"mode": self.mode, "matrix": self.matrix.tolist(), "offset": self.offset.tolist()}


def _canonical(band: str) -> str:
  from changesweep.transforms.bands import canonical
  return canonical(band)


def stem_map(bands, band_mean, band_std, sample_z: np.ndarray | None = None) -> StemMap:
  """Chooses how `bands` feed the 3-channel VGG stem (module doc).

  Args:
    bands: the capture's band names, in the order of its channels.
    band_mean: per-band mean of the fitting pixels (their own units).
    band_std: per-band standard deviation.
    sample_z: `[N, C]` z-scored fitting pixels; needed only for the `pca` mode.

  Raises:
    ValueError: the `pca` mode is needed and no sample is given.
  """
  c = len(bands)
  mean = np.asarray(band_mean, np.float32).reshape(c)
  std = np.asarray(band_std, np.float32).reshape(c)
  matrix = np.zeros((c, 3), np.float32)
  offset = np.zeros(3, np.float32)
  names = [_canonical(b) for b in bands]
  if all(k in names for k in _BGR):
    idx = {k: names.index(k) for k in _BGR}
    eight_bit = all(0.0 < mean[i] <= 255.0 and std[i] <= 128.0 for i in idx.values())
    for key, g in _BGR.items():
      i = idx[key]
      if eight_bit:
        matrix[i, g] = std[i]
        offset[g] = mean[i] - _VGG_BGR_MEAN[g]
      else:
        matrix[i, g] = NOMINAL_STD
    return StemMap("rgb", matrix, offset)
  if c == 1:
    matrix[0, :] = NOMINAL_STD
    return StemMap("replicate", matrix, offset)
  if sample_z is None:
    raise ValueError(f"bands {list(bands)} need a pixel sample for their PCA stem map")
  x = np.asarray(sample_z, np.float64)
  x = x[np.isfinite(x).all(axis=1)]
  values, vectors = np.linalg.eigh(np.cov(x - x.mean(0), rowvar=False))
  order = np.argsort(values)[::-1][:min(3, c)]
  for g in range(3):
    k = order[g % len(order)]
    v = vectors[:, k]
    v = v if v[np.argmax(np.abs(v))] >= 0 else -v  # deterministic sign
    matrix[:, g] = NOMINAL_STD * v / np.sqrt(max(values[k], 1e-8))
  return StemMap("pca", matrix, offset)

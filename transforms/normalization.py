"""Per-capture robust normalisation: the same numbers for a capture whatever else a night sweeps.

A capture's bands are normalised with statistics of that capture alone (median and
1.4826 * MAD of its valid pixels, per band), so a model reads Sentinel-2 digital numbers,
8-bit renderings, reflectances or an index alike, and nothing depends on the rest of the
archive. `capture_stats` is the numpy side (the pipeline calls it on the decimated overview
its usability pass reads); `normalize_tf` is the same arithmetic in TensorFlow, used inside the
any-band model's `serving_default`; `write_transform_fn` stores it as a tf.Transform function
(no analyzers) in the model directory so the directory stays hermetic and of format v1.

Band codes (see CONTRACT.md) decide the `prepare` step before statistics and normalisation:
every band is used as it is (indices in [-1, 1], optical DNs, SAR in linear power or dB); only
non-finite values are treated as invalid.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

# The band codes are the sweep's (`transforms.bands`; the tables live in `band_tables`).
from changesweep.transforms.band_tables import (  # noqa: E402,F401  (re-exported)
    CODE_EMPTY, CODE_INDEX, CODE_SAR, CODE_UNKNOWN, MAX_BANDS, S2_WAVELENGTHS)

S2_BANDS = tuple(S2_WAVELENGTHS)

MAD_TO_SIGMA = 1.4826
# Floors of the scale: a flat band must not blow up its noise (relative to the band's level,
# and an absolute floor for indices and zero-centred data).
RELATIVE_FLOOR = 1e-3
ABSOLUTE_FLOOR = 1e-3
# Normalised values are clipped to this magnitude (clouds, saturated pixels, speckle spikes).
Z_CLIP = 8.0
MAX_STAT_PIXELS = 262_144
ARCHIVE_OPTICAL = "archive_optical"
ARCHIVE_OPTICAL_ROBUST = "archive_optical_robust"
NORMALIZATIONS = ("capture_robust", "archive", ARCHIVE_OPTICAL, ARCHIVE_OPTICAL_ROBUST)
# "archive_optical": archive statistics pooled per optical band identity (code > 0); an index,
# SAR or unnamed band is normalised with its own capture's mean and standard deviation (an
# index is comparable across sensors, but its level moves with the season; an unnamed band has
# no identity to pool by).
# "archive_optical_robust": the same, but the non-optical bands get the capture's median and
# 1.4826 * MAD (`capture_stats`): an index or unnamed band is skewed (water, clouds, bare soil),
# and its robust centre and spread move less between the two captures of a pair than mean/std.
# Modes whose optical bands are pooled over the archive (the sweep's `BandStatistics`).
OPTICAL_ONLY_MODES = (ARCHIVE_OPTICAL, ARCHIVE_OPTICAL_ROBUST)


def capture_stats(pixels: np.ndarray, codes: Sequence[float], max_pixels: int = MAX_STAT_PIXELS,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Robust per-band centre and scale of one capture.

  Args:
    pixels: `[N, C]` (or `[H, W, C]`) values of the capture; non-finite values are ignored.
    codes: band_code of each of the C bands (CODE_EMPTY bands get centre 0, scale 1).
    max_pixels: At most this many pixels are used (a fixed-seed subsample of larger inputs).
    seed: Seed of that subsample, so one capture always gets the same numbers.

  Returns:
    `(center [C], scale [C])` float32: the median and `max(1.4826 * MAD, floor)` per band.

  Raises:
    ValueError: when the number of codes differs from the number of bands.
  """
  pixels = np.asarray(pixels, np.float32)
  pixels = pixels.reshape(-1, pixels.shape[-1])
  c = pixels.shape[1]
  if len(codes) != c:
    raise ValueError(f"{len(codes)} band codes for {c} bands")
  if pixels.shape[0] > max_pixels:
    idx = np.random.default_rng(seed).choice(pixels.shape[0], max_pixels, replace=False)
    pixels = pixels[np.sort(idx)]
  center = np.zeros(c, np.float32)
  scale = np.ones(c, np.float32)
  for k, code in enumerate(codes):
    if float(code) == CODE_EMPTY:
      continue
    v = pixels[:, k]
    v = v[np.isfinite(v)]
    if not v.size:
      continue
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med))) * MAD_TO_SIGMA
    if mad <= 0.0:  # more than half the pixels equal: fall back to the spread of the rest
      mad = float(np.std(v))
    center[k] = med
    scale[k] = max(mad, RELATIVE_FLOOR * abs(med), ABSOLUTE_FLOOR)
  return center, scale


def capture_mean_std(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-band mean and standard deviation of finite values (what the sweep's usability pass
  records on each capture's overview); `[N, C]` or `[H, W, C]` in, `(mean [C], std [C])` out."""
  x = np.asarray(pixels, np.float64)
  x = x.reshape(-1, x.shape[-1])
  finite = np.isfinite(x)
  n = np.maximum(finite.sum(0), 1)
  xz = np.where(finite, x, 0.0)
  mean = xz.sum(0) / n
  std = np.sqrt(np.maximum((xz * xz).sum(0) / n - mean ** 2, 0.0))
  return mean.astype(np.float32), np.maximum(std, ABSOLUTE_FLOOR).astype(np.float32)


def optical_mix(codes: Sequence[float], archive: tuple[np.ndarray, np.ndarray],
                capture: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """The "archive_optical" statistics: `archive` where a band is optical (code > 0), else
  `capture` (indices, SAR, unknown bands); empty slots get centre 0, scale 1."""
  codes = np.asarray(codes, np.float32)
  optical = codes > 0
  center = np.where(optical, archive[0], capture[0]).astype(np.float32)
  scale = np.where(optical, archive[1], capture[1]).astype(np.float32)
  empty = codes == CODE_EMPTY
  return np.where(empty, 0.0, center).astype(np.float32), np.where(empty, 1.0, scale).astype(
      np.float32)


def capture_side_stats(mode: str, pixels: np.ndarray, codes: Sequence[float]
                       ) -> tuple[np.ndarray, np.ndarray]:
  """The capture's own statistics a mixed mode uses for its non-optical bands.

  Args:
    mode: "archive_optical" (mean/std) or "archive_optical_robust" (median/MAD).
    pixels: `[N, C]` (or `[H, W, C]`) values of the capture.
    codes: band_code of each of the C bands.

  Returns:
    `(center [C], scale [C])` float32.

  Raises:
    ValueError: for a mode without capture statistics of this kind.
  """
  if mode == ARCHIVE_OPTICAL:
    return capture_mean_std(pixels)
  if mode == ARCHIVE_OPTICAL_ROBUST:
    return capture_stats(pixels, codes)
  raise ValueError(f"normalization {mode!r} does not mix archive and capture statistics")


def mixed_stats(mode: str, codes: Sequence[float], archive: tuple[np.ndarray, np.ndarray],
                pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """`optical_mix` of the archive statistics and the capture's own (`capture_side_stats`)."""
  return optical_mix(codes, archive, capture_side_stats(mode, pixels, codes))


def normalize_np(x: np.ndarray, center: np.ndarray, scale: np.ndarray,
                 codes: Sequence[float]) -> np.ndarray:
  """`(x - center) / scale`, clipped to +-Z_CLIP, 0 in empty slots and at non-finite values."""
  x = np.asarray(x, np.float32)
  z = (x - np.asarray(center, np.float32)) / np.asarray(scale, np.float32)
  z = np.clip(z, -Z_CLIP, Z_CLIP)
  present = np.asarray(codes, np.float32) != CODE_EMPTY
  z = np.where(np.isfinite(z) & present, z, 0.0)
  return z.astype(np.float32)


def normalize_tf(x, center, scale, band_code):
  """The TensorFlow twin of `normalize_np` over batches.

  Args:
    x: `[b, S, S, K]` raw values (non-finite allowed).
    center: `[b, K]`.
    scale: `[b, K]`.
    band_code: `[b, K]`.

  Returns:
    `[b, S, S, K]` float32 normalised values.
  """
  import tensorflow as tf
  x = tf.convert_to_tensor(x, tf.float32)
  center = tf.convert_to_tensor(center, tf.float32)[:, None, None, :]
  scale = tf.convert_to_tensor(scale, tf.float32)[:, None, None, :]
  scale = tf.where(scale > 0, scale, tf.ones_like(scale))
  present = tf.convert_to_tensor(band_code, tf.float32)[:, None, None, :] != CODE_EMPTY
  safe = tf.where(tf.math.is_finite(x), x, tf.zeros_like(x))
  z = tf.clip_by_value((safe - center) / scale, -Z_CLIP, Z_CLIP)
  keep = tf.logical_and(tf.math.is_finite(x), present)
  return tf.where(keep, z, tf.zeros_like(z))


# ----------------------------------------------------------------------------- tf.Transform

BEFORE = "before"
AFTER = "after"
VALID = "valid"
BAND_CODE = "band_code"
STAT_KEYS = ("before_center", "before_scale", "after_center", "after_scale")


def raw_feature_spec(max_bands: int, chip_size: int) -> dict:
  """Raw feature spec of one any-band chip instance."""
  import tensorflow as tf
  pixels = chip_size * chip_size
  spec = {BEFORE: tf.io.FixedLenFeature([pixels * max_bands], tf.float32),
          AFTER: tf.io.FixedLenFeature([pixels * max_bands], tf.float32),
          VALID: tf.io.FixedLenFeature([pixels], tf.float32),
          BAND_CODE: tf.io.FixedLenFeature([max_bands], tf.float32)}
  spec.update({k: tf.io.FixedLenFeature([max_bands], tf.float32) for k in STAT_KEYS})
  return spec


def make_preprocessing_fn(max_bands: int, chip_size: int):
  """A `preprocessing_fn` applying the per-capture normalisation (no analyzers needed)."""
  pixels = chip_size * chip_size

  def preprocessing_fn(inputs: Mapping) -> dict:
    import tensorflow as tf
    out = {}
    for key in (BEFORE, AFTER):
      x = tf.reshape(inputs[key], [-1, chip_size, chip_size, max_bands])
      z = normalize_tf(x, inputs[f"{key}_center"], inputs[f"{key}_scale"], inputs[BAND_CODE])
      valid = tf.reshape(inputs[VALID], [-1, chip_size, chip_size, 1]) > 0.5
      z = tf.where(valid, z, tf.zeros_like(z))
      out[key] = tf.reshape(z, [-1, pixels * max_bands])
    out[VALID] = inputs[VALID]
    out[BAND_CODE] = inputs[BAND_CODE]
    return out

  return preprocessing_fn


def write_transform_fn(output_dir: str, max_bands: int = MAX_BANDS, chip_size: int = 256) -> str:
  """Writes the per-capture normalisation as a tf.Transform transform_fn directory.

  No analyzers run (the statistics come with each capture), so no Beam pipeline is needed:
  `tft.impl_helper.trace_and_write_v2_saved_model` would do the same; we use tf.Transform's
  in-process Beam runner on one dummy instance to get exactly the directory layout the sweep's
  tf.Transform code reads.
  """
  import tempfile
  import apache_beam as beam
  import tensorflow_transform.beam as tft_beam
  from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

  metadata = dataset_metadata.DatasetMetadata(
      schema_utils.schema_from_feature_spec(raw_feature_spec(max_bands, chip_size)))
  pixels = chip_size * chip_size
  dummy = {BEFORE: np.zeros(pixels * max_bands, np.float32),
           AFTER: np.zeros(pixels * max_bands, np.float32),
           VALID: np.ones(pixels, np.float32), BAND_CODE: np.zeros(max_bands, np.float32)}
  dummy.update({k: np.ones(max_bands, np.float32) for k in STAT_KEYS})
  with beam.Pipeline(runner="FnApiRunner") as p:
    with tft_beam.Context(temp_dir=tempfile.mkdtemp(prefix="tft-")):
      transform_fn = ((p | "Create" >> beam.Create([dummy], reshuffle=False), metadata)
                      | "Analyze" >> tft_beam.AnalyzeDataset(
                          make_preprocessing_fn(max_bands, chip_size)))
      _ = transform_fn | "Write" >> tft_beam.WriteTransformFn(output_dir)
  return output_dir


def transform_fn_shape(transform_dir: str) -> tuple[int, int]:
  """`(max_bands, chip_size)` an any-band transform_fn was written for."""
  import tensorflow_transform as tft
  spec = tft.TFTransformOutput(transform_dir).raw_feature_spec()
  return spec[BAND_CODE].shape[0], int(round(spec[VALID].shape[0] ** 0.5))

"""tf.Transform preprocessing: per-band statistics over an archive, applied to both captures.

One instance is one chip of a pair: the two captures' pixels flattened in HWC order and a
validity mask. Statistics are computed per band over the valid pixels of *both* captures, so
both are normalised with the same numbers and a change in the data is not normalised away.
"""
from __future__ import annotations

import tempfile
from typing import Callable, Iterable, Mapping

import numpy as np

BEFORE = "before"
AFTER = "after"
VALID = "valid"
KEY = "chip_key"

# Bands whose standard deviation is below this are constant; they are centred, not scaled.
_MIN_STD = 1e-6


def raw_feature_spec(num_bands: int, chip_size: int) -> dict[str, tf.io.FixedLenFeature]:
  """The raw (pre-transform) feature spec of one chip instance."""
  import tensorflow as tf  # imported where used: CPU-only stages import this module's names

  pixels = chip_size * chip_size
  return {
      KEY: tf.io.FixedLenFeature([], tf.string),
      BEFORE: tf.io.FixedLenFeature([pixels * num_bands], tf.float32),
      AFTER: tf.io.FixedLenFeature([pixels * num_bands], tf.float32),
      VALID: tf.io.FixedLenFeature([pixels], tf.float32),
  }


def make_preprocessing_fn(num_bands: int, chip_size: int) -> Callable:
  """Returns a `preprocessing_fn` that z-scores each band with archive-wide statistics.

  Per-band statistics need the pixels reshaped to `[pixels, bands]` before the analyzers:
  tf.Transform's analyzers reduce over the first dimension only when
  `reduce_instance_dims=False`, and would otherwise mix all bands together.
  """
  import tensorflow as tf
  import tensorflow_transform as tft  # imported late: it switches tf.keras to tf_keras

  if num_bands < 1 or chip_size < 1:
    raise ValueError(f"num_bands and chip_size must be positive, got {num_bands}, {chip_size}")
  pixels = chip_size * chip_size

  def preprocessing_fn(inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    before = tf.reshape(inputs[BEFORE], [-1, num_bands])
    after = tf.reshape(inputs[AFTER], [-1, num_bands])
    valid = tf.reshape(inputs[VALID], [-1]) > 0.5
    sample = tf.concat([tf.boolean_mask(before, valid), tf.boolean_mask(after, valid)], axis=0)
    mean = tft.mean(sample, reduce_instance_dims=False, name="band_mean")
    var = tft.var(sample, reduce_instance_dims=False, name="band_var")
    std = tf.sqrt(var)
    std = tf.where(std > _MIN_STD, std, tf.ones_like(std))
    keep = tf.cast(tf.reshape(inputs[VALID], [-1, pixels, 1]), tf.float32)

    def normalise(x: tf.Tensor) -> tf.Tensor:
      z = (tf.reshape(x, [-1, pixels, num_bands]) - mean) / std
      # Invalid pixels become 0 (the band mean): finite, and never a source of change.
      z = tf.where(keep > 0, z, tf.zeros_like(z))
      return tf.reshape(z, [-1, pixels * num_bands])

    return {
        KEY: inputs[KEY],
        BEFORE: normalise(inputs[BEFORE]),
        AFTER: normalise(inputs[AFTER]),
        VALID: tf.reshape(inputs[VALID], [-1, pixels]),
    }

  return preprocessing_fn


def make_instance(key: str | bytes, before: np.ndarray, after: np.ndarray,
                  valid: np.ndarray) -> dict[str, np.ndarray | bytes]:
  """Builds one raw instance from `[S, S, C]` chips and an `[S, S]` mask."""
  if before.shape != after.shape or before.shape[:2] != valid.shape:
    raise ValueError(f"chip shapes differ: before {before.shape}, after {after.shape}, "
                     f"valid {valid.shape}")
  return {
      KEY: key.encode() if isinstance(key, str) else key,
      BEFORE: np.ascontiguousarray(before, dtype=np.float32).reshape(-1),
      AFTER: np.ascontiguousarray(after, dtype=np.float32).reshape(-1),
      VALID: np.ascontiguousarray(valid, dtype=np.float32).reshape(-1),
  }


def analyze_to_dir(instances: Iterable[Mapping], num_bands: int, chip_size: int,
                   output_dir: str) -> str:
  """Computes the statistics of `instances` with tf.Transform and writes the transform_fn.

  Runs on Beam's in-process runner; used by training. The sweep runs the same
  `preprocessing_fn` inside its own pipeline.

  Returns:
    `output_dir`, now a directory that `tft.TFTransformOutput` reads.
  """
  import apache_beam as beam
  import tensorflow_transform.beam as tft_beam
  from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

  metadata = dataset_metadata.DatasetMetadata(
      schema_utils.schema_from_feature_spec(raw_feature_spec(num_bands, chip_size)))
  instances = list(instances)
  if not instances:
    raise ValueError("no chips to compute statistics from")
  with beam.Pipeline(runner="FnApiRunner") as p:
    with tft_beam.Context(temp_dir=tempfile.mkdtemp(prefix="tft-")):
      transform_fn = (
          (p | "CreateChips" >> beam.Create(instances, reshuffle=False), metadata)
          | "Analyze" >> tft_beam.AnalyzeDataset(make_preprocessing_fn(num_bands, chip_size)))
      _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(output_dir)
  return output_dir


def load_normalizer(transform_dir: str) -> Callable:
  """Loads a transform_fn directory as a function over batched chips.

  Returns:
    `normalise(before, after, valid) -> (before_n, after_n)` taking `[b, S, S, C]` pixels and a
    `[b, S, S]` mask, returning z-scored `[b, S, S, C]` float32 tensors.
  """
  import tensorflow as tf
  import tensorflow_transform as tft

  output = tft.TFTransformOutput(transform_dir)
  spec = output.transformed_feature_spec()
  layer = output.transform_features_layer()
  pixels_x_bands = spec[BEFORE].shape[0]
  pixels = spec[VALID].shape[0]
  num_bands = pixels_x_bands // pixels
  size = int(round(pixels ** 0.5))

  def normalise(before, after, valid):
    before = tf.convert_to_tensor(before, tf.float32)
    after = tf.convert_to_tensor(after, tf.float32)
    valid = tf.convert_to_tensor(valid, tf.float32)
    batch = tf.shape(before)[0]
    out = layer({
        KEY: tf.fill([batch], ""),
        BEFORE: tf.reshape(before, [batch, pixels_x_bands]),
        AFTER: tf.reshape(after, [batch, pixels_x_bands]),
        VALID: tf.reshape(valid, [batch, pixels]),
    })
    shape = [batch, size, size, num_bands]
    return tf.reshape(out[BEFORE], shape), tf.reshape(out[AFTER], shape)

  normalise.layer = layer  # keep it tracked when the function is attached to a tf.Module
  normalise.num_bands = num_bands
  normalise.chip_size = size
  return normalise


def transform_dir_shape(transform_dir: str) -> tuple[int, int]:
  """Returns `(num_bands, chip_size)` that a transform_fn directory was written for."""
  import tensorflow_transform as tft

  spec = tft.TFTransformOutput(transform_dir).transformed_feature_spec()
  pixels = spec[VALID].shape[0]
  return spec[BEFORE].shape[0] // pixels, int(round(pixels ** 0.5))


def band_statistics(transform_dir: str) -> tuple[np.ndarray, np.ndarray]:
  """Recovers the per-band mean and std baked into a transform_fn (for reports and tests)."""
  num_bands, size = transform_dir_shape(transform_dir)
  normalise = load_normalizer(transform_dir)
  zeros = np.zeros((1, size, size, num_bands), np.float32)
  ones = np.ones((1, size, size, num_bands), np.float32)
  valid = np.ones((1, size, size), np.float32)
  z0, _ = normalise(zeros, zeros, valid)
  z1, _ = normalise(ones, ones, valid)
  z0 = z0.numpy()[0, 0, 0]
  z1 = z1.numpy()[0, 0, 0]
  std = 1.0 / (z1 - z0)
  return -z0 * std, std


"""The model directory: the one format the sweep, training and evaluation agree on.

    MODEL_DIR/
      metadata.json   what the model reads (bands, chip size) and how to threshold it
      transform_fn/   the tf.Transform statistics it was trained with
      saved_model/    signatures `normalized(before, after)` over z-scored chips and
                      `serving_default(before, after)` over raw pixels (transform embedded)

Both signatures take float32 `[batch, S, S, C]` captures and return
`{"change_prob": float32 [batch, S, S]}`.

Any-band models (`"band_mode": "any"` in metadata.json; absent means fixed bands) keep the
same layout and format string. Their `serving_default` takes the keyword inputs `ANY_INPUTS`
(CONTRACT.md): `before`, `after` `[b, S, S, max_bands]` raw values with zeros in empty slots,
`valid` `[b, S, S]`, and per slot `band_code`, `before_center`, `before_scale`,
`after_center`, `after_scale` `[b, max_bands]`; `normalized(before, after, band_code)` takes
already normalised captures. Their `transform_fn/` holds the same normalisation as a
tf.Transform function without analyzers (`transforms.normalization`).
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Callable

import tensorflow as tf

from changesweep.model.model_dir import (  # noqa: F401  (re-exported: the format's names)
    ANY_INPUTS, BAND_MODES, FORMAT, KINDS, METADATA_FILE, NORMALIZED_SIGNATURE, OUTPUT_KEY,
    SAVED_MODEL_DIR, TRANSFORM_DIR, ModelDirError, ModelInfo, read_model_info, validate_metadata)


def load_saved_model(info: ModelInfo):
  """Loads the SavedModel of a validated model directory."""
  return tf.saved_model.load(info.saved_model_dir)


def _as_callable(network) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  """Keras models take `[before, after]`; plain callables take `(before, after)`."""
  try:
    import keras
    if isinstance(network, keras.Model):
      return lambda before, after: network([before, after], training=False)
  except ImportError:  # pragma: no cover - keras ships with TensorFlow
    pass
  return network


class _ChangeModule(tf.Module):
  """The exported module: the network with and without its embedded tf.Transform."""

  def __init__(self, network, transform_dir: str, chip_size: int, num_bands: int):
    super().__init__(name="changesweep_model")
    from changesweep.transforms.preprocessing import load_normalizer

    self.network = network
    call = _as_callable(network)
    self._normalise = load_normalizer(transform_dir)
    self.tft_layer = self._normalise.layer
    spec = tf.TensorSpec([None, chip_size, chip_size, num_bands], tf.float32)

    def probabilities(before, after):
      prob = tf.convert_to_tensor(call(before, after))
      if prob.shape.rank == 4:
        prob = prob[..., 0]
      return {OUTPUT_KEY: tf.cast(prob, tf.float32)}

    @tf.function(input_signature=[spec, spec])
    def normalized(before, after):
      return probabilities(before, after)

    @tf.function(input_signature=[spec, spec])
    def serving_default(before, after):
      finite = tf.logical_and(tf.math.is_finite(before), tf.math.is_finite(after))
      valid = tf.cast(tf.reduce_all(finite, axis=-1), tf.float32)
      before = tf.where(finite, before, tf.zeros_like(before))
      after = tf.where(finite, after, tf.zeros_like(after))
      before_n, after_n = self._normalise(before, after, valid)
      out = probabilities(before_n, after_n)
      return {OUTPUT_KEY: out[OUTPUT_KEY] * valid}

    self.normalized = normalized
    self.serving_default = serving_default


def _fresh_dir(out_dir: str) -> None:
  """An empty `out_dir` (a model directory is replaced whole, never merged into)."""
  if os.path.exists(out_dir):
    shutil.rmtree(out_dir)
  os.makedirs(out_dir)


class _Signatures(tf.Module):
  """What a model's SavedModel holds: its signatures and the state they read, nothing more.

  Saving the exporting module itself would also write every Keras layer as an object of the
  SavedModel (1,282 objects and three extra copies of the graph for the ensemble), and each
  process that scores rebuilds them all: 1.7 s against 0.65 s to load the ensemble here. The
  networks' own weights for training live beside it (`checkpoint.weights.h5`, `network.keras`).
  """

  def __init__(self, functions: dict, resources=()):
    super().__init__(name="changesweep_signatures")
    # each variable once, though both signatures read it
    self.state = list({id(v): v for fn in functions.values() for v in fn.variables}.values())
    # tables and assets a signature reads (the embedded tf.Transform layer), tracked as they are
    self.resources = [r for r in resources if r is not None]


def save_signatures(path: str, functions: dict, resources=()) -> None:
  """Writes `functions` (name -> concrete function) as a SavedModel of signatures only."""
  tf.saved_model.save(_Signatures(functions, resources), path, signatures=functions)


def slim_saved_model(model_dir: str) -> None:
  """Rewrites a model directory's SavedModel as its signatures only (same graphs, same outputs).

  For model directories exported before `save_signatures`; a fresh export is already slim.
  """
  info = read_model_info(model_dir)
  loaded = tf.saved_model.load(info.saved_model_dir)
  functions = dict(loaded.signatures)
  tmp = info.saved_model_dir.rstrip("/") + ".slim"
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  save_signatures(tmp, functions,
                  [getattr(loaded, "tft_layer", None), *getattr(loaded, "resources", ())])
  shutil.rmtree(info.saved_model_dir)
  os.replace(tmp, info.saved_model_dir)


def _save(out_dir: str, module, metadata: dict) -> ModelInfo:
  """Saves the module's two signatures and the metadata, and reads the directory back."""
  save_signatures(os.path.join(out_dir, SAVED_MODEL_DIR), {
      "serving_default": module.serving_default.get_concrete_function(),
      NORMALIZED_SIGNATURE: module.normalized.get_concrete_function(),
  }, [getattr(module, "tft_layer", None)])
  with open(os.path.join(out_dir, METADATA_FILE), "w") as f:
    json.dump(metadata, f, indent=2, sort_keys=True)
    f.write("\n")
  return read_model_info(out_dir)


def export_model_dir(out_dir: str, network, transform_dir: str, metadata: dict) -> ModelInfo:
  """Writes a complete model directory and returns its validated info.

  Args:
    out_dir: the directory to create (replaced if it exists).
    network: a Keras model taking `[before, after]`, or a callable `(before, after)`, on
      z-scored `[b, S, S, C]` chips, returning change probabilities `[b, S, S]` (or `[..., 1]`).
    transform_dir: the tf.Transform output the network was trained with; copied in.
    metadata: the metadata fields (`format` is filled in).
  """
  from changesweep.transforms.preprocessing import transform_dir_shape

  metadata = {"format": FORMAT, **metadata}
  validate_metadata(metadata, "metadata")
  num_bands, chip_size = transform_dir_shape(transform_dir)
  if num_bands != len(metadata["bands"]) or chip_size != metadata["chip_size"]:
    raise ModelDirError(
        f"transform_fn is for {num_bands} bands and {chip_size}px chips, but the metadata says "
        f"{len(metadata['bands'])} bands ({metadata['bands']}) and {metadata['chip_size']}px")
  _fresh_dir(out_dir)
  shutil.copytree(transform_dir, os.path.join(out_dir, TRANSFORM_DIR))
  module = _ChangeModule(network, os.path.join(out_dir, TRANSFORM_DIR), chip_size, num_bands)
  return _save(out_dir, module, metadata)


class _AnyBandModule(tf.Module):
  """The exported any-band module: per-capture normalisation + network, one signature.

  `serving_default` runs the band stem only on the occupied slots (up to the last slot with a
  non-zero band_code in the batch), so a 1-band capture costs a 1-band forward pass.
  """

  def __init__(self, network, chip_size: int, max_bands: int):
    super().__init__(name="changesweep_anyband_model")
    from changesweep.transforms.normalization import normalize_tf

    self.network = network
    image = tf.TensorSpec([None, chip_size, chip_size, max_bands], tf.float32)
    mask = tf.TensorSpec([None, chip_size, chip_size], tf.float32)
    per_band = tf.TensorSpec([None, max_bands], tf.float32)

    def occupied(band_code):
      present = tf.cast(tf.not_equal(band_code, 0.0), tf.int32)
      last = tf.reduce_max(present * tf.range(1, max_bands + 1)[None, :])
      return tf.maximum(last, 1)

    def probabilities(before, after, band_code):
      k = occupied(band_code)
      logit = network([before[..., :k], after[..., :k], band_code[:, :k]], training=False)
      return tf.sigmoid(tf.cast(logit, tf.float32))

    @tf.function(input_signature=[image, image, per_band])
    def normalized(before, after, band_code):
      return {OUTPUT_KEY: probabilities(before, after, band_code)}

    @tf.function(input_signature=[image, image, mask, per_band, per_band, per_band, per_band,
                                  per_band])
    def serving_default(before, after, valid, band_code, before_center, before_scale,
                        after_center, after_scale):
      keep = tf.cast(valid > 0.5, tf.float32)
      zb = normalize_tf(before, before_center, before_scale, band_code) * keep[..., None]
      za = normalize_tf(after, after_center, after_scale, band_code) * keep[..., None]
      return {OUTPUT_KEY: probabilities(zb, za, band_code) * keep}

    self.normalized = normalized
    self.serving_default = serving_default


def export_anyband_model_dir(out_dir: str, network, metadata: dict) -> ModelInfo:
  """Writes an any-band model directory (metadata `band_mode: "any"`) and returns its info.

  Args:
    out_dir: the directory to create (replaced if it exists).
    network: a Keras model `[before, after, band_code] -> logit [b, S, S]` over normalised
      captures, accepting any number of band slots.
    metadata: the metadata fields; `chip_size` and `max_bands` fix the signature's shapes.
  """
  from changesweep.transforms import normalization

  metadata = {"format": FORMAT, "band_mode": "any", "normalization": "capture_robust",
              **metadata}
  validate_metadata(metadata, "metadata")
  chip_size, max_bands = metadata["chip_size"], metadata["max_bands"]
  _fresh_dir(out_dir)
  normalization.write_transform_fn(os.path.join(out_dir, TRANSFORM_DIR), max_bands, chip_size)
  module = _AnyBandModule(network, chip_size, max_bands)
  return _save(out_dir, module, metadata)

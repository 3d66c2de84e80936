"""Normalise chips with tf.Transform and score them with RunInference over the model directory."""
from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy

from model.format import NORMALIZED_SIGNATURE, OUTPUT_KEY
from pipeline.chips import split_chip_key
from pipeline.elements import PROB_SCALE
from pipeline.metrics import inc_counter
from transforms import preprocessing

STAGE = "scoring"


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


class SavedModelHandler(TFModelHandlerNumpy):
  """Beam's TF handler, loading a `tf.saved_model.save` directory.

  Beam's handler loads with Keras `load_model`, which refuses plain SavedModels with
  signatures; only loading changes here, batching and metrics stay Beam's.

  With `accelerator` (a Dataflow accelerator spec, see `pipeline.dataflow`) the inference step
  carries it as a resource hint, and with `require_gpu` loading fails on a worker without a
  GPU instead of silently scoring on CPU.
  """

  def __init__(self, *args, accelerator: str | None = None, require_gpu: bool = False,
               **kwargs):
    super().__init__(*args, **kwargs)
    self._accelerator = accelerator
    self._require_gpu = require_gpu or bool(accelerator)

  def load_model(self):
    import tensorflow as tf

    if self._require_gpu:
      from pipeline import dataflow

      dataflow.require_gpu("RunInference")
    return tf.saved_model.load(self._model_uri)

  def get_resource_hints(self) -> dict:
    return {"accelerator": self._accelerator} if self._accelerator else {}


def infer_chips(model, batch, inference_args=None, model_id=None):
  """Runs the `normalized` signature on `[S, S, 2C+1]` chips (before, after, valid).

  Returns:
    One PredictionResult per chip whose inference is `[S, S, 2]` (probability, validity); the
    example itself is dropped so pixels are not carried further than needed.
  """
  import tensorflow as tf

  x = np.stack(batch)
  bands = (x.shape[-1] - 1) // 2
  fn = model.signatures[NORMALIZED_SIGNATURE]
  prob = fn(before=tf.constant(x[..., :bands]),
            after=tf.constant(x[..., bands:2 * bands]))[OUTPUT_KEY].numpy()
  valid = x[..., -1]
  out = np.stack([np.clip(prob, 0.0, 1.0) * valid, valid], axis=-1)
  return [PredictionResult(None, o, model_id) for o in out]


def to_model_input(instance: dict, num_bands: int, chip_size: int) -> tuple[str, np.ndarray]:
  """A transformed tf.Transform instance -> `(chip_key, [S, S, 2C+1] float32)`."""
  shape = (chip_size, chip_size, num_bands)
  key = instance[preprocessing.KEY]
  return (key.decode() if isinstance(key, bytes) else str(key), np.concatenate([
      np.asarray(instance[preprocessing.BEFORE], np.float32).reshape(shape),
      np.asarray(instance[preprocessing.AFTER], np.float32).reshape(shape),
      np.asarray(instance[preprocessing.VALID], np.float32).reshape(shape[:2] + (1,)),
  ], axis=-1))


def to_chip_score(keyed: tuple[str, PredictionResult]) -> tuple[str, ChipScore]:
  key, result = keyed
  pair_id, index = split_chip_key(key)
  out = np.asarray(result.inference)
  inc_counter(STAGE, "chips_scored")
  return pair_id, ChipScore(index, np.round(out[..., 0] * PROB_SCALE).astype(np.uint8),
                            out[..., 1] > 0.5)


def capped_batch_size(batch_size: int, max_batch_bytes: int | None, chip_size: int,
                      num_bands: int) -> int:
  """Largest batch in chips that stays within `max_batch_bytes` of model input (at least 1).

  Chips are fixed-size (`[S, S, 2C+1]` float32), so a byte cap is a chip count. (Beam 2.77's
  handler accepts `max_batch_weight`, but its BatchElements does not take it.)
  """
  if not max_batch_bytes:
    return batch_size
  chip_bytes = chip_size * chip_size * (2 * num_bands + 1) * 4
  return max(1, min(batch_size, max_batch_bytes // chip_bytes))


def make_model_handler(saved_model_dir: str, batch_size: int, large_model: bool = False,
                       model_copies: int | None = None, accelerator: str | None = None,
                       require_gpu: bool = False) -> KeyedModelHandler:
  """The keyed RunInference handler; see SavedModelHandler for `accelerator`/`require_gpu`."""
  return KeyedModelHandler(SavedModelHandler(
      saved_model_dir, inference_fn=infer_chips, min_batch_size=1, max_batch_size=batch_size,
      large_model=large_model, model_copies=model_copies, accelerator=accelerator,
      require_gpu=require_gpu))


class ScoreChips(beam.PTransform):
  """Raw chip instances + a transform_fn -> `(pair_id, ChipScore)` and the inference DLQ.

  Normalisation is tf.Transform's `TransformDataset` with either the statistics computed over
  this archive or the model's own; scoring is `RunInference` on the model's `normalized`
  signature.
  """

  def __init__(self, transform_fn, raw_metadata, handler: KeyedModelHandler, num_bands: int,
               chip_size: int):
    super().__init__()
    self.transform_fn = transform_fn
    self.raw_metadata = raw_metadata
    self.handler = handler
    self.num_bands = num_bands
    self.chip_size = chip_size

  def expand(self, instances):
    import tensorflow_transform.beam as tft_beam

    bands, size = self.num_bands, self.chip_size
    transformed, _ = (((instances, self.raw_metadata), self.transform_fn)
                      | "Normalize" >> tft_beam.TransformDataset())
    results, dlq = (transformed
                    | "ToModelInput" >> beam.Map(to_model_input, bands, size)
                    | "RunInference" >> RunInference(self.handler).with_exception_handling())
    return results | "ToChipScores" >> beam.Map(to_chip_score), dlq

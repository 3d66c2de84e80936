"""Normalise chips with tf.Transform and score them with RunInference over the model directory."""
from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy

from changesweep.model.model_dir import NORMALIZED_SIGNATURE, OUTPUT_KEY
from changesweep.pipeline.elements import PROB_SCALE, ChipKey, ChipScore
from changesweep.pipeline.metrics import inc_counter
from changesweep.transforms import preprocessing

STAGE = "scoring"


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
    if self._require_gpu:
      from changesweep.pipeline import dataflow

      dataflow.require_gpu("RunInference")
    return ChangeModel(self._model_uri)

  def get_resource_hints(self) -> dict:
    return {"accelerator": self._accelerator} if self._accelerator else {}


class LazySignature:
  """One signature of a SavedModel, loaded at its first call.

  The default sweep builds a scoring branch per shipped model; a branch that gets no pair then
  never loads its model (about a second of a short run's start-up per model).
  """

  def __init__(self, model_uri: str, signature: str):
    self._uri = model_uri
    self._signature = signature
    self._fn = None

  def __call__(self, **inputs):
    if self._fn is None:
      import tensorflow as tf

      self._fn = tf.saved_model.load(self._uri).signatures[self._signature]
    return self._fn(**inputs)


class ChangeModel:
  """A SavedModel's `normalized` signature behind one public method, numpy in and out.

  With `model_copies` or `large_model` Beam serves the model from another process through a
  proxy that forwards public method calls only (no attributes such as `.signatures`), and
  pickles their arguments and results: hence a method, and numpy in and out.
  """

  def __init__(self, model_uri: str):
    self._fn = LazySignature(model_uri, NORMALIZED_SIGNATURE)

  def score(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """`[N, S, S, C]` normalised before/after chips -> `[N, S, S]` change probabilities."""
    import tensorflow as tf

    return self._fn(before=tf.constant(before), after=tf.constant(after))[OUTPUT_KEY].numpy()


def infer_chips(model, batch, inference_args=None, model_id=None):
  """Runs the `normalized` signature on `(before [S, S, C], after [S, S, C], valid [S, S])` chips.

  Args:
    model: a `ChangeModel`, or Beam's proxy of one when the model is shared across processes.

  Returns:
    One PredictionResult per chip whose inference is `[S, S, 2]` (probability, validity); the
    example itself is dropped so pixels are not carried further than needed.
  """
  before, after, valid = (np.stack(part) for part in zip(*batch))
  prob = np.asarray(model.score(before, after))
  out = np.stack([np.clip(prob, 0.0, 1.0) * valid, valid], axis=-1)
  return [PredictionResult(None, o, model_id) for o in out]


def raw_tensor_adapter_config(num_bands: int, chip_size: int):
  """How tf.Transform reads raw chip instances from Arrow record batches (the TFXIO format).

  Handing tf.Transform record batches instead of instance dicts spares it encoding every chip
  as a tf.Example and decoding it again (tens of ms of Python per 256x256 chip, more than the
  model itself on CPU).
  """
  import pyarrow as pa
  from tensorflow_metadata.proto.v0 import schema_pb2
  from tfx_bsl.tfxio.tensor_adapter import TensorAdapterConfig

  def dense(name: str, size: int | None) -> schema_pb2.TensorRepresentation:
    rep = schema_pb2.TensorRepresentation()
    rep.dense_tensor.column_name = name
    if size:
      rep.dense_tensor.shape.dim.add().size = size
    return rep

  pixels = chip_size * chip_size
  schema = pa.schema([(preprocessing.KEY, pa.large_list(pa.large_binary())),
                      (preprocessing.BEFORE, pa.large_list(pa.float32())),
                      (preprocessing.AFTER, pa.large_list(pa.float32())),
                      (preprocessing.VALID, pa.large_list(pa.float32()))])
  return TensorAdapterConfig(schema, {
      preprocessing.KEY: dense(preprocessing.KEY, None),
      preprocessing.BEFORE: dense(preprocessing.BEFORE, pixels * num_bands),
      preprocessing.AFTER: dense(preprocessing.AFTER, pixels * num_bands),
      preprocessing.VALID: dense(preprocessing.VALID, pixels)})


def to_record_batch(instances: dict | list[dict]):
  """Raw chip instances (`preprocessing.make_instance`) -> one Arrow record batch, a row each.

  tf.Transform runs its graph once per record batch, so batches of many chips cost one graph
  call instead of one per chip.
  """
  import pyarrow as pa

  if isinstance(instances, dict):
    instances = [instances]

  def column(name, kind):
    values = [np.asarray(i[name], np.float32) for i in instances] if kind == pa.float32() \
        else [[i[name]] for i in instances]
    lengths = np.cumsum([0] + [len(v) for v in values]).astype(np.int64)
    flat = np.concatenate(values) if kind == pa.float32() else [x for v in values for x in v]
    return pa.LargeListArray.from_arrays(pa.array(lengths, pa.int64()), pa.array(flat, kind))

  return pa.RecordBatch.from_arrays(
      [column(preprocessing.KEY, pa.large_binary()),
       column(preprocessing.BEFORE, pa.float32()),
       column(preprocessing.AFTER, pa.float32()),
       column(preprocessing.VALID, pa.float32())],
      [preprocessing.KEY, preprocessing.BEFORE, preprocessing.AFTER, preprocessing.VALID])


def to_model_inputs(transformed, num_bands: int, chip_size: int
                    ) -> list[tuple[ChipKey, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
  """A transformed record batch -> `(ChipKey, (before, after, valid))` per chip, views of the
  batch's arrays (`infer_chips` stacks them once; no per-chip copy in between)."""
  batch = transformed[0] if isinstance(transformed, tuple) else transformed

  def values(name: str, width: int) -> np.ndarray:
    flat = batch.column(batch.schema.get_field_index(name)).flatten()
    return flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(
        batch.num_rows, chip_size, chip_size, width)

  keys = batch.column(batch.schema.get_field_index(preprocessing.KEY)).flatten().to_pylist()
  before = values(preprocessing.BEFORE, num_bands)
  after = values(preprocessing.AFTER, num_bands)
  valid = values(preprocessing.VALID, 1)[..., 0]
  return [(ChipKey.from_bytes(key), (before[i], after[i], valid[i])) for i, key in enumerate(keys)]


def to_chip_score(keyed: tuple[ChipKey, PredictionResult]) -> tuple[ChipKey, ChipScore]:
  key, result = keyed
  out = np.asarray(result.inference)
  inc_counter(STAGE, "chips_scored")
  return key, ChipScore(key.index, np.round(out[..., 0] * PROB_SCALE).astype(np.uint8),
                            out[..., 1] > 0.5)


def capped_batch_size(batch_size: int, max_batch_bytes: int | None, chip_size: int,
                      num_bands: int) -> int:
  """Largest batch in chips that stays within `max_batch_bytes` of model input (at least 1).

  Chips are fixed-size (before and after `[S, S, C]`, valid `[S, S]`, float32), so a byte cap
  is a chip count. (Beam 2.77's handler accepts `max_batch_weight`, but its BatchElements does
  not take it.)
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
  """Raw chip instances + a transform_fn -> `(ChipKey, ChipScore)` and the inference DLQ.

  Normalisation is tf.Transform's `TransformDataset` with either the statistics computed over
  this archive or the model's own, fed and read as Arrow record batches; scoring is
  `RunInference` on the model's `normalized` signature.
  """

  def __init__(self, transform_fn, handler: KeyedModelHandler, num_bands: int, chip_size: int,
               batch_size: int = 8):
    super().__init__()
    self.transform_fn = transform_fn
    self.handler = handler
    self.num_bands = num_bands
    self.chip_size = chip_size
    self.batch_size = batch_size

  def expand(self, instances):
    import tensorflow_transform.beam as tft_beam

    bands, size = self.num_bands, self.chip_size
    # tf.Transform's batches are the model's: every batch is copied ~5 times between the
    # reader and the model (record batch, tensors, transformed batch, model input), so 32-chip
    # batches held ~0.4 GB per worker on 4 bands, and the graph call costs little per chip.
    batches = (instances
               | "BatchChips" >> beam.BatchElements(min_batch_size=min(8, self.batch_size),
                                                    max_batch_size=self.batch_size)
               | "ToRecordBatches" >> beam.Map(to_record_batch))
    transformed, _ = (((batches, raw_tensor_adapter_config(bands, size)), self.transform_fn)
                      | "Normalize" >> tft_beam.TransformDataset(output_record_batches=True))
    results, dlq = (transformed
                    | "ToModelInput" >> beam.FlatMap(to_model_inputs, bands, size)
                    | "RunInference" >> RunInference(self.handler).with_exception_handling())
    return results | "ToChipScores" >> beam.Map(to_chip_score), dlq

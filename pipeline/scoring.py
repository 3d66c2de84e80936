"""Score raw chips with RunInference: the tf.Transform normalisation and the network in one call.

The transform_fn (the model's own, or the one this run's statistics pass wrote) is applied
inside the scoring call, as TFX serves a model with its Transform graph attached: chips go
from the reader to the model with no Arrow round trip, and on Dataflow the normalisation runs
on the GPU beside the network.
"""
from __future__ import annotations

import threading

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import (KeyedModelHandler, ModelHandler, PredictionResult,
                                           RunInference)

from changesweep.model.model_dir import NORMALIZED_SIGNATURE, OUTPUT_KEY
from changesweep.pipeline.elements import PROB_SCALE, ChipKey, ChipScore
from changesweep.pipeline.metrics import inc_counter
from changesweep.transforms import preprocessing

STAGE = "scoring"

# Lazy model loads, one at a time in a process. Beam shares one loaded model between the worker
# threads of a process (`multi_threading`, Dataflow's threads), and their first calls come at
# once: two threads loading one SavedModel each replaced the other's copy, and the network
# then failed with "Called a function referencing variables which have been deleted".
_LOAD_LOCK = threading.RLock()


class SavedModelHandler(ModelHandler):
  """Beam's `ModelHandler` for a `tf.saved_model.save` directory, scored by `inference_fn`.

  Beam's TensorFlow handlers load with Keras `load_model`, which refuses plain SavedModels with
  signatures, and their module imports tensorflow_hub and tf_keras, which nothing here uses
  (0.2-0.5 s of import in the runner and in every worker process). So this handler
  implements Beam's interface itself; batching, metrics, model sharing (`model_copies`,
  `large_model`) and model updates stay Beam's RunInference.

  With `transform_dir` (a tf.Transform transform_fn directory) the served model normalises raw
  chips with it before the network; RunInference's model-update side input
  (`model_metadata_pcoll`) can replace it with the transform_fn this run computed
  (`update_model_path`): the network stays, its statistics change. Without it, chips arrive
  normalised.

  With `accelerator` (a Dataflow accelerator spec, see `pipeline.dataflow`) the inference step
  carries it as a resource hint, and with `require_gpu` loading fails on a worker without a
  GPU instead of silently scoring on CPU.

  Args:
    model_uri: the SavedModel directory.
    inference_fn: `(model, batch, inference_args, model_id) -> [PredictionResult]`
      (default `infer_chips`).
    min_batch_size, max_batch_size, large_model, model_copies: Beam's.
  """

  def __init__(self, model_uri: str, *, inference_fn=None, min_batch_size: int | None = None,
               max_batch_size: int | None = None, large_model: bool = False,
               model_copies: int | None = None, accelerator: str | None = None,
               require_gpu: bool = False, transform_dir: str | None = None):
    super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size,
                     large_model=large_model, model_copies=model_copies)
    self._model_uri = model_uri
    self._inference_fn = inference_fn or infer_chips
    self._accelerator = accelerator
    self._require_gpu = require_gpu or bool(accelerator)
    self._transform_dir = transform_dir

  def run_inference(self, batch, model, inference_args=None):
    return self._inference_fn(model, batch, inference_args or {}, self._model_uri)

  def get_num_bytes(self, batch) -> int:
    """The batch's pixel bytes (Beam's inference byte counter)."""
    return sum(int(getattr(part, "nbytes", 0))
               for item in batch for part in (item if isinstance(item, tuple) else (item,)))

  def get_metrics_namespace(self) -> str:
    return "BeamML_TF_Numpy"  # the namespace of Beam's TF handler this replaced

  def update_model_path(self, model_path: str | None = None):
    """A model update names a transform_fn directory (`statistics_update`), not a network."""
    if model_path:
      self._transform_dir = model_path

  def load_model(self):
    if self._require_gpu:
      from changesweep.pipeline import dataflow

      dataflow.require_gpu("RunInference")
    return ChangeModel(self._model_uri, self._transform_dir)

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
    self._loaded = None

  def function(self):
    """The loaded signature (a concrete function); load outside any `tf.function` trace."""
    with _LOAD_LOCK:
      if self._fn is None:
        import tensorflow as tf

        # the loaded object owns the variables: a signature outliving it fails when called
        # from another tf.function
        self._loaded = tf.saved_model.load(self._uri)
        self._fn = self._loaded.signatures[self._signature]
      return self._fn

  def __call__(self, **inputs):
    return self.function()(**inputs)


class ChangeModel:
  """A SavedModel's `normalized` signature, after a transform_fn, behind one public method,
  numpy in and out.

  With `model_copies` or `large_model` Beam serves the model from another process through a
  proxy that forwards public method calls only (no attributes such as `.signatures`), and
  pickles their arguments and results: hence a method, and numpy in and out.
  """

  def __init__(self, model_uri: str, transform_dir: str | None = None):
    self._fn = LazySignature(model_uri, NORMALIZED_SIGNATURE)
    self._transform_dir = transform_dir
    self._normalized_call = None

  def _with_transform(self):
    """One graph: the transform_fn's normalisation, then the network (loaded at first use)."""
    with _LOAD_LOCK:
      if self._normalized_call is None:
        self._normalized_call = self._build_call()
      return self._normalized_call

  def _build_call(self):
    import tensorflow as tf

    normalise = preprocessing.load_normalizer(self._transform_dir)
    fn = self._fn.function()
    size, bands = normalise.chip_size, normalise.num_bands
    chips = tf.TensorSpec([None, size, size, bands], tf.float32)

    @tf.function(input_signature=[chips, chips, tf.TensorSpec([None, size, size], tf.float32)])
    def call(before, after, valid):
      before_n, after_n = normalise(before, after, valid)
      return fn(before=before_n, after=after_n)[OUTPUT_KEY]

    return call

  def score(self, before: np.ndarray, after: np.ndarray,
            valid: np.ndarray | None = None) -> np.ndarray:
    """`[N, S, S, C]` before/after chips (raw with a transform_fn, else normalised) and, with a
    transform_fn, their `[N, S, S]` validity -> `[N, S, S]` change probabilities."""
    import tensorflow as tf

    if self._transform_dir is None:
      return self._fn(before=tf.constant(before), after=tf.constant(after))[OUTPUT_KEY].numpy()
    return self._with_transform()(tf.constant(before), tf.constant(after),
                                  tf.constant(valid)).numpy()


def infer_chips(model, batch, inference_args=None, model_id=None):
  """Scores `(before [S, S, C], after [S, S, C], valid [S, S])` chips (`chips.read_model_input`).

  Args:
    model: a `ChangeModel`, or Beam's proxy of one when the model is shared across processes.

  Returns:
    One PredictionResult per chip whose inference is `[S, S, 2]` (probability, validity); the
    example itself is dropped so pixels are not carried further than needed.
  """
  before, after, valid = (np.stack(part) for part in zip(*batch))
  prob = np.asarray(model.score(before, after, valid))
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
                       require_gpu: bool = False,
                       transform_dir: str | None = None) -> KeyedModelHandler:
  """The keyed RunInference handler; see SavedModelHandler for `transform_dir`, `accelerator`
  and `require_gpu`."""
  # Batches start full: a call costs a fixed few ms (the transform layer, the signature), and
  # Beam's adaptive batching opens every bundle at its minimum batch size.
  return KeyedModelHandler(SavedModelHandler(
      saved_model_dir, inference_fn=infer_chips, min_batch_size=min(8, batch_size),
      max_batch_size=batch_size,
      large_model=large_model, model_copies=model_copies, accelerator=accelerator,
      require_gpu=require_gpu, transform_dir=transform_dir))


def statistics_update(written, transform_dir: str):
  """The model-update side input that hands RunInference the transform_fn this run wrote:
  one `ModelMetadata` naming `transform_dir`, emitted once `WriteTransformFn` (`written`, its
  completion) has published it."""
  from apache_beam.ml.inference.base import ModelMetadata

  return written | "NameTransformFn" >> beam.Map(
      lambda _: ModelMetadata(model_id=transform_dir, model_name="archive_statistics"))


class ScoreChips(beam.PTransform):
  """`(ChipKey, (before, after, valid))` raw chips -> `(ChipKey, ChipScore)` and the inference
  DLQ.

  The handler normalises with its transform_fn inside the model call; `statistics`
  (`statistics_update`) replaces that transform_fn with the one this run computed before the
  first chip is scored (RunInference waits on it as a side input).
  """

  def __init__(self, handler: KeyedModelHandler, statistics=None):
    super().__init__()
    self.handler = handler
    self.statistics = statistics

  def expand(self, chips):
    results, dlq = (chips
                    | "RunInference" >> RunInference(
                        self.handler, model_metadata_pcoll=self.statistics
                    ).with_exception_handling())
    return results | "ToChipScores" >> beam.Map(to_chip_score), dlq

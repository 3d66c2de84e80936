"""Scoring with the any-band model: every band a capture has, with its identity, in one signature.

An any-band model (metadata `band_mode: "any"`) reads up to `max_bands` slots per capture: the
pair's bands in any order, each with its `band_code` (wavelength, or index / SAR / unknown), and
normalises them inside its `serving_default` signature with per-band centres and scales the
sweep passes in. So no tf.Transform pass runs in the graph and each chip is read once:

- `archive` statistics (the model's default): per band identity, the mean and spread of every
  capture the night sweeps, pooled from the statistics the usability pass already took on each
  capture's decimated overview (`BandStatistics`, a side input);
- `capture` statistics: each capture's own.

A model normalised "archive_optical" or "archive_optical_robust" pools only its optical bands;
its other slots (index, SAR, unnamed) take the capture's own mean/std, or with
"archive_optical_robust" its median and 1.4826 * MAD (`robust`), from the same read.

`slots_for_pair` (pure) decides which bands of the two captures fill which slot: the band
identities both captures have, in the later capture's order.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference

from changesweep.pipeline.band_slots import band_robust_stats, band_stats
from changesweep.pipeline.chips import ReadChips, chip_key, read_pair_window
from changesweep.pipeline.elements import Pair, SceneRef
from changesweep.pipeline.rasters import WindowReader
from changesweep.pipeline.scoring import LazySignature, SavedModelHandler, to_chip_score
from changesweep.transforms import tiling

_MIN_SCALE = 1e-6


# ----------------------------------------------------------------------------- statistics

def capture_band_stats(pair: Pair, optical_only: bool = False
                       ) -> list[tuple[tuple[str, str], tuple[float, float, float]]]:
  """`((capture uri, band name), (weight, mean, std))` of each slot of both captures.

  With `optical_only` (models normalised "archive_optical" or "archive_optical_robust") only
  optical bands (code > 0) are pooled; indices, SAR and unnamed bands then keep their capture's
  own statistics.
  """
  out = []
  codes = tuple(pair.band_codes) + (0.0,) * (len(pair.band_names) - len(pair.band_codes))
  for scene, positions in ((pair.before, pair.before_bands), (pair.after, pair.after_bands)):
    weight = scene.usable_fraction * scene.height * scene.width
    for name, p, code in zip(pair.band_names, positions, codes):
      if optical_only and not code > 0:
        continue
      mean, std = band_stats(scene, p) or (math.nan, math.nan)
      if math.isfinite(mean) and math.isfinite(std):
        out.append(((scene.uri, name), (weight, mean, std)))
  return out


class PoolStatsFn(beam.CombineFn):
  """`(band name, (weight, mean, std))` of captures -> `{band name: (mean, std)}` pooled."""

  def create_accumulator(self):
    return {}

  def add_input(self, acc, element):
    name, (w, mean, std) = element
    s = acc.setdefault(name, [0.0, 0.0, 0.0])
    s[0] += w
    s[1] += w * mean
    s[2] += w * (std * std + mean * mean)
    return acc

  def merge_accumulators(self, accs):
    out = {}
    for acc in accs:
      for name, (w, m1, m2) in acc.items():
        s = out.setdefault(name, [0.0, 0.0, 0.0])
        s[0] += w
        s[1] += m1
        s[2] += m2
    return out

  def extract_output(self, acc):
    stats = {}
    for name, (w, m1, m2) in acc.items():
      if w > 0:
        mean = m1 / w
        stats[name] = (mean, math.sqrt(max(m2 / w - mean * mean, 0.0)))
    return stats


class BandStatistics(beam.PTransform):
  """Pairs -> one `{band name: (mean, std)}` over every capture in them (each counted once).

  Attributes:
    optical_only: pool only optical bands (see `capture_band_stats`).
  """

  def __init__(self, optical_only: bool = False):
    super().__init__()
    self.optical_only = optical_only

  def expand(self, pairs):
    return (pairs
            | "CaptureBandStats" >> beam.FlatMap(capture_band_stats, self.optical_only)
            | "OncePerCapture" >> beam.CombinePerKey(lambda values: next(iter(values)))
            | "ByBand" >> beam.Map(lambda kv: (kv[0][1], kv[1]))
            | "Pool" >> beam.CombineGlobally(PoolStatsFn()))


def uses_robust_capture_stats(normalization: str | None) -> bool:
  """Whether a model's slots without archive statistics take the capture's median/MAD."""
  from changesweep.transforms.normalization import ARCHIVE_OPTICAL_ROBUST
  return normalization == ARCHIVE_OPTICAL_ROBUST


def pools_optical_only(normalization: str | None) -> bool:
  """Whether a model's archive statistics pool only its optical bands."""
  from changesweep.transforms.normalization import OPTICAL_ONLY_MODES
  return normalization in OPTICAL_ONLY_MODES


def own_stats(scene: SceneRef, position, robust: bool = False) -> tuple[float, float] | None:
  """A capture's own centre and scale of one band: median/MAD with `robust` where measured
  (a capture from an older incremental state has none: then its mean/std), else mean/std."""
  return (robust and band_robust_stats(scene, position)) or band_stats(scene, position)


def slot_stats(pair: Pair, scene: SceneRef, positions: tuple[int, ...], archive: dict | None,
               max_bands: int, robust: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """Centre and scale of each slot: pooled over the archive, else the capture's own
  (`own_stats`: with `robust`, its median and 1.4826 * MAD)."""
  center = np.zeros(max_bands, np.float32)
  scale = np.ones(max_bands, np.float32)
  for k, (name, p) in enumerate(zip(pair.band_names, positions)):
    if archive is not None and name in archive:
      c, s = archive[name]
    else:
      c, s = own_stats(scene, p, robust) or (0.0, 1.0)
    center[k] = c if math.isfinite(c) else 0.0
    scale[k] = s if math.isfinite(s) and s > _MIN_SCALE else 1.0
  return center, scale


# ------------------------------------------------------------------------------- chips

class AnyBandChip(NamedTuple):
  """One chip as the any-band signature takes it (all float32, K = max_bands, S = chip size)."""
  before: np.ndarray         # [S, S, K]
  after: np.ndarray          # [S, S, K]
  valid: np.ndarray          # [S, S]
  band_code: np.ndarray      # [K]
  before_center: np.ndarray  # [K]
  before_scale: np.ndarray
  after_center: np.ndarray
  after_scale: np.ndarray


def _slots(array: np.ndarray, size: int, max_bands: int) -> np.ndarray:
  out = np.zeros((size, size, max_bands), np.float32)
  out[:array.shape[0], :array.shape[1], :array.shape[2]] = array
  return out


def read_anyband_chip(reader: WindowReader, pair: Pair, chip: tiling.Chip, size: int,
                      max_bands: int, archive: dict | None,
                      mask_values: tuple[int, ...] = (), robust: bool = False) -> AnyBandChip:
  before, after, valid = read_pair_window(reader, pair, chip, mask_values)
  b, a = pair.before, pair.after
  codes = np.zeros(max_bands, np.float32)
  codes[:len(pair.band_codes)] = pair.band_codes
  bc, bs = slot_stats(pair, b, pair.before_bands, archive, max_bands, robust)
  ac, as_ = slot_stats(pair, a, pair.after_bands, archive, max_bands, robust)
  return AnyBandChip(
      _slots(before, size, max_bands), _slots(after, size, max_bands),
      tiling.pad_chip(valid.astype(np.float32), size), codes, bc, bs, ac, as_)


class ReadAnyBandChips(ReadChips):
  """`(Pair, Chip)` -> `(ChipKey, AnyBandChip)`; failures -> tagged `ChipFailure`.

  The archive statistics come as the side input `archive` (None: each capture's own; with
  `robust`, its median/MAD).
  """

  def __init__(self, chip_size: int, max_bands: int, mask_values: tuple[int, ...] = (),
               robust: bool = False):
    super().__init__(chip_size, mask_values=mask_values)
    self.max_bands = max_bands
    self.robust = robust

  def read(self, pair: Pair, chip: tiling.Chip, archive: dict | None = None):
    return read_anyband_chip(self.reader, pair, chip, self.chip_size, self.max_bands, archive,
                             self.mask_values, self.robust)

  def emit(self, pair: Pair, chip: tiling.Chip, example):
    return chip_key(pair, chip.index), example


# ----------------------------------------------------------------------------- inference

class AnyBandModel:
  """A loaded any-band SavedModel behind one public method, numpy in and out (see
  `scoring.ChangeModel` for why: Beam's shared-model proxy forwards method calls only)."""

  def __init__(self, model_uri: str):
    self._fn = LazySignature(model_uri, "serving_default")

  def score(self, **arrays: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    out = self._fn(**{k: tf.constant(v) for k, v in arrays.items()})
    return out["change_prob"].numpy()


def infer_anyband(model, batch: list[AnyBandChip], inference_args=None, model_id=None):
  """`serving_default` on a batch of chips -> `[S, S, 2]` (probability, validity) per chip."""
  arrays = {f: np.stack([getattr(c, f) for c in batch]) for f in AnyBandChip._fields}
  prob = np.asarray(model.score(**arrays))
  valid = arrays["valid"]
  out = np.stack([np.clip(prob, 0.0, 1.0) * valid, valid], axis=-1)
  return [PredictionResult(None, o, model_id) for o in out]


class AnyBandHandler(SavedModelHandler):
  """Beam's TF handler over an any-band model directory (only loading differs)."""

  def load_model(self):
    if self._require_gpu:
      from changesweep.pipeline import dataflow

      dataflow.require_gpu("RunInference")
    return AnyBandModel(self._model_uri)


def make_anyband_handler(saved_model_dir: str, batch_size: int, model_copies: int | None = None,
                         accelerator: str | None = None, require_gpu: bool = False):
  # batches start full, as in `scoring.make_model_handler`
  return KeyedModelHandler(AnyBandHandler(
      saved_model_dir, inference_fn=infer_anyband, min_batch_size=min(8, batch_size),
      max_batch_size=batch_size,
      model_copies=model_copies, accelerator=accelerator, require_gpu=require_gpu))


class ScoreAnyBandChips(beam.PTransform):
  """Chip tasks -> `(ChipKey, ChipScore)`, read failures and the inference DLQ.

  Attributes:
    handler: from `make_anyband_handler`.
    chip_size, max_bands: the model's.
    archive: the `BandStatistics` singleton, or None for each capture's own statistics.
    robust: a slot without archive statistics takes its capture's median/MAD (models
      normalised "archive_optical_robust"), else its mean/std.
  """

  def __init__(self, handler, chip_size: int, max_bands: int, archive: Any = None,
               mask_values: tuple[int, ...] = (), robust: bool = False):
    super().__init__()
    self.handler = handler
    self.chip_size = chip_size
    self.max_bands = max_bands
    self.archive = archive
    self.mask_values = mask_values
    self.robust = robust

  def expand(self, tasks):
    side = {} if self.archive is None else {"archive": beam.pvalue.AsSingleton(self.archive)}
    chips = tasks | "ReadChips" >> beam.ParDo(
        ReadAnyBandChips(self.chip_size, self.max_bands, self.mask_values, self.robust), **side
    ).with_outputs("failed", main="chips")
    results, dlq = (chips.chips
                    | "RunInference" >> RunInference(self.handler).with_exception_handling())
    return results | "ToChipScores" >> beam.Map(to_chip_score), chips.failed, dlq

"""The sweep graph: list -> pair -> chips -> tf.Transform -> RunInference -> rows and maps."""
from __future__ import annotations

import dataclasses
import types
import datetime as dt

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from changesweep.model.model_dir import ModelInfo
from changesweep.pipeline import aggregate, dataflow, geoio, incremental, pair_summary
from changesweep.pipeline.bigquery import WriteRowsToBigQuery
from changesweep.pipeline.chips import (ReadChips, ReadModelInputs, in_statistics_sample,
                                        plan_chips)
from changesweep.pipeline.coregistration import MeasureMisregistration
from changesweep.pipeline.elements import ChipFailure, Pair
from changesweep.pipeline.listing import KnownFileRecords, ListCaptures
from changesweep.pipeline.metrics import inc_counter
from changesweep.pipeline.options import MULTISPECTRAL_MIN_OPTICAL_BANDS
from changesweep.pipeline.history import ScoreAgainstHistory
from changesweep.pipeline.pairing import GridOptions, PairConsecutive
from changesweep.transforms.bands import BandError, resolve_bands
from changesweep.pipeline.usability import MaskSpec
from changesweep.pipeline.progress import ReportProgress
from changesweep.pipeline.scoring import (ScoreChips, capped_batch_size, make_model_handler,
                                         raw_tensor_adapter_config, statistics_update,
                                         to_record_batch)
from changesweep.pipeline import schemas
from changesweep.pipeline.sinks import WriteTables
from changesweep.transforms import preprocessing

@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """Everything the graph needs, validated before any work starts.

  Attributes:
    output: output folder (local or gs://).
    model: the validated model directory.
    bands: bands fed to the model, in its order.
    input, manifest, layout: where and how to list captures.
    statistics: "archive", "model" or "capture" normalisation statistics.
    statistics_chips: chips per pair that a fixed-band model's archive statistics are
      computed from (0: every chip, a second read of the whole archive).
    chip_overlap, batch_size, model_copies: chip and inference settings.
    num_shards, max_regions, min_region_pixels, write_maps, run_id: output settings.
    bigquery_table: also load pair rows into this BigQuery table (PROJECT:DATASET.TABLE).
    state, since, force: incremental sweeps (`pipeline.incremental`).
    accelerator: Dataflow accelerator spec for inference (None: CPU); `gpu_hints` puts it on
      the inference step as a resource hint, else it is job-wide (`pipeline.dataflow`).
    max_batch_bytes: cap inference batches by chip bytes as well.
    masks, min_usable_fraction: where cloud/QA masks come from; captures with fewer valid
      pixels than this share are unusable.
    history: a previous sweep's output (or history files) to score pairs against.
    dry_run: list and pair only (headers and the decimated usability read); no chip, no model.
    extra_models: models tried first, per pair (`pick_model`: fixed-band models whose bands
      both captures have, then the multispectral any-band model); `model`, an any-band model,
      scores the rest.
    coregister: correct measured shifts within the bound before scoring (`coregistration`).
  """
  output: str
  model: ModelInfo
  bands: tuple[str, ...]
  input: str | None = None
  manifest: str | None = None
  layout: str = "{location}/{date}.tif"
  statistics: str = "archive"
  statistics_chips: int = 4
  chip_overlap: int = 16
  batch_size: int = 8
  model_copies: int | None = None
  num_shards: int = 1
  max_regions: int = 20
  max_polygons: int = 1000
  dry_run: bool = False
  grids: GridOptions = GridOptions()
  coregister: bool = False
  extra_models: tuple = ()
  min_region_pixels: int = 4
  write_maps: bool = True
  run_id: str = "sweep"
  bigquery_table: str | None = None
  state: str | None = None
  since: str | None = None
  force: bool = False
  accelerator: str | None = None
  gpu_hints: bool = True
  max_batch_bytes: int | None = None
  masks: MaskSpec = MaskSpec()
  min_usable_fraction: float = 0.1
  history: str | None = None

  def __post_init__(self):
    if self.statistics not in ("archive", "model", "capture"):
      raise ValueError(f"statistics must be 'archive', 'model' or 'capture', got "
                       f"{self.statistics!r}")
    if self.statistics == "capture" and not self.max_bands:
      raise ValueError("--statistics capture needs an any-band model (per-capture statistics "
                       "are applied inside its signature)")
    if self.statistics_chips < 0:
      raise ValueError(f"statistics_chips must be >= 0, got {self.statistics_chips}")
    if not 0 <= self.chip_overlap < self.chip_size // 2:
      raise ValueError(f"chip_overlap {self.chip_overlap} must be in 0..{self.chip_size // 2 - 1}")
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
    if self.bigquery_table:
      from changesweep.pipeline.bigquery import parse_table

      parse_table(self.bigquery_table)
    if self.since:
      from changesweep.pipeline.incremental import parse_since

      parse_since(self.since)
    if self.max_batch_bytes is not None and self.max_batch_bytes < 1:
      raise ValueError(f"max_batch_bytes must be >= 1, got {self.max_batch_bytes}")
    if self.max_bands and len(self.bands) > self.max_bands:
      raise ValueError(f"the model reads at most {self.max_bands} bands, --bands gives "
                       f"{len(self.bands)}")
    if not self.max_bands and len(self.bands) != len(self.model.bands):
      raise ValueError(f"the model reads {len(self.model.bands)} bands {list(self.model.bands)}"
                       f", but --bands gives {len(self.bands)}: {list(self.bands)}")

  @property
  def max_bands(self) -> int:
    """Slots of an any-band model (metadata `band_mode: "any"`); 0 for fixed-band models."""
    return int(self.model.raw.get("max_bands", 0)) if self.model.raw.get(
        "band_mode") == "any" else 0

  @property
  def chip_size(self) -> int:
    return self.model.chip_size


def _inference_failures(failed):
  batch, error = failed
  for key, _ in batch:
    yield key.pair_id, ChipFailure(key.pair_id, key.index, f"inference failed: {str(error)[:300]}")


def _counted_sample(task, chip_size: int, overlap: int, per_pair: int) -> bool:
  keep = in_statistics_sample(task, chip_size, overlap, per_pair)
  if keep:
    inc_counter("chips", "statistics_reads")
  return keep


def _score_fixed_bands(cfg: SweepConfig, tasks):
  """Fixed-band models: tf.Transform statistics (this archive's, or the model's own), applied
  with the network in one RunInference call. Returns `(scores, read failures, inference DLQ)`.
  """
  size, nbands = cfg.chip_size, len(cfg.bands)
  statistics = None
  if cfg.statistics == "archive":
    import tensorflow_transform.beam as tft_beam

    sample = (tasks
              | "SampleChips[Statistics]" >> beam.Filter(
                  _counted_sample, size, cfg.chip_overlap, cfg.statistics_chips)
              | "ReadChips[Statistics]" >> beam.ParDo(
        ReadChips(size, count_metrics=False, mask_values=cfg.masks.values)).with_outputs(
            "failed", main="chips"))
    batches = (sample.chips
               | "BatchChips[Statistics]" >> beam.BatchElements(min_batch_size=8,
                                                                max_batch_size=32)
               | "ToRecordBatches[Statistics]" >> beam.Map(to_record_batch))
    transform_fn = ((batches, raw_tensor_adapter_config(nbands, size)) | "ComputeStatistics" >>
                    tft_beam.AnalyzeDataset(preprocessing.make_preprocessing_fn(nbands, size)))
    path = FileSystems.join(cfg.output, "transform_fn")
    written = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(path)
    statistics = statistics_update(written, path)
  # Scoring reads its chips in a stage of its own: in the stage that also feeds the
  # statistics, the chips could not be fused with the scoring that waits on them, and the
  # runner would hold every chip of the sweep in memory between the two.
  chips = (tasks
           | "ReshuffleChips[Score]" >> beam.Reshuffle()
           | "ReadChips[Score]" >> beam.ParDo(
               ReadModelInputs(size, mask_values=cfg.masks.values)).with_outputs(
                   "failed", main="chips"))
  batch = capped_batch_size(cfg.batch_size, cfg.max_batch_bytes, size, nbands)
  handler = make_model_handler(
      cfg.model.saved_model_dir, batch, model_copies=cfg.model_copies,
      accelerator=cfg.accelerator if cfg.gpu_hints else None, require_gpu=bool(cfg.accelerator),
      transform_dir=cfg.model.transform_dir)
  scores, dlq = chips.chips | "ScoreChips" >> ScoreChips(handler, statistics)
  return scores, chips.failed, dlq


def _score_any_band(cfg: SweepConfig, pairs, tasks):
  """Any-band models: every chip read once, statistics pooled from the usability pass (or each
  capture's own), normalisation inside the model's signature."""
  from changesweep.pipeline import anyband

  normalization = cfg.model.raw.get("normalization")
  archive = (pairs | "BandStatistics" >> anyband.BandStatistics(
      anyband.pools_optical_only(normalization))
             if cfg.statistics in ("archive", "model") else None)
  handler = anyband.make_anyband_handler(
      cfg.model.saved_model_dir, cfg.batch_size, model_copies=cfg.model_copies,
      accelerator=cfg.accelerator if cfg.gpu_hints else None, require_gpu=bool(cfg.accelerator))
  return tasks | "ScoreAnyBandChips" >> anyband.ScoreAnyBandChips(
      handler, cfg.chip_size, cfg.max_bands, archive, cfg.masks.values,
      robust=anyband.uses_robust_capture_stats(normalization))


def has_only(ids: list, positions: list[int]) -> bool:
  """Whether a capture's identified bands (masks aside) are exactly those at `positions`."""
  return {p for p, i in enumerate(ids) if i is not None and i.kind != "mask"} <= set(positions)


def optical_bands(ids: list) -> int:
  """How many of a capture's bands are identified optical bands."""
  return sum(1 for i in ids if i is not None and i.kind == "optical")


def pick_model(pair: Pair, fixed: tuple,
               min_optical: int = MULTISPECTRAL_MIN_OPTICAL_BANDS) -> tuple[int, Pair]:
  """The first of `fixed` that fits the pair, with the pair's band positions for it; else the
  last branch (the default any-band model) and the pair as paired.

  A fixed-band model fits when it reads all the bands both captures have; an any-band model in
  `fixed` (the multispectral one) when both captures have `min_optical` identified optical
  bands. A capture with identified bands beyond a fixed model's (Sentinel-2 with NIR, SWIR
  ...) goes to an any-band model, which reads them all (and scores such captures better,
  README "Models")."""
  from changesweep.pipeline.band_slots import identities

  ids_b, ids_a = identities(pair.before), identities(pair.after)
  for i, model in enumerate(fixed):
    if model.raw.get("band_mode") == "any":
      if min(optical_bands(ids_b), optical_bands(ids_a)) >= min_optical:
        return i, pair
      continue
    try:
      before = resolve_bands(model.bands, ids_b)
      after = resolve_bands(model.bands, ids_a)
    except BandError:
      continue
    if not (has_only(ids_b, before) and has_only(ids_a, after)):
      continue
    return i, pair._replace(before_bands=tuple(before), after_bands=tuple(after), band_names=(),
                            band_codes=())
  return len(fixed), pair


class ScoreAndAggregate(beam.PTransform):
  """Pairs -> chips scored by one model -> chip rows, pair rows, regions and dead letters."""

  def __init__(self, cfg: SweepConfig):
    super().__init__()
    self.cfg = cfg

  def expand(self, pairs):
    cfg = self.cfg
    size = cfg.chip_size
    tasks = (pairs
             | "PlanChips" >> beam.FlatMap(plan_chips, size, cfg.chip_overlap)
             | "ReshuffleChips" >> beam.Reshuffle())
    if cfg.max_bands:
      scores, read_failed, dlq = _score_any_band(cfg, pairs, tasks)
    else:
      scores, read_failed, dlq = _score_fixed_bands(cfg, tasks)
    failures = ((read_failed | "KeyReadFailures" >> beam.Map(lambda f: (f.pair_id, f)),
                 dlq.failed_inferences | "KeyInferenceFailures" >> beam.FlatMap(
                     _inference_failures))
                | "FlattenFailures" >> beam.Flatten())
    run = {"model_id": cfg.model.model_id, "model_version": cfg.model.version,
           "run_id": cfg.run_id}
    maps_root = cfg.output if cfg.write_maps else None
    reduced = scores | "ReduceChips" >> beam.ParDo(aggregate.ReduceChip(
        size, cfg.chip_overlap, cfg.model.threshold, maps_root, run)).with_outputs(
            "chips", main="partials")
    summaries = reduced.partials | "CombinePerPair" >> beam.CombinePerKey(
        pair_summary.PairSummaryFn())
    joined = ({"pair": pairs | "KeyPairs" >> beam.Map(lambda pr: (pr.pair_id, pr)),
               "summary": summaries, "failed": failures}
              | "JoinSummariesToPairs" >> beam.CoGroupByKey())
    rows = joined | "FinishPairs" >> beam.ParDo(aggregate.FinishPair(
        size, cfg.chip_overlap, cfg.model.threshold, maps_root, run, cfg.max_regions,
        cfg.min_region_pixels, cfg.max_polygons)).with_outputs("dead", "regions", main="pairs")
    return {"pairs": rows.pairs, "dead": rows.dead, "regions": rows.regions,
            "chips": reduced.chips, "tasks": tasks}


def build_sweep(p: beam.Pipeline, cfg: SweepConfig, temp_dir: str) -> dict:
  """Adds the sweep to `p`. Returns the output PCollections by table name."""
  state = p | "ReadState" >> incremental.ReadState(cfg.state) if cfg.state else None
  files, dead_listing = p | "ListCaptures" >> ListCaptures(
      cfg.input, cfg.layout, cfg.manifest, cfg.masks,
      known=state | "KnownFiles" >> incremental.KnownFiles() if state is not None else None)
  pairs, firsts, dead_pairing, records = files | "PairConsecutive" >> PairConsecutive(
      cfg.bands, cfg.min_usable_fraction, cfg.max_bands, cfg.grids, cfg.masks.values)
  if cfg.state or cfg.since or cfg.force:
    pairs, firsts = (pairs, firsts) | "SelectNewPairs" >> incremental.SelectNewPairs(
        state, cfg.since, cfg.force)
  if cfg.dry_run:
    return _write_dry_run(cfg, pairs, firsts, (dead_listing, dead_pairing))
  import tensorflow_transform.beam as tft_beam  # only a real run needs TensorFlow

  pairs = pairs | "MeasureMisregistration" >> MeasureMisregistration(
      cfg.coregister, cfg.grids.resampling, cfg.masks.values)

  with tft_beam.Context(temp_dir=temp_dir):
    if cfg.accelerator:
      _ = p | "CheckGpu" >> dataflow.CheckGpu(cfg.accelerator if cfg.gpu_hints else None)
    branches = [(cfg, pairs)]
    if cfg.extra_models:
      parts = pairs | "PickModel" >> beam.Partition(
          lambda pair, n: pick_model(pair, cfg.extra_models)[0], len(cfg.extra_models) + 1)
      branches = [(dataclasses.replace(cfg, model=m, extra_models=(),
                                       bands=() if m.raw.get("band_mode") == "any"
                                       else tuple(m.bands)),
                   parts[i] | f"ReadBands[{m.model_id}]" >> beam.Map(
                       lambda pair, m=m: pick_model(pair, (m,))[1]))
                  for i, m in enumerate(cfg.extra_models)]
      branches.append((dataclasses.replace(cfg, extra_models=()), parts[len(cfg.extra_models)]))
    outs = [branch_pairs | f"Score[{c.model.model_id}]" >> ScoreAndAggregate(c)
            for c, branch_pairs in branches]

    def flat(name):
      return [o[name] for o in outs] | f"Flatten[{name}]" >> beam.Flatten()

    rows = types.SimpleNamespace(pairs=flat("pairs"), dead=flat("dead"), regions=flat("regions"))
    chip_rows = flat("chips")
    # Progress counts chip rows (a few hundred bytes each), not the chip scores: a consumer of
    # the scores outside their fused stage would make the runner hold every probability
    # window of the night (277 MB for one 10980^2 pair) and the worker queue them.
    _ = chip_rows | "Progress[chips]" >> ReportProgress("chips", flat("tasks"))
    _ = rows.pairs | "Progress[pairs]" >> ReportProgress("pairs", pairs)
  run_id = cfg.run_id
  dead = ((dead_listing, dead_pairing, rows.dead)
          | "FlattenDeadLetters" >> beam.Flatten()
          | "DeadLetterRows" >> beam.Map(lambda d: {**d.to_row(), "run_id": run_id}))
  _ = dead | "CountDeadLetters" >> beam.Map(lambda _: inc_counter("dead_letter", "records"))
  first_rows = firsts | "FirstCaptureRows" >> beam.Map(lambda f: {**f.to_row(), "run_id": run_id})
  pair_rows, history_rows = ((rows.pairs, records)
                             | "ScoreAgainstHistory" >> ScoreAgainstHistory(cfg.history, run_id))
  out = {"pairs": pair_rows, "chips": chip_rows, "first_captures": first_rows,
         "dead_letter": dead, "history": history_rows}
  _ = out | "WriteTables" >> WriteTables(cfg.output, cfg.num_shards,
                                         parquet=("pairs", "chips", "history"))
  _ = rows.regions | "Write[regions]" >> geoio.WriteRegions(
      cfg.output, cfg.num_shards or geoio.RUNNER_SHARDS)
  if cfg.bigquery_table:
    _ = out["pairs"] | "WriteBigQuery[pairs]" >> WriteRowsToBigQuery(cfg.bigquery_table)
    _ = rows.regions | "WriteBigQuery[regions]" >> WriteRowsToBigQuery(
        f"{cfg.bigquery_table}_regions", schemas.REGIONS)
  if cfg.state:
    _ = ((out["pairs"], out["first_captures"], out["dead_letter"])
         | "WriteState" >> incremental.WriteState(
             cfg.state, state, run_id, files | "KnownFileRecords" >> KnownFileRecords(cfg.masks)))
  return out


def planned_row(pair, chip_size: int, overlap: int, run_id: str) -> dict:
  """What a dry run reports of a pair: the captures and the chips inference would score."""
  return {"pair_id": pair.pair_id, "location": pair.location,
          "before_captured_at": pair.before.captured_at,
          "after_captured_at": pair.after.captured_at, "before_uri": pair.before.uri,
          "after_uri": pair.after.uri, "height": pair.height, "width": pair.width,
          "num_chips": len(plan_chips(pair, chip_size, overlap)), "run_id": run_id}


def _write_dry_run(cfg: SweepConfig, pairs, firsts, dead_letters) -> dict:
  """`--dry_run`: planned pairs, first captures and dead letters; no chip read, no model."""
  run_id = cfg.run_id
  out = {
      "planned_pairs": pairs | "PlannedPairRows" >> beam.Map(
          planned_row, cfg.chip_size, cfg.chip_overlap, run_id),
      "first_captures": firsts | "FirstCaptureRows" >> beam.Map(
          lambda f: {**f.to_row(), "run_id": run_id}),
      "dead_letter": (dead_letters | "FlattenDeadLetters" >> beam.Flatten()
                      | "DeadLetterRows" >> beam.Map(lambda d: {**d.to_row(), "run_id": run_id})),
  }
  _ = out | "WriteTables" >> WriteTables(cfg.output, cfg.num_shards)
  return out


def default_run_id() -> str:
  return "sweep-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")

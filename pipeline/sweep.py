"""The sweep graph: list -> pair -> chips -> tf.Transform -> RunInference -> rows and maps."""
from __future__ import annotations

import dataclasses
import datetime as dt

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from changesweep.model.format import ModelInfo
from changesweep.pipeline import aggregate, dataflow, incremental
from changesweep.pipeline.bigquery import WriteRowsToBigQuery
from changesweep.pipeline.chips import ChipFailure, ReadChips, failure_dead_letter, plan_chips, split_chip_key
from changesweep.pipeline.elements import DeadLetter, Pair, safe_name
from changesweep.pipeline.listing import ListCaptures
from changesweep.pipeline.metrics import inc_counter
from changesweep.pipeline.history import ScoreAgainstHistory
from changesweep.pipeline.pairing import PairConsecutive
from changesweep.pipeline.usability import MaskSpec
from changesweep.pipeline.progress import ReportProgress
from changesweep.pipeline.scoring import (ScoreChips, capped_batch_size, make_model_handler,
                              raw_tensor_adapter_config, to_record_batch)
from changesweep.pipeline.sinks import WriteTable
from changesweep.transforms import preprocessing

STAGE = "aggregate"


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """Everything the graph needs, validated before any work starts.

  Attributes:
    output: output folder (local or gs://).
    model: the validated model directory.
    bands: bands fed to the model, in its order.
    input, manifest, layout: where and how to list captures.
    statistics: "archive" or "model" normalisation statistics.
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
  """
  output: str
  model: ModelInfo
  bands: tuple[str, ...]
  input: str | None = None
  manifest: str | None = None
  layout: str = "{location}/{date}.tif"
  statistics: str = "archive"
  chip_overlap: int = 16
  batch_size: int = 8
  model_copies: int | None = None
  num_shards: int = 1
  max_regions: int = 20
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
    if self.statistics not in ("archive", "model"):
      raise ValueError(f"statistics must be 'archive' or 'model', got {self.statistics!r}")
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
    if len(self.bands) != len(self.model.bands):
      raise ValueError(f"the model reads {len(self.model.bands)} bands {list(self.model.bands)}"
                       f", but --bands gives {len(self.bands)}: {list(self.bands)}")

  @property
  def chip_size(self) -> int:
    return self.model.chip_size


def map_path(output: str, pair: Pair) -> str:
  """Where a pair's change map goes: always under `output`, whatever the location id says."""
  return FileSystems.join(output, "maps", safe_name(pair.location), f"{pair.pair_id}.tif")


class AggregatePair(beam.DoFn):
  """Joined `(pair, chip scores, failures)` -> pair row, chip rows, change map, or dead letter."""

  def __init__(self, cfg: SweepConfig):
    self.cfg = cfg

  def process(self, element):
    pair_id, joined = element
    pairs = list(joined["pair"])
    if not pairs:  # chips of a pair that was never planned cannot happen; guard anyway
      return
    pair = pairs[0]
    failures = list(joined["failed"])
    if failures:
      yield beam.pvalue.TaggedOutput("dead", failure_dead_letter(pair, failures))
      return
    cfg = self.cfg
    try:
      prob, valid, placed = aggregate.stitch(pair, joined["chips"], cfg.chip_size,
                                             cfg.chip_overlap)
    except ValueError as e:
      yield beam.pvalue.TaggedOutput("dead", DeadLetter(
          pair.after.uri, STAGE, f"pair with {pair.before.uri}: {e}", pair.location, pair_id))
      return
    if not valid.any():
      inc_counter(STAGE, "pairs_without_valid_pixels")
      yield beam.pvalue.TaggedOutput("dead", DeadLetter(
          pair.after.uri, STAGE, f"pair with {pair.before.uri}: no pixel is valid in both "
          "captures (all nodata, masked or not finite)", pair.location, pair_id))
      return
    threshold = cfg.model.threshold
    run = {"model_id": cfg.model.model_id, "model_version": cfg.model.version,
           "run_id": cfg.run_id}
    date = pair.after.captured_at[:10]
    for chip, _ in sorted(placed, key=lambda cs: cs[0].index):
      core = (slice(chip.core_row0, chip.core_row1), slice(chip.core_col0, chip.core_col1))
      yield beam.pvalue.TaggedOutput("chips", {
          "pair_id": pair_id, "location": pair.location, "capture_date": date,
          "chip_index": chip.index, "row0": chip.core_row0, "col0": chip.core_col0,
          "row1": chip.core_row1, "col1": chip.core_col1,
          **aggregate.summarize(prob[core], valid[core], threshold), **run})
    map_uri = None
    if cfg.write_maps:
      map_uri = map_path(cfg.output, pair)
      aggregate.write_change_map(map_uri, pair, prob, valid)
      inc_counter(STAGE, "maps_written")
    crs = None
    if pair.after.crs:
      import rasterio

      c = rasterio.crs.CRS.from_wkt(pair.after.crs)
      crs = c.to_string() if c.to_epsg() else pair.after.crs
    inc_counter(STAGE, "pairs_scored")
    yield {
        "pair_id": pair_id, "location": pair.location, "capture_date": date,
        "before_captured_at": pair.before.captured_at,
        "after_captured_at": pair.after.captured_at,
        "before_uri": pair.before.uri, "after_uri": pair.after.uri,
        "height": pair.after.height, "width": pair.after.width, "crs": crs,
        **aggregate.summarize(prob, valid, threshold), "threshold": threshold,
        "num_chips": len(placed),
        "regions": aggregate.change_regions(
            prob, valid, threshold, pair.after.transform if pair.after.crs else None,
            cfg.max_regions, cfg.min_region_pixels),
        "change_map_uri": map_uri, **run}


def _inference_failures(failed):
  batch, error = failed
  for key, _ in batch:
    pair_id, index = split_chip_key(key)
    yield pair_id, ChipFailure(pair_id, index, f"inference failed: {str(error)[:300]}")


def build_sweep(p: beam.Pipeline, cfg: SweepConfig, temp_dir: str) -> dict:
  """Adds the sweep to `p`. Returns the output PCollections by table name."""
  import tensorflow_transform.beam as tft_beam

  size, nbands = cfg.chip_size, len(cfg.bands)
  with tft_beam.Context(temp_dir=temp_dir):
    files, dead_listing = p | "ListCaptures" >> ListCaptures(cfg.input, cfg.layout, cfg.manifest,
                                                             cfg.masks)
    pairs, firsts, dead_pairing, records = files | "PairConsecutive" >> PairConsecutive(
        cfg.bands, cfg.min_usable_fraction)
    state = None
    if cfg.state or cfg.since or cfg.force:
      if cfg.state:
        state = p | "ReadState" >> incremental.ReadState(cfg.state)
      pairs, firsts = (pairs, firsts) | "SelectNewPairs" >> incremental.SelectNewPairs(
          state, cfg.since, cfg.force)
    if cfg.accelerator:
      _ = p | "CheckGpu" >> dataflow.CheckGpu(cfg.accelerator if cfg.gpu_hints else None)
    tasks = (pairs
             | "PlanChips" >> beam.FlatMap(plan_chips, size, cfg.chip_overlap)
             | "ReshuffleChips" >> beam.Reshuffle())
    if cfg.statistics == "archive":
      sample = tasks | "ReadChips[Statistics]" >> beam.ParDo(
          ReadChips(size, count_metrics=False, mask_values=cfg.masks.values)).with_outputs(
              "failed", main="chips")
      batches = sample.chips | "ToRecordBatches[Statistics]" >> beam.Map(to_record_batch)
      transform_fn = ((batches, raw_tensor_adapter_config(nbands, size)) | "ComputeStatistics" >>
                      tft_beam.AnalyzeDataset(preprocessing.make_preprocessing_fn(nbands, size)))
      _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(
          FileSystems.join(cfg.output, "transform_fn"))
    else:
      transform_fn = p | "ReadModelStatistics" >> tft_beam.ReadTransformFn(
          cfg.model.transform_dir)
    # Scoring reads its chips in a stage of its own: in the stage that also feeds the
    # statistics, the chips could not be fused with the normalisation that waits on them, and
    # the runner would hold every chip of the sweep in memory between the two.
    chips = (tasks
             | "ReshuffleChips[Score]" >> beam.Reshuffle()
             | "ReadChips[Score]" >> beam.ParDo(
                 ReadChips(size, mask_values=cfg.masks.values)).with_outputs("failed",
                                                                             main="chips"))
    handler = make_model_handler(
        cfg.model.saved_model_dir,
        capped_batch_size(cfg.batch_size, cfg.max_batch_bytes, size, nbands),
        model_copies=cfg.model_copies, accelerator=cfg.accelerator if cfg.gpu_hints else None,
        require_gpu=bool(cfg.accelerator))
    scores, dlq = chips.chips | "ScoreChips" >> ScoreChips(transform_fn, handler, nbands, size)
    failures = ((chips.failed | "KeyReadFailures" >> beam.Map(lambda f: (f.pair_id, f)),
                 dlq.failed_inferences | "KeyInferenceFailures" >> beam.FlatMap(
                     _inference_failures))
                | "FlattenFailures" >> beam.Flatten())
    joined = ({"pair": pairs | "KeyPairs" >> beam.Map(lambda pr: (pr.pair_id, pr)),
               "chips": scores, "failed": failures}
              | "JoinChipsToPairs" >> beam.CoGroupByKey())
    rows = joined | "AggregatePairs" >> beam.ParDo(AggregatePair(cfg)).with_outputs(
        "chips", "dead", main="pairs")
    _ = scores | "Progress[chips]" >> ReportProgress("chips", tasks)
    _ = rows.pairs | "Progress[pairs]" >> ReportProgress("pairs", pairs)
  run_id = cfg.run_id
  dead = ((dead_listing, dead_pairing, rows.dead)
          | "FlattenDeadLetters" >> beam.Flatten()
          | "DeadLetterRows" >> beam.Map(lambda d: {**d.to_row(), "run_id": run_id}))
  _ = dead | "CountDeadLetters" >> beam.Map(lambda _: inc_counter("dead_letter", "records"))
  first_rows = firsts | "FirstCaptureRows" >> beam.Map(lambda f: {**f.to_row(), "run_id": run_id})
  pair_rows, history_rows = ((rows.pairs, records)
                             | "ScoreAgainstHistory" >> ScoreAgainstHistory(cfg.history, run_id))
  out = {"pairs": pair_rows, "chips": rows.chips, "first_captures": first_rows,
         "dead_letter": dead, "history": history_rows}
  for table, pcoll in out.items():
    pcoll | f"Write[{table}]" >> WriteTable(cfg.output, table, cfg.num_shards,
                                            parquet=table in ("pairs", "chips", "history"))
  if cfg.bigquery_table:
    _ = out["pairs"] | "WriteBigQuery[pairs]" >> WriteRowsToBigQuery(cfg.bigquery_table)
  if cfg.state:
    _ = ((out["pairs"], out["first_captures"], out["dead_letter"])
         | "WriteState" >> incremental.WriteState(cfg.state, state, run_id))
  return out


def default_run_id() -> str:
  return "sweep-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")

"""`changesweep sweep`: parse options, check inputs before any work, run the graph, summarise."""
from __future__ import annotations

import collections
import json
import logging
import os
import sys
import tempfile
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TypeOptions

from changesweep.model.model_dir import ModelDirError, read_model_info
from changesweep.pipeline import (accounting, dataflow, failures, listing, local_workers, metrics,
                                  sinks, warm_workers)
from changesweep.pipeline.layout import Layout
from changesweep.pipeline.options import (DEFAULT_FIXED_MODELS, DEFAULT_MULTISPECTRAL_MODEL,
                                          MULTISPECTRAL_MIN_OPTICAL_BANDS, SweepOptions)
from changesweep.pipeline.pairing import GridOptions
from changesweep.pipeline.usability import MaskSpec
from changesweep.pipeline.sweep import SweepConfig, build_sweep, default_run_id

log = logging.getLogger("changesweep")


DRY_RUN = "--dry_run"


class UsageError(ValueError):
  """A problem with the command line or its inputs, reported before any work starts."""


def parse_args(argv: list[str]) -> tuple[SweepConfig, PipelineOptions]:
  """Builds the validated sweep config and the Beam options from the command line.

  Raises:
    UsageError: naming the option or file at fault.
  """
  # `--dry_run` is ours (Beam's TestOptions has a `--dry_run VALUE` of its own).
  dry_run = DRY_RUN in argv
  argv = [a for a in argv if a != DRY_RUN]
  options = PipelineOptions(argv)
  opts = options.view_as(SweepOptions)
  if not opts.check_types:
    options.view_as(TypeOptions).pipeline_type_check = False
  known = options.get_all_options()  # each call parses every registered option class again
  unknown = [a for a in options.get_all_options(retain_unknown_options=True) if a not in known]
  if unknown:
    raise UsageError(f"unknown option(s): {', '.join(unknown)}; see changesweep sweep --help")
  if not opts.output:
    raise UsageError("--output is required: the folder that receives rows, maps and schemas")
  if bool(opts.input) == bool(opts.manifest):
    raise UsageError("give exactly one of --input ARCHIVE_ROOT or --manifest FILE")
  # Rows name captures by absolute path, so reports and maps resolve from anywhere.
  if opts.input and "://" not in opts.input:
    opts.input = os.path.abspath(opts.input)
  if opts.manifest and "://" not in opts.manifest:
    opts.manifest = os.path.abspath(opts.manifest)
  try:
    Layout.parse(opts.layout)
  except ValueError as e:
    raise UsageError(f"--layout: {e}") from None
  try:
    info = read_model_info(opts.model)
  except ModelDirError as e:
    raise UsageError(f"--model: {e}") from None
  try:
    if not dry_run:  # a dry run loads no model
      check_model_compatible(info)
  except ModelDirError as e:
    raise UsageError(f"--model: {e}") from None
  any_band = info.raw.get("band_mode") == "any"
  bands = (tuple(b.strip() for b in opts.bands.split(",")) if opts.bands
           else () if any_band else info.bands)
  # No --model (and no --bands): each pair gets the shipped model that fits its bands.
  extra = []
  if any_band and not opts.bands and not any(a == "--model" or a.startswith("--model=")
                                             for a in argv):
    for path in (*DEFAULT_FIXED_MODELS, DEFAULT_MULTISPECTRAL_MODEL):
      first = read_model_info(path)
      if not dry_run:
        check_model_compatible(first)
      extra.append(first)
  if dry_run:  # listing and pairing run here, whatever runner a real run would use
    options.view_as(StandardOptions).runner = "FnApiRunner"
  if not options.view_as(StandardOptions).runner:
    # The plain DirectRunner would try to download a Prism binary first.
    options.view_as(StandardOptions).runner = "FnApiRunner"
  try:
    accelerator = dataflow.configure_gpu_options(options, opts)
    cfg = SweepConfig(
        output=opts.output.rstrip("/"), model=info, bands=bands, input=opts.input,
        manifest=opts.manifest, layout=opts.layout, statistics=opts.statistics,
        statistics_chips=opts.statistics_chips,
        chip_overlap=opts.chip_overlap, batch_size=opts.batch_size,
        # one model copy per GPU on GPU workers
        model_copies=opts.model_copies or (opts.gpu_count if accelerator else None),
        num_shards=default_num_shards(opts.num_shards, options),
        max_regions=opts.max_regions, max_polygons=opts.max_polygons,
        min_region_pixels=opts.min_region_pixels,
        write_maps=not opts.no_maps, run_id=opts.run_id or default_run_id(),
        bigquery_table=opts.bigquery_table, state=opts.state, since=opts.since,
        force=opts.force, accelerator=accelerator, gpu_hints=opts.gpu_mode == "hints",
        max_batch_bytes=opts.max_batch_bytes,
        masks=MaskSpec(opts.mask_band, opts.mask_layout, parse_mask_values(opts.mask_values)),
        min_usable_fraction=opts.min_usable_fraction, history=opts.history,
        dry_run=dry_run, grids=GridOptions(opts.grid, opts.min_overlap, opts.resampling),
        coregister=opts.coregister,
        extra_models=tuple(extra))
    if cfg.masks.layout:
      Layout.parse(cfg.masks.layout)
    from changesweep.pipeline import grids

    grids.parse_grid_option(opts.grid)
    grids.parse_resampling(opts.resampling)
    if not 0.0 < opts.min_overlap <= 1.0:
      raise ValueError(f"--min_overlap must be in (0, 1], got {opts.min_overlap}")
  except ValueError as e:
    raise UsageError(str(e)) from None
  return cfg, options


def default_num_shards(given: int | None, options: PipelineOptions) -> int:
  """`--num_shards`, else 1 locally (one file per table) and 0 (the runner's choice) on Dataflow,
  where one writer per table would funnel a continent's rows through one worker."""
  if given is not None:
    return given
  runner = str(options.view_as(StandardOptions).runner or "")
  return 0 if "Dataflow" in runner else 1


def parse_mask_values(text: str) -> tuple[int, ...]:
  try:
    return tuple(int(v) for v in text.split(",") if v.strip())
  except ValueError:
    raise ValueError(f"--mask_values must be comma-separated integers, got {text!r}") from None


def check_model_compatible(info) -> None:
  """The model's statistics and signatures must fit its metadata, before any work starts."""
  from changesweep.transforms.preprocessing import transform_dir_shape

  if info.raw.get("band_mode") == "any":  # normalises inside its signature: no fixed shapes
    if not FileSystems.exists(FileSystems.join(info.saved_model_dir, "saved_model.pb")):
      raise ModelDirError(f"{info.path}: saved_model/ has no saved_model.pb")
    return
  try:
    bands, size = transform_dir_shape(info.transform_dir)
  except Exception as e:  # a damaged transform_fn raises from deep inside TF
    raise ModelDirError(f"{info.transform_dir} is not a readable tf.Transform output ({e})") from None
  if (bands, size) != (len(info.bands), info.chip_size):
    raise ModelDirError(
        f"{info.path}: transform_fn is for {bands} bands and {size}px chips, but metadata.json "
        f"says {len(info.bands)} bands and {info.chip_size}px")
  if not FileSystems.exists(FileSystems.join(info.saved_model_dir, "saved_model.pb")):
    raise ModelDirError(f"{info.path}: saved_model/ has no saved_model.pb")


def check_inputs(cfg: SweepConfig) -> None:
  """Fails early and clearly when the archive or manifest matches nothing."""
  if cfg.input and "://" not in cfg.input and not os.path.isdir(cfg.input):
    raise UsageError(f"--input {cfg.input!r} is not a folder")
  pattern = cfg.manifest or f"{cfg.input}/{Layout.parse(cfg.layout).glob}"
  try:
    # limits=[1]: one match proves the archive is not empty; never list millions of files here
    found = FileSystems.match([pattern], limits=[1])[0].metadata_list
  except Exception as e:  # Beam raises BeamIOError for a missing bucket or folder
    raise UsageError(f"cannot list {pattern!r}: {e}") from None
  if not found:
    what = "--manifest" if cfg.manifest else f"--input with --layout {cfg.layout!r}"
    raise UsageError(f"the archive is empty: no file matches {pattern!r} ({what})")


def summarize_run(cfg: SweepConfig, counters: dict, top: int = 5) -> dict:
  pairs = sinks.read_jsonl_rows(cfg.output, "pairs")
  dead = sinks.read_jsonl_rows(cfg.output, "dead_letter")
  firsts = sinks.read_jsonl_rows(cfg.output, "first_captures")
  ranked = sorted(pairs, key=lambda r: -(r["change_score"] or 0))
  groups = failures.by_reason(dead)
  return {
      "run_id": cfg.run_id, "output": cfg.output, "archive": cfg.input or cfg.manifest,
      "model": {"id": cfg.model.model_id, "version": cfg.model.version,
                "path": cfg.model.path,
                "bands": list(cfg.bands) or ["any (every identified band, up to "
                                             f"{cfg.model.raw.get('max_bands')})"]},
      "models_used": models_used(cfg, pairs),
      "statistics": cfg.statistics,
      "counts": {"locations": len({r["location"] for r in pairs} | {r["location"] for r in firsts}),
                 "pairs": len(pairs), "first_captures": len(firsts), "dead_letters": len(dead),
                 "chips": sum(r["num_chips"] for r in pairs)},
      "top_changes": [{k: r[k] for k in ("location", "before_captured_at", "after_captured_at",
                                         "change_score", "changed_fraction", "change_map_uri")}
                      for r in ranked[:top]],
      "accounting": accounting.account(cfg.output, counters.get("listing/files_matched", 0),
                                       counters.get("incremental/files_skipped", 0)),
      "failures_by_reason": groups,
      "failure": failures.run_failure(len(pairs), groups),
      "listing": listing.read_cost(counters),
      "metrics": counters,
  }


def models_used(cfg: SweepConfig, pairs: list[dict]) -> list[dict]:
  """Which model served how many pairs, and why (the per-pair choice without --model)."""
  served = collections.Counter(r["model_id"] for r in pairs)
  out = []
  for m in (*cfg.extra_models, cfg.model):
    any_band = m.raw.get("band_mode") == "any"
    why = ("any band set (every identified band, up to " f"{m.raw.get('max_bands')})"
           if any_band else f"both captures have only {', '.join(m.bands)}")
    if any_band and m in cfg.extra_models:
      why = (f"both captures have at least {MULTISPECTRAL_MIN_OPTICAL_BANDS} identified optical "
             "bands (multispectral)")
    elif cfg.extra_models and any_band:
      why = "the pairs no earlier model fits: " + why
    out.append({"model_id": m.model_id, "pairs": served.get(m.model_id, 0), "why": why})
  return out


def summarize_dry_run(cfg: SweepConfig, counters: dict) -> dict:
  """What a real run of the same command would do: its counts, from listing and pairing alone."""
  planned = sinks.read_jsonl_rows(cfg.output, "planned_pairs")
  dead = sinks.read_jsonl_rows(cfg.output, "dead_letter")
  firsts = sinks.read_jsonl_rows(cfg.output, "first_captures")
  return {
      "run_id": cfg.run_id, "output": cfg.output, "archive": cfg.input or cfg.manifest,
      "dry_run": True,
      "model": {"id": cfg.model.model_id, "version": cfg.model.version, "path": cfg.model.path,
                "bands": list(cfg.bands) or ["any"]},
      "counts": {"locations": len({r["location"] for r in planned}
                                  | {r["location"] for r in firsts}),
                 "captures": counters.get("listing/captures_listed", 0),
                 "pairs": len(planned), "first_captures": len(firsts),
                 "dead_letters": len(dead), "chips": sum(r["num_chips"] for r in planned)},
      "dead_letters_by_stage": dict(collections.Counter(r["stage"] for r in dead)),
      "listing": listing.read_cost(counters),
      "metrics": counters,
  }


def print_summary(summary: dict, stream=sys.stdout) -> None:
  c = summary["counts"]
  print(f"\nchangesweep: run {summary['run_id']} -> {summary['output']}", file=stream)
  groups = summary.get("failures_by_reason") or []
  if groups:
    print("  dead letters by reason:", file=stream)
    for g in groups[:10]:
      print(f"    {failures.format_reason(g)}", file=stream)
    if len(groups) > 10:
      print(f"    ... and {len(groups) - 10} more reasons in run.json", file=stream)
  used = summary.get("models_used", [])
  if len(used) > 1:
    print(f"  models chosen per pair (no --model), {summary['statistics']} statistics:",
          file=stream)
    for m in used:
      print(f"    {m['model_id']}: {m['pairs']} pairs ({m['why']})", file=stream)
  else:
    print(f"  model {summary['model']['id']} v{summary['model']['version']} on bands "
          f"{','.join(summary['model']['bands'])}, {summary['statistics']} statistics",
          file=stream)
  print(f"  {c['locations']} locations, {c['pairs']} pairs scored ({c['chips']} chips), "
        f"{c['first_captures']} first captures, {c['dead_letters']} dead letters", file=stream)
  acc = summary["accounting"]
  if acc["ok"]:
    print(f"  all {acc['listed']} listed files accounted for: {acc['in_pairs']} in pairs, "
          f"{acc['first_captures']} first captures, {acc['dead_letters']} dead letters"
          f"{', %d reported on earlier nights' % acc['skipped'] if acc.get('skipped') else ''}",
          file=stream)
  else:
    print(f"  WARNING: {acc['accounted']} of {acc['listed']} listed files accounted for"
          f"{'; in two places: ' + ', '.join(acc['twice'][:5]) if acc['twice'] else ''}",
          file=stream)
  cost = summary.get("listing")
  if cost:
    print(f"  listing: {cost['files_matched']} files, {cost['files_known']} known from the state, "
          f"{cost['files_read']} read ({cost['rasters_opened']} rasters opened, "
          f"{cost['bytes_read'] / 2 ** 20:.1f} MiB)", file=stream)
  if summary["top_changes"]:
    print("  top changes:", file=stream)
    for r in summary["top_changes"]:
      print(f"    {r['location']:<16} {r['before_captured_at'][:10]} -> "
            f"{r['after_captured_at'][:10]}  score {r['change_score']:.3f}  changed "
            f"{100 * r['changed_fraction']:.1f}%", file=stream)
  if summary["metrics"]:
    print("  metrics: " + ", ".join(f"{k}={v}" for k, v in summary["metrics"].items()),
          file=stream)
  print(f"  rows: {summary['output']}/pairs/ (Parquet + JSONL), BigQuery schemas in "
        f"{summary['output']}/schema/, dead letters in {summary['output']}/dead_letter/",
        file=stream)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict:
  """Runs a sweep and returns its summary.

  Raises:
    UsageError: bad options or inputs, found before the pipeline starts.
  """
  clock = [time.perf_counter()]
  timings = {}

  def lap(name: str) -> None:  # where a run's seconds go (start-up vs work), into run.json
    now = time.perf_counter()
    timings[name] = round(now - clock[0], 3)
    clock[0] = now

  cfg, options = parse_args(list(sys.argv[1:] if argv is None else argv))
  check_inputs(cfg)
  sinks.prepare_tables(cfg.output, sinks.tables_written(cfg.dry_run))
  sinks.write_schemas(cfg.output)
  temp_dir = options.get_all_options().get("temp_location") or tempfile.mkdtemp(prefix="sweep-")
  # under `changesweep sweep`, local worker processes started before the graph (warm_workers)
  p = test_pipeline or beam.Pipeline(runner=warm_workers.runner_for(options), options=options)
  lap("setup_s")
  build_sweep(p, cfg, temp_dir)
  lap("graph_s")
  with local_workers.worker_environment(options):
    result = p.run()
    result.wait_until_finish()
  sinks.remove_temp(cfg.output)
  sinks.check_tables_written(cfg.output, sinks.tables_written(cfg.dry_run))
  lap("pipeline_s")
  if cfg.dry_run:
    summary = summarize_dry_run(cfg, metrics.counters_of(result))
    with FileSystems.create(FileSystems.join(cfg.output, "dry_run.json")) as f:
      f.write(json.dumps(summary, indent=2).encode() + b"\n")
    return summary
  summary = summarize_run(cfg, metrics.counters_of(result))
  summary["step_seconds"] = metrics.step_seconds(result)  # where a run's work went, by step
  from changesweep.pipeline import stac

  tiles = os.path.join(cfg.output, "maps", "_tiles")
  if "://" not in tiles and os.path.isdir(tiles) and not os.listdir(tiles):
    os.rmdir(tiles)  # chip tiles are scratch: each pair's are removed once its map is written
  summary["stac"] = stac.write_stac(cfg.output, sinks.read_jsonl_rows(cfg.output, "pairs"))
  lap("summary_s")
  summary["timings"] = timings
  with FileSystems.create(FileSystems.join(cfg.output, "run.json")) as f:
    f.write(json.dumps(summary, indent=2).encode() + b"\n")
  return summary


def main(argv: list[str] | None = None) -> int:
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  try:
    summary = run(argv)
  except UsageError as e:
    print(f"changesweep sweep: error: {e}", file=sys.stderr)
    return 2
  if summary.get("dry_run"):
    c = summary["counts"]
    print(f"\nchangesweep: dry run -> {summary['output']} (no chip read, no model loaded)")
    print(f"  {c['locations']} locations, {c['captures']} captures, {c['pairs']} pairs, "
          f"{c['first_captures']} first captures, {c['dead_letters']} dead letters")
    for stage, n in sorted(summary["dead_letters_by_stage"].items()):
      print(f"    dead letters at {stage}: {n}")
    print(f"  a real run would score {c['chips']} chips")
    return 0
  print_summary(summary)
  if not PipelineOptions(list(sys.argv[1:] if argv is None else argv)).view_as(
      SweepOptions).no_report:
    from changesweep.pipeline import report
    try:
      print(f"  report: {report.write_report(summary['output'])}")
    except Exception as e:  # the rows are written; a report failure must not hide that
      print(f"changesweep sweep: warning: report not written ({type(e).__name__}: {e}); "
            f"write it with: changesweep report {summary['output']}", file=sys.stderr)
  if summary["failure"]:
    # the dead letters are written; a nightly job must still go red
    print(f"changesweep sweep: error: {summary['failure']}", file=sys.stderr)
    return 1
  return 0

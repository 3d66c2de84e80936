"""Submit-only launch of a sweep (Flex Template launcher, cron): build the graph, submit, return.

The local `changesweep sweep` (`pipeline.main`) waits and summarises; a launcher must return
once the job is created.
"""
from __future__ import annotations

import logging

import apache_beam as beam

log = logging.getLogger("changesweep")

_DATED = ("--output", "--run_id")


def expand_run_date(argv: list[str], today: str | None = None) -> list[str]:
  """Replaces `{date}` in `--output` and `--run_id` by today's UTC date (YYYY-MM-DD).

  A scheduled template has fixed parameters; `--output gs://b/sweeps/{date}` still gives each
  night its own folder. (`--layout` keeps its own `{date}` field untouched.)
  """
  import datetime as dt

  today = today or dt.datetime.now(dt.timezone.utc).date().isoformat()
  out, i = [], 0
  while i < len(argv):
    arg = argv[i]
    name = arg.split("=", 1)[0]
    if name in _DATED and "=" in arg:
      arg = arg.replace("{date}", today)
    elif name in _DATED and i + 1 < len(argv):
      out += [arg, argv[i + 1].replace("{date}", today)]
      i += 2
      continue
    out.append(arg)
    i += 1
  return out


def submit(argv: list[str]):
  """Builds the sweep and submits it without waiting (Flex Template launcher, cron).

  The local `changesweep sweep` waits and summarises; a launcher must return once the job is
  created. Returns the runner's PipelineResult.
  """
  from changesweep.pipeline import main, sinks
  from changesweep.pipeline.sweep import build_sweep

  cfg, options = main.parse_args(expand_run_date(argv))
  main.check_inputs(cfg)
  sinks.prepare_tables(cfg.output, sinks.tables_written(cfg.dry_run))
  sinks.write_schemas(cfg.output)
  all_options = options.get_all_options()
  temp_dir = (all_options.get("temp_location") or all_options.get("staging_location")
              or f"{cfg.output}/tmp")
  p = beam.Pipeline(options=options)
  build_sweep(p, cfg, temp_dir)
  result = p.run()
  log.warning("submitted sweep %s", cfg.run_id)
  return result

"""The `changesweep` command: sweep, train, evaluate, export-cva, report.

Quiet by default: TensorFlow, CUDA and absl start-up lines are silenced so a run shows only
changesweep's own; `-v`/`--verbose` or `CHANGESWEEP_VERBOSE=1` brings them back. No `--help`
needs TensorFlow, so none imports it (except where a command's module does at its top).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

USAGE = """usage: changesweep COMMAND [options]

Find change between consecutive captures of the same place in an image archive.

commands:
  sweep        run a change sweep over an archive (Beam; all Beam/Dataflow flags pass through)
               e.g. changesweep sweep --input data/sample_archive --output out/demo
  train        train the change model on labelled pairs
               e.g. changesweep train --pairs model/manifests/oscd_train.csv --out models/mine
  evaluate     precision/recall/F1/IoU/kappa of a model on labelled pairs
               e.g. changesweep evaluate --pairs model/manifests/oscd_test.csv --model MODEL_DIR
  export-cva   fit the change-vector-analysis baseline on unlabelled pairs, write a model dir
  report       write the HTML report of a finished sweep to OUT/report/index.html
               e.g. changesweep report out/demo --top 10

Run `changesweep COMMAND --help` for a command's options; add -v (or set
CHANGESWEEP_VERBOSE=1) for TensorFlow's and Beam's own log lines.
"""

# Commands that load TensorFlow when they run (not for --help).
USES_TENSORFLOW = ("sweep", "train", "evaluate", "export-cva")


@contextlib.contextmanager
def _stderr_silenced():
  """Points file descriptor 2 at /dev/null: TF's C++ start-up lines bypass Python's logging.

  Exceptions still propagate and are printed after stderr is back.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(os.devnull, "w") as null:
      os.dup2(null.fileno(), 2)
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


def configure_output(verbose: bool) -> None:
  """Quiet (the default): TF's C++ log level 3, no Python warnings, loggers at ERROR but
  changesweep's own.

  Must run before TensorFlow is imported: TF reads TF_CPP_MIN_LOG_LEVEL once, at import.
  """
  if verbose:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return
  os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
  os.environ.setdefault("PYTHONWARNINGS", "ignore")  # for worker processes too
  warnings.simplefilter("ignore")  # libraries' deprecation and packaging warnings
  logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
  logging.getLogger("changesweep").setLevel(logging.WARNING)
  for name in ("tensorflow", "absl", "apache_beam"):
    logging.getLogger(name).setLevel(logging.ERROR)


def quiet_import(module: str, verbose: bool):
  """Imports `module` (and, with it, whatever noise it makes at import) quietly."""
  import importlib

  if verbose:
    return importlib.import_module(module)
  with _stderr_silenced():
    return importlib.import_module(module)



def _sweep(argv):
  if any(a in ("-h", "--help") for a in argv):

    from changesweep.pipeline.options import SweepOptions

    import argparse
    parser = argparse.ArgumentParser(
        prog="changesweep sweep",
        description="Sweep an archive: pair consecutive captures per location, score change "
                    "chip by chip, write per-pair and per-chip rows (Parquet + JSONL), "
                    "BigQuery schemas, change-map GeoTIFFs and dead letters. Any Beam option "
                    "(--runner, --direct_num_workers, Dataflow flags) is accepted too.",
        epilog="example: changesweep sweep --input data/sample_archive --output out/demo "
               "--model model/shipped/cva-s2 --num_shards 2")
    SweepOptions._add_argparse_args(parser)
    parser.print_help()
    return 0
  from changesweep.pipeline import warm_workers
  from changesweep.pipeline.main import main as sweep_main

  try:
    return sweep_main(argv)
  finally:
    warm_workers.stop()


def _delegate(module: str):
  def run(argv):
    return quiet_import(module, _VERBOSE[0]).main(argv)
  return run


_VERBOSE = [False]


COMMANDS = {
    "sweep": _sweep,
    "train": _delegate("changesweep.model.train"),
    "evaluate": _delegate("changesweep.model.evaluate"),
    "export-cva": _delegate("changesweep.model.cva"),
    "report": _delegate("changesweep.pipeline.report"),
}


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  verbose = os.environ.get("CHANGESWEEP_VERBOSE", "") not in ("", "0") or any(
      a in ("-v", "--verbose") for a in argv)
  argv = [a for a in argv if a not in ("-v", "--verbose")]
  _VERBOSE[0] = verbose
  configure_output(verbose)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(USAGE)
    return 0 if argv else 2
  command, rest = argv[0], argv[1:]
  if command not in COMMANDS:
    print(f"changesweep: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2
  from changesweep.model.entry import exit_after

  if command in USES_TENSORFLOW and not any(a in ("-h", "--help") for a in rest):
    if command == "sweep":  # local worker processes import while this one does
      from changesweep.pipeline import warm_workers

      warm_workers.start(rest)
    quiet_import("tensorflow", verbose)
  exit_after(lambda: COMMANDS[command](rest))

"""The `changesweep` command: sweep, train, evaluate, export-cva."""
from __future__ import annotations

import os
import sys

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

Run `changesweep COMMAND --help` for a command's options.
"""


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
  from changesweep.pipeline.main import main as sweep_main

  return sweep_main(argv)


def _delegate(module: str):
  def run(argv):
    import importlib

    return importlib.import_module(module).main(argv)
  return run


COMMANDS = {
    "sweep": _sweep,
    "train": _delegate("changesweep.model.train"),
    "evaluate": _delegate("changesweep.model.evaluate"),
    "export-cva": _delegate("changesweep.model.cva"),
    "report": _delegate("changesweep.pipeline.report"),
}


def main(argv: list[str] | None = None) -> int:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(USAGE)
    return 0 if argv else 2
  command, rest = argv[0], argv[1:]
  if command not in COMMANDS:
    print(f"changesweep: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2
  from changesweep.model.entry import exit_after

  exit_after(lambda: COMMANDS[command](rest))

"""Flex Template entry point: the launcher runs this with `--PARAM=VALUE` for each parameter.

It builds the same sweep as `changesweep sweep` and submits it without waiting.
"""
import logging
import sys

from changesweep.pipeline import launch
from changesweep.pipeline.main import UsageError

if __name__ == "__main__":
  logging.basicConfig(level=logging.INFO)
  try:
    launch.submit(sys.argv[1:])
  except UsageError as e:
    print(f"changesweep (flex template): error: {e}", file=sys.stderr)
    sys.exit(2)

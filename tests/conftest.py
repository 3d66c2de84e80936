"""Shared fixtures; and pytest's exit status is the tests' own.

A process that ran a tf.Transform analysis may crash at interpreter exit after all its work is
done, so the status is taken when pytest is finished and the process ends there.
"""
from __future__ import annotations

import os
import sys
import warnings

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SAMPLE_ARCHIVE = os.path.join(ROOT, "data", "sample_archive")
SAMPLE_LABELS = os.path.join(ROOT, "data", "sample_labels")
CVA_MODEL = os.path.join(ROOT, "model", "shipped", "cva-s2")

_status = {}


def pytest_configure(config):
  warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
  _status["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
  if "code" in _status and not os.environ.get("CHANGESWEEP_NORMAL_EXIT"):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_status["code"])

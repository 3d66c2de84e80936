"""`model.val_compare`: the figures it reports from F1 curves, and the band lookup."""
from __future__ import annotations

import numpy as np
import pytest

from changesweep.model import anyband
from changesweep.model import val_compare
from changesweep.model.train_anyband import THRESHOLDS


def test_curve_report_takes_own_best_and_model_threshold():
  curve = np.zeros(len(THRESHOLDS))
  curve[np.argmin(np.abs(THRESHOLDS - 0.30))] = 0.6
  curve[np.argmin(np.abs(THRESHOLDS - 0.59))] = 0.4
  r = val_compare.curve_report(0.59, {"s2_4": curve})["s2_4"]
  assert r["best_threshold"] == pytest.approx(0.30) and r["f1_at_best"] == pytest.approx(0.6)
  assert r["model_threshold"] == pytest.approx(0.59)
  assert r["f1_at_model_threshold"] == pytest.approx(0.4)


def test_fixed_channels_by_name():
  idx = val_compare.fixed_channels(("blue", "green", "red", "nir"))
  assert [anyband.CHANNELS[i] for i in idx] == ["B02", "B03", "B04", "B08"]
  with pytest.raises(ValueError, match="not a Sentinel-2 band"):
    val_compare.fixed_channels(("red", "VV"))

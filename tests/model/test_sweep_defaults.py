"""The sweep-defaults generator: its commands, IoU and the models each run used."""
import json

import pytest

from changesweep.model import sweep_defaults
from changesweep.pipeline.sweep import has_only
from changesweep.transforms.band_names import BandId


def test_every_archive_is_swept_without_a_model():
  for name in sweep_defaults.ARCHIVES:
    argv = sweep_defaults.sweep_command("/a", name, "/o")
    assert argv[:2] == ["changesweep", "sweep"] and "--model" not in argv
    assert argv[3].startswith("/a/") and argv[argv.index("--output") + 1] == "/o"


def test_iou_from_f1():
  assert sweep_defaults.iou(0.5) == pytest.approx(1 / 3)
  assert sweep_defaults.iou(1.0) == 1.0


def test_models_used_reads_run_json(tmp_path):
  (tmp_path / "run.json").write_text(json.dumps({"models_used": [
      {"model_id": "a", "pairs": 3}, {"model_id": "b", "pairs": 0}]}))
  assert sweep_defaults.models_used(str(tmp_path)) == {"a": 3}
  assert sweep_defaults.models_used(str(tmp_path / "none")) == {}


def test_fixed_models_serve_only_captures_without_other_bands():
  red, green, blue = (BandId(n, n, w, "optical") for n, w in
                      (("B04", 0.665), ("B03", 0.56), ("B02", 0.49)))
  nir = BandId("B08", "nir", 0.842, "optical")
  qa = BandId("QA_PIXEL", None, None, "mask")
  assert has_only([red, green, blue], [0, 1, 2])
  assert has_only([red, green, blue, qa], [0, 1, 2])
  assert has_only([red, green, blue, None], [0, 1, 2])
  assert not has_only([blue, green, red, nir], [2, 1, 0])

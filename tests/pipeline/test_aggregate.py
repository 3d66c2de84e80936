import numpy as np
import pytest

from changesweep.pipeline.aggregate import change_regions, stitch, summarize
from changesweep.pipeline.elements import Pair, SceneRef
from changesweep.pipeline.elements import PROB_SCALE
from changesweep.pipeline.scoring import ChipScore
from changesweep.transforms.tiling import chip_grid


def scene_ref(h, w):
  return SceneRef("loc", "2020-01-01T00:00:00", ("a.tif",), ("B1",), h, w, "uint16", "",
                  (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), None, 0)


def test_stitch_puts_each_core_in_place():
  h, w, size, overlap = 40, 50, 32, 4
  pair = Pair("p", scene_ref(h, w), scene_ref(h, w), (0,), (0,))
  truth = np.arange(h * w).reshape(h, w) % PROB_SCALE
  chips = []
  for c in chip_grid(h, w, size, overlap):
    block = np.zeros((size, size), np.uint8)
    block[:c.height, :c.width] = truth[c.row:c.row + c.height, c.col:c.col + c.width]
    chips.append(ChipScore(c.index, block, np.ones((size, size), bool)))
  prob, valid, placed = stitch(pair, chips, size, overlap)
  assert (prob == truth).all() and valid.all() and len(placed) == 4
  with pytest.raises(ValueError, match="3 of 4"):
    stitch(pair, chips[:3], size, overlap)


def test_summary_by_hand():
  prob = np.zeros((10, 10), np.uint8)
  prob[0, :5] = PROB_SCALE  # 5 changed pixels
  valid = np.ones((10, 10), bool)
  valid[9] = False  # 90 valid
  s = summarize(prob, valid, 0.5)
  assert s["valid_fraction"] == 0.9
  assert s["changed_pixels"] == 5 and s["changed_fraction"] == pytest.approx(5 / 90)
  assert s["mean_change_prob"] == pytest.approx(5 / 90)
  assert s["change_score"] == 1.0 and s["max_change_prob"] == 1.0
  assert summarize(prob, np.zeros_like(valid), 0.5)["changed_fraction"] is None


def test_regions_are_boxes_of_connected_change_largest_first_with_map_coordinates():
  prob = np.zeros((20, 20), np.uint8)
  prob[2:4, 2:5] = PROB_SCALE  # 6 px
  prob[10:15, 12:16] = PROB_SCALE  # 20 px
  prob[18, 18] = PROB_SCALE  # 1 px, below min size
  valid = np.ones_like(prob, bool)
  regions = change_regions(prob, valid, 0.5, (10.0, 0, 1000.0, 0, -10.0, 5000.0), 10, 2)
  assert [(r["row0"], r["col0"], r["row1"], r["col1"], r["area_pixels"]) for r in regions] == [
      (10, 12, 15, 16, 20), (2, 2, 4, 5, 6)]
  assert (regions[0]["min_x"], regions[0]["max_y"]) == (1120.0, 4900.0)
  assert change_regions(prob, ~valid, 0.5, None, 10, 1) == []

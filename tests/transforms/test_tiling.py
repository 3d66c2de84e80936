import numpy as np
import pytest

from changesweep.transforms.tiling import chip_grid, core_slice, pad_chip


@pytest.mark.parametrize("h,w,size,overlap", [
    (300, 360, 256, 16), (256, 256, 256, 16), (100, 80, 256, 16), (1000, 257, 64, 8),
    (65, 64, 64, 0)])
def test_cores_tile_the_scene_exactly_once(h, w, size, overlap):
  cover = np.zeros((h, w), int)
  for chip in chip_grid(h, w, size, overlap):
    assert chip.height == min(size, h) and chip.width == min(size, w)
    assert 0 <= chip.row and chip.row + chip.height <= h
    assert 0 <= chip.col and chip.col + chip.width <= w
    rows, cols = core_slice(chip)
    assert rows.start >= 0 and rows.stop <= chip.height and cols.stop <= chip.width
    cover[chip.core_row0:chip.core_row1, chip.core_col0:chip.core_col1] += 1
  assert (cover == 1).all()


def test_edge_chips_shift_inward_instead_of_padding():
  chips = chip_grid(300, 360, 256, 16)
  assert [(c.row, c.col) for c in chips] == [(0, 0), (0, 104), (44, 0), (44, 104)]


def test_small_scene_is_one_padded_chip():
  (chip,) = chip_grid(100, 80, 256, 16)
  assert pad_chip(np.ones((chip.height, chip.width, 3)), 256).shape == (256, 256, 3)


def test_overlap_must_leave_a_stride():
  with pytest.raises(ValueError):
    chip_grid(100, 100, 64, 64)

"""Chip bookkeeping: the bytes a chip reads follow each capture's data type."""
from __future__ import annotations

from typing import NamedTuple

import pytest

from changesweep.pipeline.chips import window_bytes
from changesweep.pipeline.elements import Pair, SceneRef
from changesweep.transforms import tiling


def scene(dtype: str) -> SceneRef:
  return SceneRef("l", "2020-01-01T00:00:00", ("a.tif",), ("B1", "B2"), 8, 8, dtype, "",
                  (1.0, 0.0, 0.0, 0.0, -1.0, 0.0), None, 1)


@pytest.mark.parametrize("dtype,itemsize", [("uint8", 1), ("uint16", 2), ("int16", 2),
                                            ("uint32", 4), ("int32", 4), ("float32", 4),
                                            ("float64", 8)])
def test_window_bytes_uses_the_data_types_itemsize(dtype, itemsize):
  chip = tiling.chip_grid(8, 8, 8)[0]
  pair = Pair("p", scene(dtype), scene("uint8"), (0, 1), (0,))
  assert window_bytes(pair, chip) == 8 * 8 * (2 * itemsize + 1)


def test_the_statistics_sample_spreads_a_fixed_number_of_chips_over_the_pair():
  from changesweep.pipeline.chips import in_statistics_sample
  from changesweep.transforms import tiling

  class _Pair(NamedTuple):
    height: int
    width: int

  pair = _Pair(2000, 2000)
  chips = tiling.chip_grid(2000, 2000, 256, 16)
  picked = [c.index for c in chips if in_statistics_sample((pair, c), 256, 16, 4)]
  assert len(picked) == 4 and picked == sorted(set(picked))
  assert picked[0] < len(chips) / 4 and picked[-1] >= 3 * len(chips) / 4  # spread, not clumped
  assert all(in_statistics_sample((pair, c), 256, 16, 0) for c in chips)  # 0: every chip
  small = _Pair(300, 300)  # 4 chips: a sample of 4 is all of them
  assert all(in_statistics_sample((small, c), 256, 16, 4)
             for c in tiling.chip_grid(300, 300, 256, 16))

"""Chip bookkeeping: the bytes a chip reads follow each capture's data type."""
from __future__ import annotations

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

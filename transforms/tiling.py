"""Fixed-size chip grids over a scene: the only unit the sweep reads, scores and stitches.

Chips overlap by a few pixels so the network sees context at chip borders; each pixel of the
scene belongs to exactly one chip's *core*, the part that is kept when chips are stitched.
Edge chips are shifted inward rather than padded, so every chip is full size unless the scene
itself is smaller than a chip.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Chip(NamedTuple):
  """One chip of a scene, in pixel coordinates of the scene.

  Attributes:
    index: position in row-major order of the grid.
    row, col: top-left corner of the read window.
    height, width: the read window (at most the chip size; smaller only for tiny scenes).
    core_row0, core_col0, core_row1, core_col1: the half-open core region of the scene.
  """
  index: int
  row: int
  col: int
  height: int
  width: int
  core_row0: int
  core_col0: int
  core_row1: int
  core_col1: int


def _starts_and_cores(length: int, size: int, overlap: int) -> list[tuple[int, int, int]]:
  if length <= size:
    return [(0, 0, length)]
  stride = size - overlap
  starts = list(range(0, length - size, stride)) + [length - size]
  cuts = [0] + [(nxt + cur + size) // 2 for cur, nxt in zip(starts, starts[1:])] + [length]
  return [(s, cuts[i], cuts[i + 1]) for i, s in enumerate(starts)]


def chip_grid(height: int, width: int, size: int, overlap: int = 0) -> list[Chip]:
  """The chips covering a `height` x `width` scene.

  Raises:
    ValueError: on non-positive sizes or an overlap that leaves no stride.
  """
  if height < 1 or width < 1:
    raise ValueError(f"scene must have pixels, got {height}x{width}")
  if size < 1 or not 0 <= overlap < size:
    raise ValueError(f"need chip size >= 1 and 0 <= overlap < size, got {size}, {overlap}")
  rows = _starts_and_cores(height, size, overlap)
  cols = _starts_and_cores(width, size, overlap)
  chips = []
  for r, r0, r1 in rows:
    for c, c0, c1 in cols:
      chips.append(Chip(len(chips), r, c, min(size, height), min(size, width), r0, c0, r1, c1))
  return chips


def pad_chip(array: np.ndarray, size: int) -> np.ndarray:
  """Pads the two leading (row, col) axes of `array` with zeros up to `size`."""
  pad = [(0, size - array.shape[0]), (0, size - array.shape[1])] + [(0, 0)] * (array.ndim - 2)
  return np.pad(array, pad) if any(p[1] for p in pad) else array


def core_slice(chip: Chip) -> tuple[slice, slice]:
  """Slices of the chip's own array that hold its core region."""
  return (slice(chip.core_row0 - chip.row, chip.core_row1 - chip.row),
          slice(chip.core_col0 - chip.col, chip.core_col1 - chip.col))

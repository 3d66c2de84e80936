"""Which bands of a pair feed an any-band model, slot by slot (pure, metadata only)."""
from __future__ import annotations

import os
from typing import NamedTuple

from changesweep.pipeline.elements import SceneRef
from changesweep.transforms import bands as band_ids

_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def file_format(scene: SceneRef) -> str:
  """The raster format, from the file name (a 3-band PNG or JPEG is RGB by definition)."""
  return _FORMATS.get(os.path.splitext(scene.uris[0])[1].lower(), "GTiff")


def identities(scene: SceneRef) -> list:
  return band_ids.identify_capture(scene.band_names, file_format=file_format(scene))


def select_bands(scene: SceneRef, wanted: tuple[str, ...] | None, max_bands: int
                 ) -> tuple[list[int], list]:
  """Positions and identities of a capture's bands that feed the any-band model.

  Raises:
    BandError: no band can be identified, several are unnamed, or `wanted` is absent.
  """
  ids = identities(scene)
  if wanted:
    positions = band_ids.resolve_bands(wanted, ids, file_format(scene))
  else:
    positions = band_ids.select_for_any_band(ids, max_bands)
  return positions, [ids[p] or band_ids.UNKNOWN for p in positions]


class Slots(NamedTuple):
  """Which bands fill the model's slots: positions in each capture, identity and code."""
  before: tuple[int, ...]
  after: tuple[int, ...]
  names: tuple[str, ...]
  codes: tuple[float, ...]


def slots_for_pair(before: tuple[list[int], list], after: tuple[list[int], list]) -> Slots | str:
  """The bands both captures have (by identity), in the later capture's order; or why none."""
  (pos_b, ids_b), (pos_a, ids_a) = before, after
  by_key = {i.key: p for p, i in zip(pos_b, ids_b)}
  slots = [(by_key[i.key], p, i) for p, i in zip(pos_a, ids_a) if i.key in by_key]
  if not slots:
    return (f"no band in common: the previous capture has {[i.name for i in ids_b]}, this one "
            f"{[i.name for i in ids_a]}")
  return Slots(tuple(s[0] for s in slots), tuple(s[1] for s in slots),
               tuple(s[2].name for s in slots), tuple(band_ids.band_code(s[2]) for s in slots))

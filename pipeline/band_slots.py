"""Which bands of a pair feed an any-band model, slot by slot (pure, metadata only)."""
from __future__ import annotations

import os
from typing import NamedTuple

from changesweep.pipeline import usability
from changesweep.pipeline.elements import SceneRef
from changesweep.transforms import bands as band_ids

_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def file_format(scene: SceneRef) -> str:
  """The raster format, from the file name (a 3-band PNG or JPEG is RGB by definition)."""
  return _FORMATS.get(os.path.splitext(scene.uris[0])[1].lower(), "GTiff")


def identities(scene: SceneRef) -> list:
  return band_ids.identify_capture(scene.band_names, file_format=file_format(scene))


Position = int | band_ids.Derived


def plan_fixed(scene: SceneRef, wanted: tuple[str, ...]) -> list[Position]:
  """Positions of a fixed-band model's bands in a capture; an index it lacks (NDVI, NDWI, NBR)
  is derived from the bands it has.

  Raises:
    BandError: a band is absent (for an index: one of its sources) or ambiguous.
  """
  return band_ids.plan_bands(wanted, scene.band_names)


def select_bands(scene: SceneRef, wanted: tuple[str, ...] | None, max_bands: int
                 ) -> tuple[list[Position], list]:
  """Positions and identities of a capture's bands that feed the any-band model.

  A wanted index the capture lacks (`--bands ndvi`) is derived from its sources, a band of
  kind index (band_code `CODE_INDEX`).

  Raises:
    BandError: no band can be identified, several are unnamed, or `wanted` (for an index: one
      of its sources) is absent.
  """
  ids = identities(scene)
  if wanted:
    positions = band_ids.plan_bands(wanted, ids, file_format(scene))
  else:
    positions = band_ids.select_for_any_band(ids, max_bands)
  return positions, [band_ids.identify(p.name) if isinstance(p, band_ids.Derived)
                     else ids[p] or band_ids.UNKNOWN for p in positions]


def with_derived_stats(scene: SceneRef, positions, mask_values: tuple[int, ...] = ()
                       ) -> SceneRef:
  """The capture with the statistics of the derived bands among `positions` (usability pass).

  Only captures whose other statistics were measured get them (both come from the decimated
  read), so `band_stats` answers alike for real and derived bands.

  Raises:
    RasterError, PixelReadError: a source band could not be read.
  """
  derived = [p for p in positions if isinstance(p, band_ids.Derived)]
  have = {d[0] for d in scene.derived_stats}
  todo = [d for d in dict.fromkeys(derived) if d not in have]
  if not todo or not scene.band_means:
    return scene
  stats = tuple((d, *usability.derived_band_stats(scene, d, mask_values)) for d in todo)
  return scene._replace(derived_stats=scene.derived_stats + stats)


def band_stats(scene: SceneRef, position: Position) -> tuple[float, float] | None:
  """Mean and spread of one band of a capture (real or derived), or None where not measured."""
  if isinstance(position, band_ids.Derived):
    return next((tuple(d[1:3]) for d in scene.derived_stats if d[0] == position), None)
  if not scene.band_means:
    return None
  return scene.band_means[position], scene.band_stds[position]


def band_robust_stats(scene: SceneRef, position: Position) -> tuple[float, float] | None:
  """Median and 1.4826 * MAD of one band of a capture (real or derived), or None where not
  measured (e.g. a capture from an older incremental state)."""
  if isinstance(position, band_ids.Derived):
    return next((tuple(d[3:5]) for d in scene.derived_stats
                 if d[0] == position and len(d) >= 5), None)
  if not scene.band_medians:
    return None
  return scene.band_medians[position], scene.band_mads[position]


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

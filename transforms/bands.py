"""Bands for a model: resolve wanted names to a capture's bands, derived indices, any-band slots.

Identification (what each band is, from descriptions, tags, `eo:bands` and formats) lives in
`transforms.band_names`; its public names are re-exported here, so callers import one module.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import numpy as np

from changesweep.transforms.band_names import (  # noqa: F401  (re-exported)
    ALIASES, ALPHA, CODE_EMPTY, CODE_INDEX, CODE_SAR, CODE_UNKNOWN, COMMON_NAMES, FED_KINDS, KINDS,
    MAX_BANDS, S2_WAVELENGTHS, UNKNOWN, BandError, BandId, _FALLBACK, _is_name, band_code,
    identify, identify_capture, infer_sensor, parse_wavelength, slot_codes)

# -------------------------------------------------------------------------------------- resolving

def canonical(name: str) -> str:
  """Canonical form of a band name: the Sentinel-2 id where one exists ("red", "B4" -> "B04")."""
  b = identify(name)
  if b is None:
    return name.strip().upper()
  if b.name in S2_WAVELENGTHS:
    return b.name
  if b.kind == "optical" and b.common in ALIASES and b.name == b.common:
    return ALIASES[b.common]
  return b.name.upper()


def _as_identities(bands: Sequence[BandId | str | None], file_format: str | None
                   ) -> tuple[list[BandId | None], list[str | None]]:
  """Identities and display names of a capture given as BandIds or as raw names."""
  if any(isinstance(b, BandId) for b in bands):
    ids = [b if isinstance(b, BandId) else None for b in bands]
    return ids, [b.name if b and b != UNKNOWN else None for b in ids]
  names = [b if _is_name(b) else None for b in bands]
  return identify_capture(names, file_format=file_format or "GTiff"), names


def _same(want: BandId, have: BandId | None, fallback: bool) -> bool:
  if have is None or have.kind != want.kind:
    return False
  if want.common and have.common:
    return have.common in (_FALLBACK.get(want.common, ()) if fallback else (want.common,))
  return not fallback and want.name.upper() == have.name.upper()


def _unnamed_message(n: int, wanted: str) -> str:
  return (f"capture has {n} unnamed bands; {wanted}; unnamed bands are never guessed: pass "
          "--bands with their 1-based indexes in the model's order (e.g. --bands 3,2,1) or add a "
          "band/bands column to the manifest (or name the bands in the file's band descriptions "
          "or with {band} in the layout)")


def _find(w: str, ids: list[BandId | None], names: list[str | None]) -> list[int]:
  """Positions of the capture's bands that are the wanted band `w`."""
  literal = {i for i, n in enumerate(names) if n and n.strip().upper() == w.strip().upper()}
  want = identify(w)
  if want is None:
    return sorted(literal)
  hits = {i for i, b in enumerate(ids) if _same(want, b, False)}
  if not hits:
    hits = {i for i, b in enumerate(ids) if _same(want, b, True)}
  return sorted(hits | literal)


def resolve_bands(wanted: Sequence[str], identities_or_names: Sequence[BandId | str | None],
                  file_format: str | None = None) -> list[int]:
  """Maps wanted band names to 0-based positions among a capture's bands.

  Args:
    wanted: band names in the model's order ("red", "B04", "nir", "VV", "NDVI", "QA") or
      1-based indexes as strings ("3", "1").
    identities_or_names: the capture's bands in file order, as `identify_capture` results or as
      raw names (None where a band has no name; then identified here).
    file_format: the GDAL driver of raw names' file (a 3-band "PNG" is RGB); default GTiff.

  Returns:
    One 0-based position per wanted band.

  Raises:
    BandError: a wanted band is absent or ambiguous, an index is out of range, or the capture's
      bands have no names (they are never assigned by position).
  """
  bands = list(identities_or_names)
  ids, names = _as_identities(bands, file_format)
  positions = []
  for w in wanted:
    if w.strip().isdigit():
      i = int(w) - 1
      if not 0 <= i < len(bands):
        raise BandError(f"band index {w.strip()} out of range: capture has {len(bands)} bands")
      positions.append(i)
      continue
    if all(b is None or b.kind == "unknown" for b in ids) and not any(names):
      raise BandError(_unnamed_message(len(bands), f"the model reads {list(wanted)}"))
    hits = _find(w, ids, names)
    if len(hits) != 1:
      what = "absent" if not hits else "ambiguous"
      hint = ("; unnamed bands are never guessed: pass --bands or add a band/bands column to "
              "the manifest") if not hits and None in names else ""
      raise BandError(f"band {w!r} is {what} in a capture with bands {names}{hint}")
    positions.append(hits[0])
  return positions


# -------------------------------------------------------------------------------- derived indices

# Normalized differences (a - b) / (a + b) over common names; NDWI is McFeeters' green/NIR.
DERIVED = {"ndvi": ("nir", "red"), "ndwi": ("green", "nir"), "nbr": ("nir", "swir22")}


class Derived(NamedTuple):
  """A wanted band computed from two of the capture's bands: (a - b) / (a + b)."""
  name: str
  a: int
  b: int


def derived_sources(name: str) -> tuple[str, str] | None:
  """The two common names a derived band is computed from, or None if `name` is not derived."""
  return DERIVED.get(name.strip().lower())


def resolve_derived(name: str, identities_or_names: Sequence[BandId | str | None],
                    file_format: str | None = None) -> Derived:
  """Positions of the two source bands of a derived band.

  Raises:
    BandError: `name` is not a derived band, or a source band is absent or ambiguous.
  """
  sources = derived_sources(name)
  if sources is None:
    raise BandError(f"{name!r} is not a derived band; derivable: {', '.join(DERIVED)}")
  try:
    a, b = resolve_bands(list(sources), identities_or_names, file_format)
  except BandError as e:
    raise BandError(f"{name} needs bands {sources[0]} and {sources[1]}: {e}") from None
  return Derived(name.strip().lower(), a, b)


def plan_bands(wanted: Sequence[str], identities_or_names: Sequence[BandId | str | None],
               file_format: str | None = None) -> list[int | Derived]:
  """Like `resolve_bands`, but a wanted index absent from the capture is derived where it can be.

  Raises:
    BandError: as `resolve_bands`, with the derivation's own reason for a derived band.
  """
  plan: list[int | Derived] = []
  for w in wanted:
    try:
      plan.extend(resolve_bands([w], identities_or_names, file_format))
    except BandError as e:
      if derived_sources(w) is None or "absent" not in str(e):
        raise
      plan.append(resolve_derived(w, identities_or_names, file_format))
  return plan


def _lookup(arrays: Mapping[str, np.ndarray], common: str) -> np.ndarray:
  for key in (common,) + _FALLBACK.get(common, ()):
    if key in arrays:
      return arrays[key]
  raise BandError(f"band {common!r} is needed but absent among {sorted(arrays)}")


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """(a - b) / (a + b) as float32; NaN where a + b is 0 or either input is not finite."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  den = a + b
  ok = np.isfinite(a) & np.isfinite(b) & (den != 0)
  out = np.full(np.broadcast(a, b).shape, np.nan)
  np.divide(a - b, den, out=out, where=ok)
  return out.astype(np.float32)


def derive(name: str, arrays_by_common_name: Mapping[str, np.ndarray]) -> np.ndarray:
  """A derived band (ndvi, ndwi, nbr) from arrays keyed by common name ("nir", "red" ...).

  Raises:
    BandError: `name` is not derivable, or a source array is missing.
  """
  sources = derived_sources(name)
  if sources is None:
    raise BandError(f"{name!r} is not a derived band; derivable: {', '.join(DERIVED)}")
  return normalized_difference(*(_lookup(arrays_by_common_name, s) for s in sources))


# ------------------------------------------------------------------------------- any-band model

def select_for_any_band(identities: Sequence[BandId | None], max_bands: int = MAX_BANDS
                        ) -> list[int]:
  """Which bands of a capture feed the any-band model, in file order.

  Every identified optical, index and SAR band feeds it; masks and unnamed bands of a named
  capture do not; a single band of unknown identity is allowed.

  Raises:
    BandError: no band is identified, several bands are of unknown identity, two bands are the
      same band, or more than `max_bands` bands would feed the model.
  """
  ids = list(identities)
  if not ids:
    raise BandError("capture has no bands")
  if all(b is None for b in ids):
    raise BandError(_unnamed_message(len(ids), "the any-band model needs to know what each band "
                                                "is (only a single unnamed band may stay unknown)"))
  unknown = [i for i, b in enumerate(ids) if b is not None and b.kind == "unknown"]
  if len(unknown) > 1:
    raise BandError(f"capture has {len(unknown)} bands of unknown identity "
                    f"{[ids[i].name for i in unknown]}; name them (band descriptions, --bands "
                    "or a band/bands column in the manifest)")
  feed = [i for i, b in enumerate(ids) if b is not None and b.kind in FED_KINDS]
  if not feed:
    raise BandError(f"capture has no band a model can read: {[b.name if b else None for b in ids]}"
                    " (masks and quality layers are never read as data)")
  seen: dict[tuple[str, str], int] = {}
  for i in feed:
    if ids[i].key in seen:
      raise BandError(f"bands {seen[ids[i].key] + 1} and {i + 1} are both {ids[i].key[1]!r}; "
                      "keep one with --bands")
    seen[ids[i].key] = i
  if len(feed) > max_bands:
    raise BandError(f"capture has {len(feed)} bands; the model reads at most {max_bands}; choose "
                    "them with --bands")
  return feed

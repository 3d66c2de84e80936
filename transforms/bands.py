"""Band names: which raster bands feed the model, by name or index, never silently wrong."""
from __future__ import annotations

# Common names and the Sentinel-2 band ids they stand for (10 m bands and friends).
ALIASES = {
    "coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05",
    "rededge2": "B06", "rededge3": "B07", "nir": "B08", "nir08": "B8A", "swir16": "B11",
    "swir22": "B12",
}


def canonical(name: str) -> str:
  """Canonical form of a band name: upper-case Sentinel-2 id where an alias exists."""
  key = name.strip().lower()
  key = ALIASES.get(key, key)
  key = key.upper()
  # "B2" and "B02" name the same band.
  if len(key) == 2 and key[0] == "B" and key[1].isdigit():
    key = "B0" + key[1]
  return key


class BandError(ValueError):
  """The bands a model reads cannot be found in a capture."""


def resolve_bands(wanted: tuple[str, ...] | list[str], names: tuple[str | None, ...]) -> list[int]:
  """Maps wanted band names to 0-based positions among a capture's bands.

  Args:
    wanted: band names (aliases allowed) or 1-based indexes as strings ("1", "3").
    names: the capture's band names in file order (None where a band has no name).

  Raises:
    BandError: a wanted band is absent, ambiguous, or the capture's bands have no names and
      their count differs from what is wanted (guessing would feed wrong bands).
  """
  if all(w.strip().isdigit() for w in wanted):
    idx = [int(w) - 1 for w in wanted]
    bad = [w for w, i in zip(wanted, idx) if not 0 <= i < len(names)]
    if bad:
      raise BandError(f"band index {', '.join(bad)} out of range: capture has {len(names)} bands")
    return idx
  if not any(names):
    if len(names) == len(wanted):
      return list(range(len(names)))
    raise BandError(f"capture has {len(names)} unnamed bands; the model reads {list(wanted)}; "
                    "name the bands (band descriptions or {band} in the layout) or pass "
                    "--bands as indexes")
  have = [canonical(n) if n else None for n in names]
  positions = []
  for w in wanted:
    hits = [i for i, h in enumerate(have) if h == canonical(w)]
    if len(hits) != 1:
      what = "absent" if not hits else "ambiguous"
      raise BandError(f"band {w!r} is {what} in a capture with bands {list(names)}")
    positions.append(hits[0])
  return positions

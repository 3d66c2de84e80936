"""Band identities: what each raster band of a capture is, found from the names real files carry.

Resolving them for a model (`resolve_bands`, derived indices, the any-band selection) is
`transforms.bands`, which re-exports the names here.

A band is identified from its description, its GDAL band metadata (`src.tags(i)`), an `eo:bands`
entry from a manifest or STAC sidecar, and a sensor hint. Names are never invented: an unnamed band
is not guessed into a role (an unnamed BGR GeoTIFF must not feed an RGB model), except where the
file format itself defines the bands (a 3-channel PNG or JPEG is RGB). A single unnamed band is a
band of unknown identity, which the any-band model accepts.

Conventions understood: Sentinel-2 ids in any spelling (`B04`, `B4`, `B04_10m`, `B8A`,
"B4, central wavelength 665 nm"), Landsat Collection 2 (`SR_B4`, `ST_B10`; band numbers of
TM/ETM+ and OLI disagree and are told apart by a sensor hint, a wavelength or a name such as
`ST_B10`), STAC/eo common names (`red`, `nir08`, `swir16` ...), descriptions that contain such a word
("B15 red (x1e-4 reflectance)"), SAR polarisations (`VV`, "Sigma0_VH"), indices (`NDVI` ...),
wavelength tags in nm or um, and quality/auxiliary layers (`QA_PIXEL`, `SCL`, alpha) as masks.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from changesweep.transforms.band_tables import (  # noqa: F401  (re-exported)
    ALIASES, CODE_EMPTY, CODE_INDEX, CODE_SAR, CODE_UNKNOWN, COMMON_NAMES, FED_KINDS, KINDS,
    MAX_BANDS, S2_WAVELENGTHS, _BAND_ID, _BIGRAMS, _C2, _C2_NUMBERS, _COMMON_KEYS, _FALLBACK,
    _FORMAT_RGB, _GENERIC, _INDICES, _MASK_WORDS, _NAME_KEYS, _NOMINAL, _OLI, _POLARISATIONS,
    _RANGES, _S2_COMMON, _TEXT_WL, _TM, _UNIT_KEYS, _UNNAMED, _WAVELENGTH_KEYS, _WORDS)


@dataclasses.dataclass(frozen=True)
class BandId:
  """What one band of a capture is.

  Attributes:
    name: canonical name: a Sentinel-2 id ("B04"), a Landsat band ("OLI_B4", "TM_B4"; TM stands
      for TM and ETM+), a common name ("red"), a polarisation ("VV"), an index ("NDVI"), a mask
      layer ("QA_PIXEL"), or the band's own description.
    common: STAC/eo common name ("red", "nir08"), or None.
    wavelength_um: central wavelength in micrometres, or None.
    kind: one of "optical", "index", "sar", "unknown", "mask".
  """
  name: str
  common: str | None
  wavelength_um: float | None
  kind: str

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"band kind {self.kind!r} is not one of {KINDS}")

  @property
  def key(self) -> tuple[str, str]:
    """What makes two bands the same band: the common name where known, else the name."""
    return (self.kind, self.common or self.name.upper())


class BandError(ValueError):
  """The bands a model reads cannot be found in a capture."""


UNKNOWN = BandId("unknown", None, None, "unknown")
ALPHA = BandId("ALPHA", None, None, "mask")


def band_code(b: BandId | None) -> float:
  """The model's code for a band (see CONTRACT.md): wavelength in um, or a negative kind code.

  Raises:
    ValueError: a mask layer, which never feeds a model.
  """
  if b is None:
    return CODE_EMPTY
  if b.kind == "optical":
    return float(b.wavelength_um) if b.wavelength_um else CODE_UNKNOWN
  if b.kind == "mask":
    raise ValueError(f"band {b.name!r} is a mask or quality layer, not a model input")
  return {"index": CODE_INDEX, "sar": CODE_SAR, "unknown": CODE_UNKNOWN}[b.kind]


def slot_codes(identities: Sequence[BandId | None], positions: Sequence[int],
               max_bands: int = MAX_BANDS) -> list[float]:
  """The `band_code` row of a capture whose `positions` fill slots 0.., padded with CODE_EMPTY."""
  if len(positions) > max_bands:
    raise BandError(f"{len(positions)} bands do not fit the model's {max_bands} slots")
  codes = [band_code(identities[i]) for i in positions]
  return codes + [CODE_EMPTY] * (max_bands - len(codes))


# ---------------------------------------------------------------------------------------- parsing

def _family(sensor: str | None) -> str | None:
  """Sensor family of a hint: "s2", "oli" (Landsat 8/9), "tm" (Landsat 4-7), "landsat" or None."""
  if not sensor:
    return None
  s = re.sub(r"[^a-z0-9]", "", sensor.lower())
  if s.startswith(("sentinel2", "s2", "msi")):
    return "s2"
  if s.startswith(("landsat8", "landsat9", "lc08", "lc09", "lc8", "lc9", "lo08", "lo09", "oli",
                   "l8", "l9")):
    return "oli"
  if s.startswith(("landsat4", "landsat5", "landsat7", "lt04", "lt05", "le07", "lt4", "lt5",
                   "le7", "etm", "tm", "l4", "l5", "l7")):
    return "tm"
  if s.startswith("landsat"):
    return "landsat"
  return None


def _text_family(low: str) -> str | None:
  """Sensor family named inside a text, such as a Landsat product id in a description."""
  for token in re.split(r"[^a-z0-9]+", low):
    if re.fullmatch(r"l[co]0[89]", token):
      return "oli"
    if re.fullmatch(r"l[te]0[457]", token):
      return "tm"
    if re.fullmatch(r"s2[abcd]|msil[12][ac]", token):
      return "s2"
  return None


def _to_um(value: float, unit: str | None) -> float | None:
  """A wavelength in micrometres; without a unit, values above 100 are taken as nm."""
  unit = (unit or "").strip().lower()
  if unit.startswith(("nm", "nanomet")):
    value /= 1000.0
  elif not unit.startswith(("um", "µm", "μm", "micron", "micromet")) and value >= 100:
    value /= 1000.0
  return value if 0.3 <= value <= 15.0 else None


def parse_wavelength(value: object, unit: str | None = None) -> float | None:
  """Parses "665", "665 nm", "0.665um" or 0.665 (with an optional unit) into micrometres."""
  if value is None:
    return None
  m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([^\d\s].*)?", str(value))
  if not m:
    return None
  return _to_um(float(m.group(1)), m.group(2) or unit)


def _tag_wavelength(tags: Mapping[str, str]) -> float | None:
  unit = next((tags[k] for k in _UNIT_KEYS if tags.get(k)), None)
  for key in _WAVELENGTH_KEYS:
    if tags.get(key) not in (None, ""):
      suffix = key.rsplit("_", 1)[-1]
      return parse_wavelength(tags[key], unit or (suffix if suffix in ("um", "nm") else None))
  return None


def _text_wavelength(text: str) -> float | None:
  m = _TEXT_WL.search(text)
  return _to_um(float(m.group(1)), m.group(2)) if m else None


def _range_common(wl: float) -> str | None:
  return next((c for c, lo, hi in _RANGES if lo <= wl < hi), None)


def _tokens(low: str) -> list[str]:
  """Words of a lower-cased text with known two-word phrases joined ("red edge 2" -> rededge2)."""
  raw = [t for t in re.split(r"[^a-z0-9]+", low) if t]
  out, i = [], 0
  while i < len(raw):
    pair = tuple(raw[i:i + 2])
    if pair in _BIGRAMS:
      word, i = _BIGRAMS[pair], i + 2
      if pair == ("short", "wave") and i < len(raw) and raw[i] == "infrared":
        i += 1
      if word in ("rededge", "swir") and i < len(raw) and raw[i].isdigit():
        word, i = _WORDS.get(word + raw[i], word), i + 1
      out.append(word)
    else:
      out.append(raw[i])
      i += 1
  return out


def _optical(name: str, common: str | None, wl: float | None) -> BandId:
  if common in _GENERIC and wl is not None:
    refined = _range_common(wl)
    if refined in _GENERIC[common]:
      common = refined
  if wl is None and common is not None:
    wl = _NOMINAL.get(common)
  return BandId(name, common, wl, "optical")


def _from_wavelength(name: str | None, wl: float) -> BandId:
  """An optical band known by its wavelength only (the tag beats a name it contradicts)."""
  common = _range_common(wl)
  return BandId(name or common or f"{wl * 1000:.0f}nm", common, wl, "optical")


class _Candidate(NamedTuple):
  sensor: str
  band: BandId


def _s2(code: str) -> _Candidate:
  return _Candidate("s2", BandId(code, _S2_COMMON[code], S2_WAVELENGTHS[code], "optical"))


def _landsat(sensor: str, n: int) -> _Candidate:
  common, wl = (_OLI if sensor == "oli" else _TM)[n]
  return _Candidate(sensor, BandId(f"{sensor.upper()}_B{n}", common, wl, "optical"))


def _tolerance(wl: float) -> float:
  return max(0.03, 0.04 * wl)


def _choose(name: str, cands: list[_Candidate], default: str | None, wl: float | None,
            word: str | None, family: str | None) -> BandId:
  """Picks a band among a name's readings: the wavelength, then a common word, then the sensor."""
  if wl is not None:
    best = min(cands, key=lambda c: abs(c.band.wavelength_um - wl))
    if abs(best.band.wavelength_um - wl) <= _tolerance(wl):
      return best.band
    return _from_wavelength(name, wl)
  if word:
    hits = [c for c in cands if c.band.common == word or c.band.common in _FALLBACK.get(word, ())]
    cands = hits or cands
  if family:
    hits = [c for c in cands if c.sensor == family or (family == "landsat" and c.sensor != "s2")]
    cands = hits or cands
  if len(cands) == 1:
    return cands[0].band
  if default is not None and default in {c.sensor for c in cands} and family != "landsat":
    return next(c.band for c in cands if c.sensor == default)
  commons = {c.band.common for c in cands}
  if len(commons) == 1:  # the readings agree on the role (SR_B7 is swir22 on every Landsat)
    return _optical(name, commons.pop(), None)
  return BandId(name, None, None, "optical")  # an optical band, but which one needs a hint


def _landsat_cands(prefix: str, n: int) -> list[_Candidate]:
  prefix = {"toa": "sr", "bt": "st"}.get(prefix, prefix)
  return [_landsat(s, n) for s in ("oli", "tm") if n in _C2_NUMBERS[(prefix, s)]]


def _band_id_cands(code: str, family: str | None) -> tuple[list[_Candidate], str | None]:
  """Readings of a bare band id ("4", "04", "8a"): Sentinel-2 by default, Landsat if it fits.

  Zero-padded ids are Sentinel-2's unless a Landsat sensor is named (HLS L30 pads OLI numbers).
  """
  if code in ("8a", "08a"):
    return [_s2("B8A")], "s2"
  n = int(code)
  s2 = [_s2(f"B{n:02d}")] if 1 <= n <= 12 else []
  if code.startswith("0") and family not in ("oli", "tm", "landsat"):
    return s2, "s2"
  return s2 + [_landsat(s, n) for s in ("oli", "tm") if n in (_OLI if s == "oli" else _TM)], "s2"


def _from_name(text: str, wl: float | None, hint: str | None, family: str | None) -> BandId | None:
  """Identity from one name or description, or None when it names nothing known."""
  low = text.strip().lower()
  words = _tokens(low)
  label = text.strip()
  family = _text_family(low) or family
  if _MASK_WORDS.intersection(words):
    return BandId(label.upper(), None, None, "mask")
  found = [w for w in words if w in _INDICES]
  if len(set(found)) == 1:
    return BandId(found[0].upper(), None, None, "index")
  found = [w for w in words if w in _POLARISATIONS]
  if len(set(found)) == 1:
    return BandId(found[0].upper(), None, None, "sar")
  commons = list(dict.fromkeys(_WORDS[w] for w in words if w in _WORDS))
  word = hint or (commons[0] if len(commons) == 1 else None)
  m = _C2.search(low)
  if m:
    cands = _landsat_cands(m.group(1), int(m.group(2)))
    if cands:
      return _choose(label.upper(), cands, None, wl, word, family)
  m = _BAND_ID.search(low)
  if m:
    cands, default = _band_id_cands(m.group(1), family)
    if cands:
      return _choose(label.upper(), cands, default, wl, word, family)
  if len(commons) == 1:
    return _optical(commons[0], commons[0], wl)
  return None


def _lower_keys(tags: Mapping[str, object] | None) -> dict[str, str]:
  return {str(k).lower(): str(v) for k, v in (tags or {}).items() if v is not None}


def _is_name(text: str | None) -> bool:
  return bool(text and text.strip() and not _UNNAMED.fullmatch(text))


def identify(description: str | None, tags: Mapping[str, object] | None = None,
             sensor: str | None = None) -> BandId | None:
  """Identifies one band from its description, its band metadata and a sensor hint.

  Args:
    description: the band's description or name ("B04", "SR_B4", "red (x1e-4)", "Sigma0_VV").
    tags: the band's metadata (rasterio `src.tags(i)`, or an eo:bands entry): a `wavelength` /
      `CENTRAL_WAVELENGTH` / `WAVELENGTH` tag (with `WAVELENGTH_UNIT` nm or um, or a unit in the
      value), `BANDNAME`, `POLARISATION`, `common_name`, `center_wavelength`.
    sensor: a sensor hint ("sentinel-2", "landsat-8", "LT05", "TM", "OLI") used where a band
      number means different bands on different sensors. A wavelength beats it.

  Returns:
    The band's identity, or None when nothing identifies it (no name, or an unknown one).
  """
  t = _lower_keys(tags)
  wl = _tag_wavelength(t)
  names = [s for s in [description] + [t.get(k) for k in _NAME_KEYS] if _is_name(s)]
  if wl is None:
    wl = next((w for w in map(_text_wavelength, names) if w is not None), None)
  common = next((t[k].strip().lower() for k in _COMMON_KEYS if t.get(k)), None)
  common = _WORDS.get(common, common) if common else None
  family = _family(sensor)
  for name in names:
    band = _from_name(name, wl, common, family)
    if band is not None:
      return band
  if common in _WORDS:
    return _optical(names[0].strip() if names else common, common, wl)
  if wl is not None:
    return _from_wavelength(names[0].strip() if names else None, wl)
  return None


def infer_sensor(descriptions: Sequence[str | None]) -> str | None:
  """The Landsat family a capture's band names prove ("oli" for ST_B10 or SR_B6, "tm" for ST_B6).

  Returns None when the names prove nothing or disagree.
  """
  seen = set()
  for d in descriptions:
    if not d:
      continue
    low = d.strip().lower()
    fam = _text_family(low)
    m = _C2.search(low)
    if m:
      fams = {c.sensor for c in _landsat_cands(m.group(1), int(m.group(2)))}
      fam = fam or (fams.pop() if len(fams) == 1 else None)
    if fam in ("oli", "tm"):
      seen.add(fam)
  return seen.pop() if len(seen) == 1 else None


def _eo_tags(entry: Mapping[str, object]) -> tuple[str | None, dict[str, object]]:
  """Description and tags of one eo:bands entry (STAC gives center_wavelength in um)."""
  tags = {}
  if entry.get("name"):
    tags["name"] = entry["name"]
  if entry.get("common_name"):
    tags["common_name"] = entry["common_name"]
  if entry.get("center_wavelength") is not None:
    tags["center_wavelength"] = entry["center_wavelength"]
    tags["wavelength_unit"] = "um"
  return entry.get("description") or None, tags


def identify_capture(descriptions: Sequence[str | None],
                     tags: Sequence[Mapping[str, object] | None] | None = None,
                     file_format: str = "GTiff", sensor: str | None = None,
                     eo_bands: Sequence[Mapping[str, object]] | None = None
                     ) -> list[BandId | None]:
  """Identifies every band of a capture; unnamed bands are never guessed into roles.

  A 3-channel PNG/JPEG without names is RGB (4-channel PNG: RGBA, alpha a mask), by the format's
  definition. A single unnamed band is of unknown identity. Unnamed bands of a multi-band GeoTIFF
  stay None: the caller needs `--bands` or a band/bands column in the manifest.

  Args:
    descriptions: band descriptions in file order (rasterio `src.descriptions`; None where unset).
    tags: per-band metadata in file order (`[src.tags(i) for i in src.indexes]`).
    file_format: the GDAL driver (`src.driver`): "GTiff", "PNG", "JPEG" ...
    sensor: a sensor hint for the whole capture (see `identify`).
    eo_bands: `eo:bands` entries in file order from a manifest or STAC sidecar
      ({"name", "common_name", "center_wavelength", "description"}).

  Returns:
    One BandId (or None) per band.

  Raises:
    BandError: `eo_bands` or `tags` do not list one entry per band.
  """
  n = len(descriptions)
  tags = list(tags) if tags is not None else [None] * n
  if len(tags) != n:
    raise BandError(f"band metadata lists {len(tags)} bands, the capture has {n}")
  descs, merged = list(descriptions), [dict(t or {}) for t in tags]
  if eo_bands is not None:
    if len(eo_bands) != n:
      raise BandError(f"eo:bands lists {len(eo_bands)} bands, the capture has {n}")
    for i, entry in enumerate(eo_bands):
      desc, extra = _eo_tags(entry)
      descs[i] = descs[i] if _is_name(descs[i]) else desc
      merged[i].update(extra)
  if sensor is None:
    names = descs + [str(v) for t in merged for k, v in _lower_keys(t).items() if k in _NAME_KEYS]
    sensor = infer_sensor(names)
  ids = [identify(d, t, sensor) for d, t in zip(descs, merged)]
  if any(b is not None for b in ids):
    return ids
  fmt = (file_format or "").upper()
  if fmt in _FORMAT_RGB and n in (3, 4) and (n == 3 or fmt == "PNG"):
    return [identify(c) for c in ("red", "green", "blue")] + ([ALPHA] if n == 4 else [])
  if fmt == "PNG" and n == 2:
    return [UNKNOWN, ALPHA]
  if n == 1:
    label = descs[0].strip() if descs[0] and descs[0].strip() else UNKNOWN.name
    return [dataclasses.replace(UNKNOWN, name=label)]
  return ids

"""Band identities: what each raster band of a capture is, found from the names real files carry.

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

CODE_EMPTY = 0.0
CODE_UNKNOWN = -1.0
CODE_INDEX = -2.0
CODE_SAR = -3.0
MAX_BANDS = 13

KINDS = ("optical", "index", "sar", "unknown", "mask")
FED_KINDS = ("optical", "index", "sar", "unknown")  # masks never feed a model

S2_WAVELENGTHS = {
    "B01": 0.443, "B02": 0.490, "B03": 0.560, "B04": 0.665, "B05": 0.705, "B06": 0.740,
    "B07": 0.783, "B08": 0.842, "B8A": 0.865, "B09": 0.945, "B10": 1.375, "B11": 1.610,
    "B12": 2.190,
}
_S2_COMMON = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
    "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
    "B10": "cirrus", "B11": "swir16", "B12": "swir22",
}
# Common names and the Sentinel-2 band ids they stand for.
ALIASES = {common: code for code, common in _S2_COMMON.items()}

# Landsat band numbers -> (common name, centre in um). TM covers TM and ETM+ (Landsat 4-7).
_OLI = {
    1: ("coastal", 0.443), 2: ("blue", 0.482), 3: ("green", 0.561), 4: ("red", 0.655),
    5: ("nir08", 0.865), 6: ("swir16", 1.609), 7: ("swir22", 2.201), 8: ("pan", 0.590),
    9: ("cirrus", 1.373), 10: ("lwir11", 10.895), 11: ("lwir12", 12.005),
}
_TM = {
    1: ("blue", 0.485), 2: ("green", 0.560), 3: ("red", 0.660), 4: ("nir08", 0.835),
    5: ("swir16", 1.650), 6: ("lwir", 11.45), 7: ("swir22", 2.215), 8: ("pan", 0.710),
}
# Collection 2 prefixes: which band numbers each prefix can carry, per sensor.
_C2_NUMBERS = {
    ("sr", "oli"): {1, 2, 3, 4, 5, 6, 7}, ("sr", "tm"): {1, 2, 3, 4, 5, 7},
    ("st", "oli"): {10, 11}, ("st", "tm"): {6},
}

# Nominal centre (um) of a common name when nothing more precise is known: the Sentinel-2 value.
_NOMINAL = {common: S2_WAVELENGTHS[code] for code, common in _S2_COMMON.items()}
_NOMINAL.update({"lwir11": 10.895, "lwir12": 12.005})
# Common names with no single centre; a wavelength refines them.
_GENERIC = {"rededge": ("rededge1", "rededge2", "rededge3"), "swir": ("swir16", "swir22"),
            "lwir": ("lwir11", "lwir12"), "pan": (), "yellow": ()}
COMMON_NAMES = tuple(_NOMINAL) + tuple(_GENERIC)
# A wanted common name that is absent may be served by a close relative (Landsat's NIR is nir08).
_FALLBACK = {"nir": ("nir08",), "nir08": ("nir",)}

# Wavelength ranges (um, [lo, hi)) that name an otherwise unnamed optical band.
_RANGES = (
    ("coastal", 0.40, 0.455), ("blue", 0.455, 0.52), ("green", 0.52, 0.60), ("red", 0.60, 0.69),
    ("rededge1", 0.69, 0.72), ("rededge2", 0.72, 0.76), ("rededge3", 0.76, 0.80),
    ("nir", 0.80, 0.855), ("nir08", 0.855, 0.90), ("nir09", 0.90, 1.0), ("cirrus", 1.33, 1.42),
    ("swir16", 1.5, 1.8), ("swir22", 2.0, 2.4), ("lwir11", 10.3, 11.3), ("lwir12", 11.3, 12.6),
)

_WORDS = {c: c for c in COMMON_NAMES}
_WORDS.update({
    "aerosol": "coastal", "swir1": "swir16", "swir2": "swir22", "panchromatic": "pan",
    "thermal": "lwir", "tir": "lwir", "tirs1": "lwir11", "tirs2": "lwir12", "nir1": "nir",
    "nir2": "nir08", "re1": "rededge1", "re2": "rededge2", "re3": "rededge3",
})
_BIGRAMS = {("red", "edge"): "rededge", ("near", "infrared"): "nir", ("near", "ir"): "nir",
            ("coastal", "aerosol"): "coastal", ("shortwave", "infrared"): "swir",
            ("short", "wave"): "swir", ("thermal", "infrared"): "lwir"}
_INDICES = {"ndvi", "ndwi", "mndwi", "nbr", "nbr2", "evi", "evi2", "savi", "msavi", "osavi", "ndbi",
            "ndsi", "ndre", "gndvi", "ndmi", "ndii", "lswi", "bsi", "ndti"}
_POLARISATIONS = {"vv", "vh", "hh", "hv"}
# Quality and auxiliary layers: never fed to a model.
_MASK_WORDS = {
    "alpha", "qa", "qa60", "scl", "mask", "cloudmask", "clm", "fmask", "datamask", "nodata",
    "aot", "wvp", "tci", "trad", "urad", "drad", "atran", "emis", "emsd", "cdist", "opacity",
    "saa", "sza", "vaa", "vza", "azimuth", "zenith", "incidence", "angle",
}
_WAVELENGTH_KEYS = ("wavelength", "central_wavelength", "center_wavelength", "eo:center_wavelength",
                    "central_wavelength_um", "central_wavelength_nm", "wavelength_um",
                    "wavelength_nm")
_UNIT_KEYS = ("wavelength_unit", "wavelength_units", "central_wavelength_unit")
_NAME_KEYS = ("bandname", "band_name", "name", "eo:name", "polarisation", "polarization")
_COMMON_KEYS = ("common_name", "eo:common_name")

_UNNAMED = re.compile(r"\s*((band|layer|channel)[\s_#-]*)?\d*\s*", re.I)
_TEXT_WL = re.compile(r"(\d+(?:\.\d+)?)\s*(nm|nanomet\w*|um|µm|μm|microns?|micromet\w*)", re.I)
_C2 = re.compile(r"(?<![a-z0-9])(sr|st|toa|bt)_b(\d{1,2})(?![a-z0-9])")
_BAND_ID = re.compile(r"(?<![a-z0-9])b(0?8a|\d{1,2})(?:_(?:10|15|20|30|60)m)?(?![a-z0-9])")
_FORMAT_RGB = {"PNG", "JPEG", "JPG"}


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

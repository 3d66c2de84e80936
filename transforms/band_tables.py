"""The naming tables behind band identification: sensors' band ids, centres, common names, words."""
from __future__ import annotations

import re

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

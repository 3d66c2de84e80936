"""Table tests of band identification and resolution: every naming convention real files use."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio

from changesweep.transforms import band_tables, bands
from changesweep.transforms.bands import (
    ALPHA, CODE_EMPTY, CODE_INDEX, CODE_SAR, CODE_UNKNOWN, MAX_BANDS, S2_WAVELENGTHS, BandError,
    BandId, Derived, band_code, canonical, derive, derived_sources, identify, identify_capture,
    plan_bands, resolve_bands, resolve_derived, select_for_any_band, slot_codes)
from tests.rasters import write_raster

S2 = {code: BandId(code, common, S2_WAVELENGTHS[code], "optical")
      for code, common in band_tables._S2_COMMON.items()}


def opt(name, common, wl):
  return BandId(name, common, wl, "optical")


# (description, tags, sensor) -> (name, common, wavelength_um, kind)
IDENTIFY = [
    # Sentinel-2 spellings
    ("B04", None, None, ("B04", "red", 0.665, "optical")),
    ("B4", None, None, ("B04", "red", 0.665, "optical")),
    ("b04", None, None, ("B04", "red", 0.665, "optical")),
    ("B04_10m", None, None, ("B04", "red", 0.665, "optical")),
    ("B11_20m", None, None, ("B11", "swir16", 1.610, "optical")),
    ("B8A", None, None, ("B8A", "nir08", 0.865, "optical")),
    ("b8a", None, None, ("B8A", "nir08", 0.865, "optical")),
    ("B01", None, None, ("B01", "coastal", 0.443, "optical")),
    ("B10", None, None, ("B10", "cirrus", 1.375, "optical")),
    ("B12", None, None, ("B12", "swir22", 2.190, "optical")),
    ("T31UFQ_20200101T105441_B08_10m", None, None, ("B08", "nir", 0.842, "optical")),
    ("B4, central wavelength 665 nm", None, None, ("B04", "red", 0.665, "optical")),
    ("B8, central wavelength 842 nm", None, None, ("B08", "nir", 0.842, "optical")),
    ("B2, central wavelength 490 nm", None, None, ("B02", "blue", 0.490, "optical")),
    ("B8 NIR", None, None, ("B08", "nir", 0.842, "optical")),
    # Landsat Collection 2: numbers that agree or are unique need no hint
    ("SR_B7", None, None, ("SR_B7", "swir22", 2.190, "optical")),
    ("SR_B6", None, None, ("OLI_B6", "swir16", 1.609, "optical")),
    ("ST_B10", None, None, ("OLI_B10", "lwir11", 10.895, "optical")),
    ("ST_B6", None, None, ("TM_B6", "lwir", 11.45, "optical")),
    # ... numbers that disagree between TM/ETM+ and OLI: no hint leaves the role open
    ("SR_B4", None, None, ("SR_B4", None, None, "optical")),
    ("SR_B4", None, "landsat-8", ("OLI_B4", "red", 0.655, "optical")),
    ("SR_B4", None, "LC09", ("OLI_B4", "red", 0.655, "optical")),
    ("SR_B4", None, "Landsat 5", ("TM_B4", "nir08", 0.835, "optical")),
    ("SR_B4", None, "ETM+", ("TM_B4", "nir08", 0.835, "optical")),
    ("SR_B1", None, "landsat-7", ("TM_B1", "blue", 0.485, "optical")),
    ("SR_B1", None, "OLI_TIRS", ("OLI_B1", "coastal", 0.443, "optical")),
    ("SR_B5", None, "LT05", ("TM_B5", "swir16", 1.650, "optical")),
    ("SR_B5", None, "LC08", ("OLI_B5", "nir08", 0.865, "optical")),
    ("LC08_L2SP_044034_20200101_20200110_02_T1_SR_B4", None, None,
     ("OLI_B4", "red", 0.655, "optical")),
    ("LE07_L2SP_044034_20000101_20200110_02_T1_SR_B3", None, None,
     ("TM_B3", "red", 0.660, "optical")),
    # ... a wavelength decides, and beats a sensor hint that contradicts it
    ("SR_B4", {"wavelength": "0.655"}, None, ("OLI_B4", "red", 0.655, "optical")),
    ("SR_B4", {"WAVELENGTH": "835", "WAVELENGTH_UNIT": "nm"}, None,
     ("TM_B4", "nir08", 0.835, "optical")),
    ("SR_B4", {"CENTRAL_WAVELENGTH": "0.83 um"}, "landsat-8", ("TM_B4", "nir08", 0.835, "optical")),
    ("B4", {"wavelength": "0.835"}, None, ("TM_B4", "nir08", 0.835, "optical")),
    ("B4", None, "landsat-5", ("TM_B4", "nir08", 0.835, "optical")),
    ("B10", None, "landsat-8", ("OLI_B10", "lwir11", 10.895, "optical")),
    ("B05", None, "landsat-8", ("OLI_B5", "nir08", 0.865, "optical")),  # HLS L30 pads OLI ids
    ("B05", None, "sentinel-2", ("B05", "rededge1", 0.705, "optical")),
    ("B8A", None, "landsat-8", ("B8A", "nir08", 0.865, "optical")),
    ("B4 nir", None, None, ("TM_B4", "nir08", 0.835, "optical")),
    ("SR_B4", {"common_name": "red"}, None, ("OLI_B4", "red", 0.655, "optical")),
    # a name its wavelength contradicts: the wavelength wins
    ("B04", {"wavelength": "842", "wavelength_units": "Nanometers"}, None,
     ("B04", "nir", 0.842, "optical")),
    # STAC/eo common names and other words for them
    ("red", None, None, ("red", "red", 0.665, "optical")),
    ("Blue", None, None, ("blue", "blue", 0.490, "optical")),
    ("coastal", None, None, ("coastal", "coastal", 0.443, "optical")),
    ("rededge1", None, None, ("rededge1", "rededge1", 0.705, "optical")),
    ("rededge3", None, None, ("rededge3", "rededge3", 0.783, "optical")),
    ("nir", None, None, ("nir", "nir", 0.842, "optical")),
    ("NIR08", None, None, ("nir08", "nir08", 0.865, "optical")),
    ("nir09", None, None, ("nir09", "nir09", 0.945, "optical")),
    ("cirrus", None, None, ("cirrus", "cirrus", 1.375, "optical")),
    ("swir16", None, None, ("swir16", "swir16", 1.610, "optical")),
    ("swir22", None, None, ("swir22", "swir22", 2.190, "optical")),
    ("SWIR1", None, None, ("swir16", "swir16", 1.610, "optical")),
    ("swir2", None, None, ("swir22", "swir22", 2.190, "optical")),
    ("pan", None, None, ("pan", "pan", None, "optical")),
    ("lwir11", None, None, ("lwir11", "lwir11", 10.895, "optical")),
    ("lwir12", None, None, ("lwir12", "lwir12", 12.005, "optical")),
    ("Near Infrared", None, None, ("nir", "nir", 0.842, "optical")),
    ("red-edge 2", None, None, ("rededge2", "rededge2", 0.740, "optical")),
    ("Coastal aerosol", None, None, ("coastal", "coastal", 0.443, "optical")),
    # descriptions that contain such a word (CBERS style)
    ("B15 red (x1e-4 reflectance)", None, None, ("red", "red", 0.665, "optical")),
    ("B16 nir (x1e-4 reflectance)", None, None, ("nir", "nir", 0.842, "optical")),
    ("surface reflectance, green", None, None, ("green", "green", 0.560, "optical")),
    # SAR polarisations
    ("VV", None, None, ("VV", None, None, "sar")),
    ("vh", None, None, ("VH", None, None, "sar")),
    ("HH", None, None, ("HH", None, None, "sar")),
    ("HV", None, None, ("HV", None, None, "sar")),
    ("Sigma0_VV", None, None, ("VV", None, None, "sar")),
    ("Gamma0_VH_db", None, None, ("VH", None, None, "sar")),
    (None, {"POLARISATION": "VH"}, None, ("VH", None, None, "sar")),
    # indices
    ("NDVI", None, None, ("NDVI", None, None, "index")),
    ("ndwi", None, None, ("NDWI", None, None, "index")),
    ("NBR", None, None, ("NBR", None, None, "index")),
    ("EVI", None, None, ("EVI", None, None, "index")),
    ("Landsat NDVI (scaled)", None, None, ("NDVI", None, None, "index")),
    # masks and quality layers
    ("QA_PIXEL", None, None, ("QA_PIXEL", None, None, "mask")),
    ("SCL", None, None, ("SCL", None, None, "mask")),
    ("QA60", None, None, ("QA60", None, None, "mask")),
    ("alpha", None, None, ("ALPHA", None, None, "mask")),
    ("SR_QA_AEROSOL", None, None, ("SR_QA_AEROSOL", None, None, "mask")),
    # GDAL band metadata without a name: the wavelength in nm or um
    (None, {"wavelength": "665", "wavelength_units": "nm"}, None, ("red", "red", 0.665, "optical")),
    (None, {"WAVELENGTH": "0.56", "WAVELENGTH_UNIT": "um"}, None,
     ("green", "green", 0.56, "optical")),
    (None, {"CENTRAL_WAVELENGTH_UM": "1.61"}, None, ("swir16", "swir16", 1.61, "optical")),
    (None, {"CENTRAL_WAVELENGTH": "2200 nm"}, None, ("swir22", "swir22", 2.2, "optical")),
    (None, {"wavelength": "842"}, None, ("nir", "nir", 0.842, "optical")),
    (None, {"wavelength": "0.530", "wavelength_units": "micrometers"}, None,
     ("green", "green", 0.53, "optical")),
    ("band_7", {"wavelength": "1.1"}, None, ("1100nm", None, 1.1, "optical")),
    (None, {"BANDNAME": "B4", "WAVELENGTH": "665", "WAVELENGTH_UNIT": "nm"}, None,
     ("B04", "red", 0.665, "optical")),
    (None, {"common_name": "nir08", "center_wavelength": "0.865"}, None,
     ("nir08", "nir08", 0.865, "optical")),
]


@pytest.mark.parametrize("description, tags, sensor, expected", IDENTIFY)
def test_identify(description, tags, sensor, expected):
  b = identify(description, tags, sensor)
  assert b is not None
  name, common, wl, kind = expected
  assert (b.name, b.common, b.kind) == (name, common, kind)
  assert b.wavelength_um == pytest.approx(wl) if wl is not None else b.wavelength_um is None


@pytest.mark.parametrize("description, tags", [
    (None, None), ("", None), ("   ", None), ("Band 1", None), ("band_3", None), ("Layer 2", None),
    ("7", None), ("foo", None), ("B13", None), ("infrared", None), ("nir red ratio", None),
    (None, {"STATISTICS_MEAN": "12.5"}), (None, {"wavelength": "banana"}),
])
def test_identify_returns_none_when_nothing_identifies_the_band(description, tags):
  assert identify(description, tags) is None


def test_band_codes_follow_the_contract():
  assert (CODE_EMPTY, CODE_UNKNOWN, CODE_INDEX, CODE_SAR, MAX_BANDS) == (0.0, -1.0, -2.0, -3.0, 13)
  assert band_code(None) == CODE_EMPTY
  assert band_code(identify("B04")) == 0.665
  assert band_code(identify("SR_B5", sensor="landsat-8")) == 0.865
  assert band_code(identify("NDVI")) == CODE_INDEX
  assert band_code(identify("VV")) == CODE_SAR
  assert band_code(identify_capture([None])[0]) == CODE_UNKNOWN
  assert band_code(identify("SR_B4")) == CODE_UNKNOWN  # optical, but which band is unknown
  with pytest.raises(ValueError, match="mask"):
    band_code(identify("QA_PIXEL"))
  ids = identify_capture(["B02", "B04", "NDVI"])
  assert slot_codes(ids, [2, 0], 4) == [CODE_INDEX, 0.490, 0.0, 0.0]


def test_s2_wavelengths_are_the_contract_values():
  assert S2_WAVELENGTHS == {
      "B01": 0.443, "B02": 0.490, "B03": 0.560, "B04": 0.665, "B05": 0.705, "B06": 0.740,
      "B07": 0.783, "B08": 0.842, "B8A": 0.865, "B09": 0.945, "B10": 1.375, "B11": 1.610,
      "B12": 2.190}
  for code, b in S2.items():
    assert identify(code) == b
    assert identify(f"B{code[1:].lstrip('0')}, central wavelength "
                    f"{round(b.wavelength_um * 1000)} nm") == b


def test_bandid_rejects_an_unknown_kind():
  with pytest.raises(ValueError, match="kind"):
    BandId("x", None, None, "thermal")


# ------------------------------------------------------------------------------ whole captures

RGB = [identify(c) for c in ("red", "green", "blue")]
UNKNOWN = BandId("unknown", None, None, "unknown")

CAPTURES = [
    # (descriptions, file_format, expected)
    ((None, None, None), "PNG", RGB),
    ((None, None, None), "JPEG", RGB),
    ((None, None, None, None), "PNG", RGB + [ALPHA]),
    ((None, None), "PNG", [UNKNOWN, ALPHA]),
    ((None,), "GTiff", [UNKNOWN]),
    ((None,), "PNG", [UNKNOWN]),
    (("my_index",), "GTiff", [BandId("my_index", None, None, "unknown")]),
    ((None, None, None), "GTiff", [None, None, None]),  # an unnamed BGR GeoTIFF stays unnamed
    ((None, None, None, None), "JPEG", [None] * 4),
    (("foo", "bar"), "GTiff", [None, None]),
    (("B02", None, "B04"), "GTiff", [S2["B02"], None, S2["B04"]]),
    (("B03", "B02", "B01"), "PNG", [S2["B03"], S2["B02"], S2["B01"]]),  # names beat the format
    (("NDVI",), "GTiff", [identify("NDVI")]),
]


@pytest.mark.parametrize("descriptions, file_format, expected", CAPTURES)
def test_identify_capture(descriptions, file_format, expected):
  assert identify_capture(descriptions, file_format=file_format) == expected


@pytest.mark.parametrize("descriptions, expected", [
    # a band only OLI has proves the sensor for the whole capture
    (("SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7", "ST_B10"),
     ["OLI_B2", "OLI_B3", "OLI_B4", "OLI_B5", "OLI_B6", "OLI_B7", "OLI_B10"]),
    # ... and one only TM/ETM+ has
    (("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7", "ST_B6"),
     ["TM_B1", "TM_B2", "TM_B3", "TM_B4", "TM_B5", "TM_B7", "TM_B6"]),
    # nothing proves it: the disagreeing numbers stay open
    (("SR_B3", "SR_B4", "SR_B7"), ["SR_B3", "SR_B4", "SR_B7"]),
])
def test_identify_capture_infers_the_landsat_sensor_from_its_bands(descriptions, expected):
  assert [b.name for b in identify_capture(descriptions)] == expected


def test_identify_capture_sensor_hint_and_per_band_tags():
  ids = identify_capture(["B2", "B3", "B4", "B5"], sensor="landsat-8")
  assert [b.common for b in ids] == ["blue", "green", "red", "nir08"]
  ids = identify_capture([None, None], tags=[{"wavelength": "665", "wavelength_units": "nm"},
                                             {"WAVELENGTH": "0.842", "WAVELENGTH_UNIT": "um"}])
  assert [b.common for b in ids] == ["red", "nir"]
  with pytest.raises(BandError, match="2 bands"):
    identify_capture([None, None, None], tags=[{}, {}])


def test_identify_capture_eo_bands_from_a_manifest_or_stac_sidecar():
  eo = [{"name": "SR_B4", "common_name": "red", "center_wavelength": 0.65},
        {"name": "SR_B5", "common_name": "nir08", "center_wavelength": 0.86},
        {"name": "QA_PIXEL", "description": "Pixel quality"}]
  ids = identify_capture([None, None, None], eo_bands=eo)
  assert [b.name for b in ids] == ["OLI_B4", "OLI_B5", "QA_PIXEL"]
  assert ids[2].kind == "mask"
  ids = identify_capture([None], eo_bands=[{"common_name": "swir16", "center_wavelength": 1.61}])
  assert ids == [BandId("swir16", "swir16", 1.61, "optical")]
  # the file's own description wins over the sidecar's name where both are given
  assert identify_capture(["B02"], eo_bands=[{"name": "whatever"}]) == [S2["B02"]]
  with pytest.raises(BandError, match="eo:bands lists 1 bands, the capture has 2"):
    identify_capture([None, None], eo_bands=[{"name": "B04"}])


def _gdal_s2_tif(path, extra_tags=False):
  """A tiny GeoTIFF described as GDAL's SENTINEL2 driver (and make_anyband.py's gdal_s2) does."""
  descs = ("B2, central wavelength 490 nm", "B3, central wavelength 560 nm",
           "B4, central wavelength 665 nm", "B8, central wavelength 842 nm")
  write_raster(str(path), np.ones((4, 4, 4), np.uint16), descriptions=descs)
  if extra_tags:
    with rasterio.open(str(path), "r+") as dst:
      for i, wl in enumerate((490, 560, 665, 842), 1):
        dst.update_tags(i, WAVELENGTH=str(wl), WAVELENGTH_UNIT="nm", BANDNAME=f"B{i}")
  return str(path)


@pytest.mark.parametrize("extra_tags", [False, True])
def test_a_real_file_described_as_gdal_sentinel2_resolves(tmp_path, extra_tags):
  path = _gdal_s2_tif(tmp_path / "gdal_s2.tif", extra_tags)
  with rasterio.open(path) as src:
    ids = identify_capture(src.descriptions, [src.tags(i) for i in src.indexes], src.driver)
  assert ids == [S2["B02"], S2["B03"], S2["B04"], S2["B08"]]
  assert resolve_bands(["red", "green", "blue"], ids) == [2, 1, 0]
  assert resolve_bands(["B04", "B03", "B02", "B08"], ids) == [2, 1, 0, 3]
  assert select_for_any_band(ids) == [0, 1, 2, 3]
  assert plan_bands(["ndvi"], ids) == [Derived("ndvi", 3, 2)]


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_real_files_png_rgb_and_unnamed_geotiff(tmp_path):
  png = write_raster(str(tmp_path / "rgb.png"), np.ones((3, 4, 4), np.uint8), driver="PNG",
                     crs=None, transform=None)
  tif = write_raster(str(tmp_path / "bgr.tif"), np.ones((3, 4, 4), np.uint8))
  with rasterio.open(png) as src:
    assert resolve_bands(["red", "green", "blue"], src.descriptions, src.driver) == [0, 1, 2]
  with rasterio.open(tif) as src:  # GDAL calls it RGB (photometric), but nothing names the bands
    with pytest.raises(BandError, match="--bands"):
      resolve_bands(["red", "green", "blue"], src.descriptions, src.driver)


# ---------------------------------------------------------------------------------- resolve_bands

def test_aliases_and_short_ids():
  assert canonical("red") == canonical("B4") == canonical("b04") == canonical("B04_10m") == "B04"
  assert canonical("nir08") == canonical("B8A") == "B8A"
  assert canonical("QA") == "QA" and canonical("foo") == "FOO"
  assert bands.ALIASES["red"] == "B04" and bands.ALIASES["nir"] == "B08"


RESOLVE = [
    # (wanted, capture bands, positions)
    (["red", "green", "blue"], ("B02", "B03", "B04", "B08"), [2, 1, 0]),
    (["B04", "B03", "B02"], ("blue", "green", "red"), [2, 1, 0]),
    (["red", "nir"], ("B4, central wavelength 665 nm", "B8, central wavelength 842 nm"), [0, 1]),
    (["red", "green", "blue"], ("B15 red (x1e-4 reflectance)", "B14 green (x1e-4 reflectance)",
                                "B13 blue (x1e-4 reflectance)", "B16 nir (x1e-4 reflectance)"),
     [0, 1, 2]),
    (["nir"], ("B04_10m", "B08_10m", "B8A_20m"), [1]),  # nir is B08, not B8A
    (["nir08"], ("B04_10m", "B08_10m", "B8A_20m"), [2]),
    (["nir"], ("SR_B2", "SR_B3", "SR_B4", "SR_B5", "ST_B10"), [3]),  # Landsat's NIR is nir08
    (["red"], ("SR_B2", "SR_B3", "SR_B4", "SR_B5", "ST_B10"), [2]),
    (["red"], ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "ST_B6"), [2]),  # TM: red is band 3
    (["VV", "VH"], ("Sigma0_VH", "Sigma0_VV"), [1, 0]),
    (["ndvi"], ("NDVI",), [0]),
    (["QA"], ("B02", "B03", "B04", "B08", "QA"), [4]),
    (["cloudflags"], ("B02", "cloudflags"), [1]),  # unknown names still match literally
    (["3", "1"], (None, None, None), [2, 0]),
    (["3", "red"], (None, "B04", None), [2, 1]),
]


@pytest.mark.parametrize("wanted, names, expected", RESOLVE)
def test_resolve_bands(wanted, names, expected):
  assert resolve_bands(wanted, names) == expected
  ids = identify_capture(names)
  if all(ids):  # the same answer from identities as from raw names
    assert resolve_bands(wanted, ids) == expected


RESOLVE_ERRORS = [
    # (wanted, capture bands, file format, message fragment)
    (["red", "green", "blue"], (None, None, None), None, "3 unnamed bands"),
    (["red", "green", "blue"], (None, None, None, None), None, "--bands"),
    (["red", "green", "blue"], (None, None, None), "GTiff", "band/bands column"),
    (["red"], (None,), None, "1 unnamed bands"),
    (["red"], identify_capture([None]), None, "1 unnamed bands"),
    (["nir"], ("B02", "B03", "B04"), None, "'nir' is absent"),
    (["nir"], ("B02", "B03", None), None, "never guessed"),
    (["red"], ("B04", "red"), None, "'red' is ambiguous"),
    (["red"], ("B04_10m", "B4, central wavelength 665 nm"), None, "ambiguous"),
    (["VV"], ("VV", "Sigma0_VV"), None, "ambiguous"),
    (["red"], ("SR_B3", "SR_B4"), None, "'red' is absent"),  # Landsat sensor unknown
    (["5"], (None, None), None, "out of range"),
    (["0"], (None, None), None, "out of range"),
]


@pytest.mark.parametrize("wanted, names, file_format, match", RESOLVE_ERRORS)
def test_resolve_bands_errors(wanted, names, file_format, match):
  with pytest.raises(BandError, match=match):
    resolve_bands(wanted, names, file_format)


def test_the_unnamed_message_is_one_actionable_line():
  with pytest.raises(BandError) as e:
    resolve_bands(["red", "green", "blue"], (None, None, None))
  msg = str(e.value)
  assert "\n" not in msg
  assert "never guessed" in msg and "--bands" in msg and "band/bands column" in msg
  assert "['red', 'green', 'blue']" in msg


def test_unnamed_bands_are_never_assigned_by_position():
  # The review finding: an unnamed BGR file must not silently feed the RGB model.
  for n in (1, 3, 4):
    with pytest.raises(BandError, match="unnamed"):
      resolve_bands(["red", "green", "blue"][:n] + ["nir"] * (n == 4), (None,) * n)
  assert resolve_bands(["red", "green", "blue"], (None, None, None), "PNG") == [0, 1, 2]


# -------------------------------------------------------------------------------- derived indices

def test_derived_sources():
  assert bands.DERIVED == {"ndvi": ("nir", "red"), "ndwi": ("green", "nir"),
                           "nbr": ("nir", "swir22")}
  assert derived_sources("NDVI") == ("nir", "red")
  assert derived_sources("ndwi") == ("green", "nir")  # McFeeters
  assert derived_sources("red") is None


@pytest.mark.parametrize("name, arrays, expected", [
    ("ndvi", {"nir": [0.5, 0.3, 0.0], "red": [0.1, 0.3, 0.2]}, [0.4 / 0.6, 0.0, -1.0]),
    ("ndwi", {"green": [0.3, 0.1], "nir": [0.1, 0.3]}, [0.5, -0.5]),
    ("nbr", {"nir": [0.6, 0.2], "swir22": [0.2, 0.6]}, [0.5, -0.5]),
    ("ndvi", {"nir08": [3.0], "red": [1.0]}, [0.5]),  # Landsat NIR
    # NaN where a + b == 0 or an input is not finite, never inf and never a warning
    ("ndvi", {"nir": [0.0, 1.0, np.nan, np.inf, 2.0], "red": [0.0, -1.0, 1.0, 1.0, np.nan]},
     [np.nan] * 5),
])
def test_derive(name, arrays, expected):
  with np.errstate(all="raise"):
    out = derive(name, {k: np.asarray(v, np.float32) for k, v in arrays.items()})
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, np.asarray(expected, np.float32), rtol=1e-6)


def test_derive_errors():
  with pytest.raises(BandError, match="not a derived band"):
    derive("evi", {"nir": np.ones(2), "red": np.ones(2)})
  with pytest.raises(BandError, match="'red' is needed"):
    derive("ndvi", {"nir": np.ones(2)})


def test_derive_keeps_the_shape_of_an_image():
  rng = np.random.default_rng(0)
  nir, red = rng.uniform(0, 1, (2, 8, 8)).astype(np.float32)
  out = derive("ndvi", {"nir": nir, "red": red})
  assert out.shape == (8, 8)
  np.testing.assert_allclose(out, (nir - red) / (nir + red), rtol=1e-5)


@pytest.mark.parametrize("wanted, names, expected", [
    (["ndvi"], ("B02", "B03", "B04", "B08"), [Derived("ndvi", 3, 2)]),
    (["ndwi"], ("B02", "B03", "B04", "B08"), [Derived("ndwi", 1, 3)]),
    (["nbr"], ("SR_B4", "SR_B5", "SR_B6", "SR_B7"), [Derived("nbr", 1, 3)]),
    (["ndvi"], ("NDVI", "B04", "B08"), [0]),  # a stored index beats a derived one
    (["red", "ndvi"], ("B04", "B08"), [0, Derived("ndvi", 1, 0)]),
])
def test_plan_bands_derives_absent_indices(wanted, names, expected):
  assert plan_bands(wanted, names) == expected


def test_resolve_derived_says_what_is_missing():
  with pytest.raises(BandError, match="nbr needs bands nir and swir22: band 'swir22' is absent"):
    resolve_derived("nbr", ("B04", "B08"))
  with pytest.raises(BandError, match="needs bands nir and red"):
    plan_bands(["ndvi"], ("B02", "B03"))


# ------------------------------------------------------------------------- any-band model feeding

SELECT = [
    # (descriptions, file format, positions)
    (("B02", "B03", "B04", "B08"), "GTiff", [0, 1, 2, 3]),
    (tuple(S2_WAVELENGTHS), "GTiff", list(range(13))),
    (("B02", "B03", "B04", "B08", "QA"), "GTiff", [0, 1, 2, 3]),  # masks never feed
    (("SR_B2", "SR_B3", "SR_B4", "SR_B5", "QA_PIXEL"), "GTiff", [0, 1, 2, 3]),
    ((None,), "GTiff", [0]),  # a single unnamed band: unknown identity, allowed
    (("NDVI",), "GTiff", [0]),
    (("VV", "VH"), "GTiff", [0, 1]),
    (("B04", None, "B08"), "GTiff", [0, 2]),  # unnamed bands of a named capture are not read
    ((None, None, None, None), "PNG", [0, 1, 2]),  # RGBA: alpha is a mask
]


@pytest.mark.parametrize("descriptions, file_format, expected", SELECT)
def test_select_for_any_band(descriptions, file_format, expected):
  assert select_for_any_band(identify_capture(descriptions, file_format=file_format)) == expected


@pytest.mark.parametrize("identities, match", [
    ([None, None, None], "3 unnamed bands.*--bands.*band/bands column"),
    ([UNKNOWN, BandId("other", None, None, "unknown")], "2 bands of unknown identity"),
    (identify_capture(["QA_PIXEL", "SCL"]), "no band a model can read"),
    (identify_capture(["B04", "red"]), "bands 1 and 2 are both 'red'"),
    (identify_capture(["Sigma0_VV", "VV"]), "both 'VV'"),
    ([], "no bands"),
    ([BandId(f"w{i}", None, 0.4 + 0.01 * i, "optical") for i in range(14)], "at most 13"),
])
def test_select_for_any_band_errors(identities, match):
  with pytest.raises(BandError, match=match):
    select_for_any_band(identities)


def test_select_for_any_band_respects_max_bands():
  ids = identify_capture(["B02", "B03", "B04", "B08"])
  assert select_for_any_band(ids, max_bands=4) == [0, 1, 2, 3]
  with pytest.raises(BandError, match="at most 3"):
    select_for_any_band(ids, max_bands=3)

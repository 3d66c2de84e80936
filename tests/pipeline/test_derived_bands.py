"""Indices asked for as bands (NDVI, NDWI, NBR) and band files of different resolutions."""
import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.windows import Window

from changesweep.pipeline import band_slots, usability
from changesweep.pipeline.chips import read_pair_window
from changesweep.pipeline.elements import DeadLetter, Pair, SceneRef
from changesweep.pipeline.listing import CaptureFile
from changesweep.pipeline.pairing import assemble_captures, pair_series
from changesweep.pipeline.rasters import WindowReader, read_meta
from changesweep.transforms import tiling
from changesweep.transforms.bands import CODE_INDEX, BandError, Derived
from tests.rasters import GRID, write_raster

S2 = ("B02", "B03", "B04", "B08")
COARSE = GRID @ Affine.scale(2)


def capture_of(uris, names, h=16, w=16, nodata=None, **kw) -> SceneRef:
  return SceneRef("loc", "2020-01-01T00:00:00", tuple(uris), tuple(names), h, w, "uint16",
                  "", tuple(GRID)[:6], nodata, 1, **kw)


@pytest.mark.parametrize("wanted,names,positions,codes", [
    (("ndvi",), S2, [Derived("ndvi", 3, 2)], [CODE_INDEX]),
    (("red", "nir", "ndvi"), S2, [2, 3, Derived("ndvi", 3, 2)], [0.665, 0.842, CODE_INDEX]),
    (("NDWI",), S2, [Derived("ndwi", 1, 3)], [CODE_INDEX]),
    (("nbr",), ("SR_B4", "SR_B5", "SR_B6", "SR_B7"), [Derived("nbr", 1, 3)], [CODE_INDEX]),
    (("ndvi",), ("B04", "B08", "NDVI"), [2], [CODE_INDEX]),  # a band the file has is read
])
def test_an_index_asked_for_is_derived_from_its_sources(wanted, names, positions, codes):
  scene = capture_of([f"/a/{n}.tif" for n in names], names)
  got, ids = band_slots.select_bands(scene, wanted, 13)
  assert got == positions
  assert [round(band_slots.band_ids.band_code(i), 3) for i in ids] == codes
  assert band_slots.plan_fixed(scene, wanted) == positions


@pytest.mark.parametrize("wanted,names,reason", [
    (("ndvi",), ("B02", "B03", "B04"),
     "ndvi needs bands nir and red: band 'nir' is absent in a capture with bands "
     "['B02', 'B03', 'B04']"),
    (("nbr",), S2, "nbr needs bands nir and swir22: band 'swir22' is absent"),
    (("ndvi",), (None, None, None, None), "unnamed bands are never guessed"),
])
def test_a_capture_without_the_source_bands_is_one_clear_dead_letter(wanted, names, reason):
  uri = "/a/loc/2020-01-01.tif"
  files = [CaptureFile("loc", f"2020-0{m}-01T00:00:00", None, uri.replace("01-01", f"0{m}-01"), 1,
                       _meta(names)) for m in (1, 2)]
  for max_bands in (0, 13):
    out = list(pair_series("loc", files, wanted, max_bands=max_bands))
    assert all(isinstance(o, DeadLetter) and o.stage == "pairing" for o in out), out
    assert len(out) == 2 and reason in out[0].reason
  with pytest.raises(BandError, match="absent|never guessed"):
    band_slots.plan_fixed(capture_of(["/a/x.tif"], names), wanted)


def _meta(names):
  from changesweep.pipeline.rasters import FileMeta

  return FileMeta(16, 16, len(names), "uint16", "", tuple(GRID)[:6], None, tuple(names))


@pytest.fixture
def ndvi_capture(tmp_path):
  """A 4-band capture with nodata, a pixel where red + nir is 0 and a QA band."""
  rng = np.random.default_rng(3)
  data = rng.integers(1, 4000, (5, 16, 16)).astype(np.float32)
  data[4] = 0
  data[:, 0, 0] = -9999          # nodata in every band
  data[2, 1, 1], data[3, 1, 1] = 5, -5  # red + nir == 0
  data[4, 2, :] = 1              # flagged by the QA band
  path = write_raster(str(tmp_path / "c.tif"), data, nodata=-9999,
                      descriptions=S2 + ("QA",))
  return capture_of([path], S2 + ("QA",), nodata=-9999, mask_band=4), data


def test_ndvi_chips_match_numpy_and_are_invalid_where_undefined(ndvi_capture):
  scene, data = ndvi_capture
  red, nir = data[2].astype(np.float64), data[3].astype(np.float64)
  with np.errstate(all="ignore"):
    expected = (nir - red) / (nir + red)
  ok = np.ones((16, 16), bool)
  ok[0, 0] = ok[1, 1] = False
  ok[2, :] = False
  reader = WindowReader()
  pixels, valid = reader.read(scene.uris, (2, Derived("ndvi", 3, 2)), Window(0, 0, 16, 16),
                              scene.nodata, mask_band=4)
  reader.close()
  np.testing.assert_array_equal(valid, ok)
  np.testing.assert_allclose(pixels[..., 1][ok], expected[ok], rtol=1e-6)
  np.testing.assert_array_equal(pixels[..., 0][ok], red[ok])
  # the usability pass sees the index too: its statistics over the same valid pixels
  mean, std = usability.derived_stats(scene, Derived("ndvi", 3, 2))
  np.testing.assert_allclose((mean, std), (expected[ok].mean(), expected[ok].std()), rtol=1e-6)


def test_pairing_carries_the_index_statistics_to_the_records_and_slots(ndvi_capture, tmp_path):
  scene, data = ndvi_capture
  files = []
  for m in (1, 2):
    meta = read_meta(scene.uris[0])
    stats = usability.file_stats(scene.uris[0], meta.nodata, 4)
    files.append(CaptureFile("loc", f"2020-0{m}-01T00:00:00", None, scene.uris[0] if m == 1 else
                             write_raster(str(tmp_path / "d.tif"), data, nodata=-9999,
                                          descriptions=S2 + ("QA",)), 1, meta, stats=stats,
                             mask_band=4))
  out = list(pair_series("loc", files, ("ndvi",), max_bands=13))
  pair = next(o for o in out if isinstance(o, Pair))
  records = [o for o in out if type(o).__name__ == "CaptureRecord"]
  expected = usability.derived_stats(pair.after, Derived("ndvi", 3, 2))
  assert pair.after_bands == (Derived("ndvi", 3, 2),) and pair.band_codes == (CODE_INDEX,)
  assert band_slots.band_stats(pair.after, pair.after_bands[0]) == expected
  assert [r.band_means for r in records] == [(expected[0],)] * 2
  from changesweep.pipeline.anyband import capture_band_stats, slot_stats

  assert [k[1] for k, _ in capture_band_stats(pair)] == ["NDVI", "NDVI"]
  center, scale = slot_stats(pair, pair.after, pair.after_bands, None, 13)
  np.testing.assert_allclose((center[0], scale[0]), expected, rtol=1e-6)


# ------------------------------------------------------------------- bands at two resolutions

def band_files(root, date, fine_value=None, coarse=None, coarse_transform=COARSE):
  rng = np.random.default_rng(int(date[-2:]))
  out = []
  for name in ("B02", "B03", "B04"):
    data = fine_value if fine_value is not None else rng.integers(500, 3000, (1, 32, 32))
    out.append(write_raster(f"{root}/{date}_{name}.tif", data.astype(np.uint16)))
  nir = coarse if coarse is not None else rng.integers(500, 3000, (1, 16, 16)).astype(np.uint16)
  out.append(write_raster(f"{root}/{date}_B08.tif", nir, transform=coarse_transform))
  return [CaptureFile("loc", f"{date}T00:00:00", p.rsplit("_", 1)[1][:3], p, 1, read_meta(p))
          for p in out]


def test_a_capture_of_10_and_20_m_files_sits_on_the_10_m_grid(tmp_path):
  scenes, dead = assemble_captures("loc", band_files(str(tmp_path), "2020-01-01"))
  assert dead == [] and len(scenes) == 1
  assert (scenes[0].height, scenes[0].width) == (32, 32)
  assert scenes[0].transform == tuple(GRID)[:6]


def test_band_files_off_each_other_are_a_dead_letter_with_the_reason(tmp_path):
  off = COARSE @ Affine.translation(1, 0)  # one 20 m pixel east
  files = band_files(str(tmp_path), "2020-01-01", coarse_transform=off)
  scenes, dead = assemble_captures("loc", files)
  assert scenes == [] and len(dead) == 1
  assert dead[0].uri.count(";") == 3 and "cover different extents" in dead[0].reason


def test_chips_read_the_20_m_band_bilinear_on_the_10_m_grid(tmp_path):
  files = band_files(str(tmp_path), "2020-01-01") + band_files(str(tmp_path), "2020-01-02")
  pair = next(o for o in pair_series("loc", files, ("B02", "B08", "ndvi"))
              if isinstance(o, Pair))
  chip = tiling.Chip(0, 8, 4, 16, 20, 8, 4, 24, 24)
  reader = WindowReader()
  before, after, valid = read_pair_window(reader, pair, chip)
  reader.close()
  assert before.shape == (16, 20, 3) and valid.all()
  with rasterio.open(pair.after.uris[3]) as src:
    nir = src.read(1, out_shape=(32, 32), resampling=Resampling.bilinear).astype(np.float64)
  with rasterio.open(pair.after.uris[2]) as src:
    red = src.read(1).astype(np.float64)
  window = np.s_[8:24, 4:24]
  np.testing.assert_allclose(after[..., 1], nir[window], atol=1.0)  # GDAL warper vs overview
  np.testing.assert_allclose(after[..., 2], ((nir - red) / (nir + red))[window], atol=1e-3)


# ------------------------------------------------------------------- a manifest's bands column

@pytest.mark.parametrize("cell,names", [
    ("B04;B08", ("B04", "B08")), ("red, nir", ("red", "nir")), (["B04", "B08"], ("B04", "B08")),
    ("", None), (None, None)])
def test_a_manifest_bands_column_names_the_files_bands(cell, names):
  import json

  from changesweep.pipeline.listing import parse_manifest

  row = {"location": "a", "captured_at": "2020-01-01", "uri": "x.tif", "bands": cell}
  (entry,) = parse_manifest("/m/manifest.jsonl", json.dumps(row))
  assert entry.band_names == names and entry.band is None


def test_a_coarser_sidecar_mask_of_one_extent_masks_the_band(tmp_path):
  band = write_raster(str(tmp_path / "b.tif"), np.full((1, 32, 32), 100, np.uint16))
  flags = np.zeros((1, 16, 16), np.uint8)
  flags[0, :8] = 1  # the northern half, at 20 m
  mask = write_raster(str(tmp_path / "m.tif"), flags, transform=COARSE)
  assert usability.file_stats(band, None, mask_uri=mask).usable_fraction == 0.5
  off = write_raster(str(tmp_path / "off.tif"), flags, transform=COARSE @ Affine.translation(2, 0))
  with pytest.raises(usability.rasters.RasterError, match="do not cover one extent"):
    usability.file_stats(band, None, mask_uri=off)


def test_window_bytes_count_both_sources_of_an_index():
  from changesweep.pipeline.chips import window_bytes

  scene = capture_of(["/a/x.tif"], S2)
  pair = Pair("p", scene, scene, (Derived("ndvi", 3, 2),), (0,))
  chip = tiling.Chip(0, 0, 0, 4, 4, 0, 0, 4, 4)
  assert window_bytes(pair, chip) == 4 * 4 * 3 * 2

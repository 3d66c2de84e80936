"""Manifest parser, raster loading and augmentation."""
import io
import os

import numpy as np
import pytest

from changesweep.model import data
from tests.rasters import write_raster


def _csv(text):
  return io.StringIO(text.strip() + "\n")


def test_manifest_defaults_and_relative_paths():
  rows = data.parse_manifest(_csv("""
pair_id,before,after,mask
a,x/b.png,x/a.png,x/m.png
"""), "/data_root")
  (r,) = rows
  assert r.before == ("/data_root/x/b.png",) and r.after == ("/data_root/x/a.png",)
  assert r.mask == "/data_root/x/m.png"
  assert (r.change_value, r.nochange_value) == (255, 0)


def test_manifest_band_lists_values_and_absolute_paths():
  rows = data.parse_manifest(_csv("""
pair_id,before,after,mask,change_value,nochange_value
a,b2.tif;b3.tif,/abs/a2.tif;a3.tif,m.tif,2,1
b,b.tif,a.tif,m.tif,,
"""), "/r")
  assert rows[0].before == ("/r/b2.tif", "/r/b3.tif")
  assert rows[0].after == ("/abs/a2.tif", "/r/a3.tif")
  assert (rows[0].change_value, rows[0].nochange_value) == (2, 1)
  assert (rows[1].change_value, rows[1].nochange_value) == (255, 0)


@pytest.mark.parametrize("text, message", [
    ("pair_id,before,after\na,b,c", "lacks columns"),
    ("pair_id,before,after,mask\na,b,c,m\na,b,c,m", "duplicate pair_id"),
    ("pair_id,before,after,mask,change_value,nochange_value\na,b,c,m,1,1", "both"),
    ("pair_id,before,after,mask,change_value\na,b,c,m,x", "not a number"),
    ("pair_id,before,after,mask\na,,c,m", "empty before"),
    ("pair_id,before,after,mask\n", "no rows"),
])
def test_manifest_errors(text, message):
  with pytest.raises(ValueError, match=message):
    data.parse_manifest(_csv(text), "/r")


def test_manifest_without_mask_when_allowed():
  (r,) = data.parse_manifest(_csv("pair_id,before,after\na,b.tif,a.tif"), "/r",
                             require_mask=False)
  assert r.mask is None


def _tiny_pair(tmp_path):
  rng = np.random.default_rng(0)
  before = rng.integers(0, 255, (3, 20, 24), dtype=np.uint8)
  after = before.copy()
  after[:, 5:10, 5:10] = 255
  mask = np.zeros((1, 20, 24), np.uint8)
  mask[0, 5:10, 5:10] = 2
  mask[0, 0, :] = 1  # neither change (2) nor no change (0): ignored
  mask[0, 19, :] = 7  # ignored
  d = tmp_path / "root" / "p"
  for i in range(3):
    write_raster(str(d / f"b{i}.tif"), before[i:i + 1])
  write_raster(str(d / "after.tif"), after)
  write_raster(str(d / "mask.png"), mask, driver="PNG", crs=None, transform=None)
  manifest = tmp_path / "m.csv"
  manifest.write_text("pair_id,before,after,mask,change_value,nochange_value\n"
                      "p,p/b0.tif;p/b1.tif;p/b2.tif,p/after.tif,p/mask.png,2,0\n")
  return manifest, before, after


def test_read_manifest_and_load_pair(tmp_path):
  manifest, before, after = _tiny_pair(tmp_path)
  (r,) = data.read_manifest(str(manifest), data_root=str(tmp_path / "root"))
  pair = data.load_pair(r)
  assert pair.before.shape == (20, 24, 3) and pair.before.dtype == np.float32
  np.testing.assert_array_equal(pair.before, np.moveaxis(before, 0, -1))
  np.testing.assert_array_equal(pair.after, np.moveaxis(after, 0, -1))
  assert (pair.label[5:10, 5:10] == 1).all()
  assert (pair.label[0] == data.IGNORE).all()  # value 1 is neither 2 nor 0
  assert (pair.label[19] == data.IGNORE).all()
  assert (pair.label[12] == 0).all()


def test_read_manifest_missing_file_names_the_root(tmp_path):
  manifest, _, _ = _tiny_pair(tmp_path)
  with pytest.raises(FileNotFoundError, match="data_root"):
    data.read_manifest(str(manifest))  # default root: the manifest's folder, files not there
  with pytest.raises(FileNotFoundError):
    data.read_manifest(str(tmp_path / "nope.csv"))


def test_shipped_manifests_are_relative_and_parse():
  here = os.path.join(os.path.dirname(__file__), "..", "..", "model", "manifests")
  for name, n in (("oscd_train.csv", 14), ("oscd_test.csv", 10)):
    text = open(os.path.join(here, name)).read()
    assert "/work" not in text and "\n/" not in text
    rows = data.parse_manifest(io.StringIO(text), "/data")
    assert len(rows) == n
    assert all(r.before[0].startswith("/data/oscd/") for r in rows)
  train = data.parse_manifest(open(os.path.join(here, "oscd_train.csv")), "/d")
  assert {(r.change_value, r.nochange_value) for r in train} == {(2, 1)}


def test_iter_chips_covers_and_pads():
  p = data.Pair("x", np.ones((20, 24, 3), np.float32), np.ones((20, 24, 3), np.float32), None)
  chips = list(data.iter_chips(p, 16))
  assert len(chips) == 4
  key, b, a, valid = chips[-1]
  assert b.shape == (16, 16, 3) and valid.shape == (16, 16)
  assert valid.sum() == 4 * 8 and key == "x/16_16"


def test_nuisance_keeps_shape_and_shift_is_one_pixel():
  rng = np.random.default_rng(0)
  img = rng.normal(size=(32, 32, 3)).astype(np.float32)
  out = data.nuisance(img, rng)
  assert out.shape == img.shape and np.isfinite(out).all()
  shifted = data.shift_image(img, 1, 0)
  np.testing.assert_array_equal(shifted[1:], img[:-1])
  raw = data.raw_nuisance(np.full((16, 16, 3), 100, np.float32), rng)
  assert raw.shape == (16, 16, 3) and 0 <= raw.min() and raw.max() <= 255


def test_chip_sampler_shapes_and_labels():
  rng = np.random.default_rng(1)
  label = np.zeros((64, 64), np.int8)
  label[10:20, 10:20] = 1
  label[40:, :] = -1
  p = data.Pair("x", rng.normal(size=(64, 64, 3)).astype(np.float32),
                rng.normal(size=(64, 64, 3)).astype(np.float32), label)
  s = data.ChipSampler([p], size=32, seed=0, paste_prob=0.5)
  b, a, y = s.batch(6)
  assert b.shape == (6, 32, 32, 3) and a.shape == b.shape and y.shape == (6, 32, 32)
  assert set(np.unique(y)) <= {-1, 0, 1}
  assert (y == 1).any()
  b2, _, _ = data.ChipSampler([p], size=32, seed=0, paste_prob=0.5).batch(6)
  np.testing.assert_array_equal(b, b2)  # seeded


def test_paste_change_labels_the_blob():
  rng = np.random.default_rng(0)
  after = np.zeros((32, 32, 3), np.float32)
  donor = np.ones((32, 32, 3), np.float32)
  out, lab = data.paste_change(after, np.zeros((32, 32), np.int8), donor, rng)
  changed = out.sum(-1) > 0
  np.testing.assert_array_equal(changed, lab == 1)
  assert changed.any()


def test_make_oscd_manifests_writes_relative_rows(tmp_path):
  from changesweep.model import make_oscd_manifests
  for split, mask in (("train", "cm.tif"), ("test", "cm.png")):
    d = tmp_path / "data" / "oscd" / split / "city"
    d.mkdir(parents=True)
    for name in ("img1.png", "img2.png", mask):
      (d / name).write_bytes(b"")
  out = tmp_path / "manifests"
  assert make_oscd_manifests.main(["--data_root", str(tmp_path / "data"), "--out", str(out)]) == 0
  train = data.parse_manifest(open(out / "oscd_train.csv"), "/r")
  assert train[0].mask == "/r/oscd/train/city/cm.tif"
  assert (train[0].change_value, train[0].nochange_value) == (2, 1)
  s2 = data.parse_manifest(open(out / "oscd_test_s2.csv"), "/r")
  assert s2[0].before == tuple(f"/r/oscd/test/city/imgs_1/{b}.tif" for b in ("B04", "B03", "B02"))
  assert str(tmp_path) not in (out / "oscd_test.csv").read_text()


def test_band_files_of_two_resolutions_are_read_onto_the_finest_grid(tmp_path):
  """A 13-band Sentinel-2 manifest lists 10 m and 20 m files; evaluate must not reject them."""
  import rasterio
  from rasterio.transform import from_origin

  paths = []
  for name, size, res in (("B04.tif", 20, 10.0), ("B11.tif", 10, 20.0)):
    p = str(tmp_path / name)
    with rasterio.open(p, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint16",
                       crs="EPSG:32631", transform=from_origin(500000, 4000000, res, res)) as dst:
      dst.write(np.full((1, size, size), 1000 if res == 10 else 3000, np.uint16))
    paths.append(p)
  x = data.read_raster(";".join(paths))
  assert x.shape == (20, 20, 2)
  assert np.allclose(x[..., 0], 1000) and np.allclose(x[..., 1], 3000)

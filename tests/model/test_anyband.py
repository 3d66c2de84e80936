"""The any-band model: order/count invariance, size, export, normalisation, evaluate's errors."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from rasterio.transform import Affine

from changesweep.model import anyband, bandcodes, evaluate, network
from changesweep.model import format as model_format
from changesweep.transforms import normalization as norm
from tests.rasters import GRID, write_raster

SIZE = 32
WIDTHS = (8, 8, 16, 16)
S2 = norm.S2_WAVELENGTHS


@pytest.fixture(scope="module")
def net():
  return network.build_anyband_network(WIDTHS, stem_width=8, seed=0)


def _pair(k, seed=0, n=2):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, SIZE, SIZE, k)).astype(np.float32),
          rng.normal(size=(n, SIZE, SIZE, k)).astype(np.float32))


@pytest.mark.parametrize("codes", [
    [-2.0], [S2["B04"], S2["B03"], S2["B02"]], [S2[b] for b in ("B02", "B03", "B04", "B08")],
    list(S2.values())])
def test_any_band_count_and_order_gives_the_same_map(net, codes):
  k = len(codes)
  b, a = _pair(k)
  c = np.tile(np.asarray(codes, np.float32)[None], (2, 1))
  out = np.asarray(net([b, a, c]))
  assert out.shape == (2, SIZE, SIZE) and np.isfinite(out).all()
  perm = np.random.default_rng(k).permutation(k)
  again = np.asarray(net([b[..., perm], a[..., perm], c[:, perm]]))
  np.testing.assert_allclose(again, out, atol=1e-4)
  # Empty slots (code 0, zeros) anywhere do not change the map either.
  pad = np.zeros((2, SIZE, SIZE, 2), np.float32)
  padded = np.asarray(net([np.concatenate([pad[..., :1], b, pad[..., 1:]], -1),
                           np.concatenate([pad[..., :1], a, pad[..., 1:]], -1),
                           np.concatenate([np.zeros((2, 1)), c, np.zeros((2, 1))], 1)]))
  np.testing.assert_allclose(padded, out, atol=1e-4)


def test_band_identity_matters(net):
  b, a = _pair(1)
  import keras
  # Give the band embedding non-zero weights (it starts at zero) to see it at work.
  stem = net.get_layer("band_stem")
  w, bias = stem.emb2.get_weights()
  stem.emb2.set_weights([np.random.default_rng(0).normal(0, 0.5, w.shape).astype(np.float32),
                         bias])
  try:
    x = np.asarray(net([b, a, np.full((2, 1), S2["B04"], np.float32)]))
    y = np.asarray(net([b, a, np.full((2, 1), -2.0, np.float32)]))
    assert np.abs(x - y).max() > 1e-4
  finally:
    stem.emb2.set_weights([w, bias])
  del keras


def test_default_network_is_under_budget():
  model = network.build_anyband_network()
  assert model.count_params() < 1_000_000
  assert network.count_anyband_macs(4) <= 2 * network.count_macs()


def test_swapping_captures_gives_the_same_map(net):
  b, a = _pair(4, seed=3)
  c = np.tile(np.asarray([S2["B02"], S2["B03"], S2["B04"], S2["B08"]], np.float32)[None], (2, 1))
  np.testing.assert_allclose(np.asarray(net([b, a, c])), np.asarray(net([a, b, c])), atol=1e-5)


# ----------------------------------------------------------------------------- normalisation


def test_capture_stats_are_robust_to_outliers():
  rng = np.random.default_rng(0)
  x = rng.normal(1000.0, 50.0, (10000, 2)).astype(np.float32)
  x[:300, 0] = 60000.0  # saturated / cloud
  x[:, 1] = rng.normal(0.3, 0.1, 10000)
  center, scale = norm.capture_stats(x, [S2["B04"], -2.0])
  np.testing.assert_allclose(center, [1000.0, 0.3], rtol=0.02, atol=0.01)
  np.testing.assert_allclose(scale, [50.0, 0.1], rtol=0.1)
  c2, s2 = norm.capture_stats(np.concatenate([x, np.zeros((10000, 1), np.float32)], 1),
                              [S2["B04"], -2.0, 0.0])
  assert c2[2] == 0.0 and s2[2] == 1.0
  with pytest.raises(ValueError):
    norm.capture_stats(x, [S2["B04"]])


def test_numpy_and_tensorflow_normalisation_agree():
  rng = np.random.default_rng(1)
  x = rng.normal(500, 200, (2, 8, 8, 3)).astype(np.float32)
  x[0, 0, 0, 0] = np.nan
  center = np.array([[500, 400, 0], [1, 2, 0]], np.float32)
  scale = np.array([[100, 50, 1], [3, 4, 1]], np.float32)
  codes = np.array([[0.49, 0.56, 0.0], [0.49, 0.56, 0.0]], np.float32)
  got = norm.normalize_tf(x, center, scale, codes).numpy()
  for i in range(2):
    np.testing.assert_allclose(got[i], norm.normalize_np(x[i], center[i], scale[i], codes[i]),
                               atol=1e-5)
  assert got[0, 0, 0, 0] == 0.0 and (got[..., 2] == 0).all() and np.abs(got).max() <= norm.Z_CLIP


# ----------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def exported(tmp_path_factory, net):
  out = str(tmp_path_factory.mktemp("any") / "m")
  info = model_format.export_anyband_model_dir(out, net, {
      "model_id": "tiny-any", "version": "1", "kind": "learned", "bands": ["B02", "B03"],
      "chip_size": SIZE, "max_bands": 13, "threshold": 0.5})
  return out, info


def _serving_inputs(k, seed=0):
  rng = np.random.default_rng(seed)
  before = np.zeros((2, SIZE, SIZE, 13), np.float32)
  after = np.zeros_like(before)
  before[..., :k] = rng.uniform(0, 3000, (2, SIZE, SIZE, k))
  after[..., :k] = rng.uniform(0, 3000, (2, SIZE, SIZE, k))
  codes = np.zeros((2, 13), np.float32)
  codes[:, :k] = list(S2.values())[:k]
  stats = {}
  for name, x in (("before", before), ("after", after)):
    c = np.ones((2, 13), np.float32) * 0
    s = np.ones((2, 13), np.float32)
    for i in range(2):
      c[i], s[i] = norm.capture_stats(x[i], codes[i])
    stats[f"{name}_center"], stats[f"{name}_scale"] = c, s
  valid = np.ones((2, SIZE, SIZE), np.float32)
  valid[0, :4] = 0
  return before, after, valid, codes, stats


def test_any_band_export_round_trip(exported, net):
  out, info = exported
  assert info.band_mode == "any" and info.max_bands == 13
  assert os.path.isdir(os.path.join(out, "transform_fn"))
  with open(os.path.join(out, "metadata.json")) as f:
    meta = json.load(f)
  assert meta["normalization"] == "capture_robust" and meta["format"] == model_format.FORMAT
  fn = model_format.load_saved_model(info).signatures["serving_default"]
  assert sorted(fn.structured_input_signature[1]) == sorted(model_format.ANY_INPUTS)
  for k in (1, 4, 13):
    before, after, valid, codes, stats = _serving_inputs(k, seed=k)
    got = fn(before=tf.constant(before), after=tf.constant(after), valid=tf.constant(valid),
             band_code=tf.constant(codes),
             **{key: tf.constant(v) for key, v in stats.items()})["change_prob"].numpy()
    keep = valid[..., None]  # invalid pixels enter the network as zeros
    zb = norm.normalize_tf(before, stats["before_center"], stats["before_scale"], codes) * keep
    za = norm.normalize_tf(after, stats["after_center"], stats["after_scale"], codes) * keep
    expected = tf.sigmoid(net([zb[..., :k], za[..., :k], tf.constant(codes[:, :k])])).numpy()
    expected = expected * valid
    assert got.shape == (2, SIZE, SIZE)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_transform_fn_is_the_same_normalisation(exported):
  import tensorflow_transform as tft
  out, _ = exported
  layer = tft.TFTransformOutput(os.path.join(out, "transform_fn")).transform_features_layer()
  before, after, valid, codes, stats = _serving_inputs(4)
  px = SIZE * SIZE
  res = layer({"before": tf.reshape(before, [2, px * 13]), "after": tf.reshape(after, [2, px * 13]),
               "valid": tf.reshape(valid, [2, px]), "band_code": tf.constant(codes),
               **{k: tf.constant(v) for k, v in stats.items()}})
  expected = norm.normalize_tf(before, stats["before_center"], stats["before_scale"], codes)
  expected = expected.numpy() * valid[..., None]
  np.testing.assert_allclose(res["before"].numpy().reshape(expected.shape), expected, atol=1e-5)


def test_fixed_band_models_still_load():
  shipped = os.path.join(os.path.dirname(model_format.__file__), "shipped",
                         "changesweep-siamdiff-oscd-rgb-v1")
  info = model_format.read_model_info(shipped)
  assert info.band_mode == "fixed" and info.max_bands == 3


# ----------------------------------------------------------------------------- band codes


@pytest.mark.parametrize("name,code", [
    ("B04", 0.665), ("B4", 0.665), ("B04_10m", 0.665), ("B4, central wavelength 665 nm", 0.665),
    ("B8A", 0.865), ("b8a", 0.865), ("B12", 2.19), ("red", 0.665), ("nir", 0.842),
    ("swir16", 1.61), ("red (x1e-4 reflectance)", 0.665), ("NDVI", -2.0), ("VV", -3.0),
    (None, None), ("", None), ("2015-09-16", None), ("band_1", None)])
def test_band_code_of_names(name, code):
  assert bandcodes.band_code(name) == code


def test_unnamed_bands_are_never_guessed():
  assert bandcodes.capture_codes([None]) == [-1.0]
  assert bandcodes.capture_codes([None] * 3, "PNG") == [0.665, 0.56, 0.49]
  with pytest.raises(bandcodes.BandInputError):
    bandcodes.capture_codes([None] * 3, "GTiff")
  with pytest.raises(bandcodes.BandInputError):
    bandcodes.capture_codes(["B02", None])


def test_derived_index_is_requested_as_a_band():
  x = np.stack([np.full((2, 2), 100.0), np.full((2, 2), 300.0)], -1).astype(np.float32)
  y, codes = bandcodes.select_bands(x, [S2["B04"], S2["B08"]], ["NDVI", "nir"])
  assert codes == [-2.0, S2["B08"]]
  np.testing.assert_allclose(y[..., 0], 0.5)
  with pytest.raises(bandcodes.BandInputError):
    bandcodes.select_bands(x, [S2["B04"], S2["B08"]], ["NBR"])


def test_mixed_resolutions_are_resampled_to_the_finest_grid(tmp_path):
  fine = write_raster(str(tmp_path / "B04.tif"), np.full((1, 8, 8), 10, np.uint16))
  coarse = write_raster(str(tmp_path / "B11.tif"), np.full((1, 4, 4), 20, np.uint16),
                        descriptions=("B11",), transform=GRID @ Affine.scale(2))
  pixels, names, _ = bandcodes.read_capture([fine, coarse])
  assert pixels.shape == (8, 8, 2) and names == ["B04", "B11"]
  np.testing.assert_allclose(pixels[..., 1], 20)


# ----------------------------------------------------------------------------- evaluate


def _pairs(root, bands, descriptions=None, n=1, h=40, w=48):
  rng = np.random.default_rng(0)
  lines = ["pair_id,before,after,mask,change_value,nochange_value"]
  for i in range(n):
    before = rng.uniform(500, 3000, (bands, h, w)).astype(np.uint16)
    after = before.copy()
    after[:, 10:20, 10:20] = 6000
    mask = np.ones((1, h, w), np.uint8)
    mask[0, 10:20, 10:20] = 2
    write_raster(os.path.join(root, f"p{i}", "a.tif"), before, descriptions=descriptions)
    write_raster(os.path.join(root, f"p{i}", "b.tif"), after, descriptions=descriptions)
    write_raster(os.path.join(root, f"p{i}", "cm.tif"), mask)
    lines.append(f"p{i},p{i}/a.tif,p{i}/b.tif,p{i}/cm.tif,2,1")
  path = os.path.join(root, "pairs.csv")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


def test_evaluate_any_band_model_on_one_and_four_bands(tmp_path, exported, capsys):
  out, _ = exported
  one = _pairs(str(tmp_path / "one"), 1)
  record = str(tmp_path / "eval.json")
  assert evaluate.main(["--pairs", one, "--model", out, "--record", record, "--name",
                        "ndvi"]) == 0
  four = _pairs(str(tmp_path / "four"), 4, descriptions=("B02", "B03", "B04", "B08"))
  assert evaluate.main(["--pairs", four, "--model", out, "--record", record, "--name", "s2_4",
                        "--nuisance"]) == 0
  assert evaluate.main(["--pairs", four, "--model", out, "--bands", "NDVI", "--record",
                        record, "--name", "ndvi_derived"]) == 0
  with open(record) as f:
    doc = json.load(f)
  rows = {r["name"]: r for r in doc["rows"]}
  assert doc["model_id"] == "tiny-any" and set(rows) == {"ndvi", "s2_4", "ndvi_derived"}
  assert rows["ndvi"]["band_set"] == "unknown" and rows["ndvi_derived"]["band_set"] == "index"
  assert rows["s2_4"]["band_set"] == "B02,B03,B04,B08"
  assert set(rows["s2_4"]["metrics"]) >= {"f1", "precision", "recall", "iou", "kappa"}
  assert rows["s2_4"]["command"].startswith("changesweep evaluate --pairs")
  assert set(doc["nuisance"]["s2_4"]["flagged_fraction"]) == set(evaluate.NUISANCES)


def _one_line_error(capsys):
  err = capsys.readouterr().err.strip()
  assert err.startswith("changesweep evaluate: error:") and "\n" not in err
  assert "Traceback" not in err
  return err


def test_evaluate_unreadable_input_is_one_line_and_exit_2(tmp_path, exported, capsys):
  out, _ = exported
  unnamed4 = _pairs(str(tmp_path / "u4"), 4)
  assert evaluate.main(["--pairs", unnamed4, "--model", out]) == 2
  assert "unnamed" in _one_line_error(capsys)
  one = _pairs(str(tmp_path / "one"), 1)
  shipped = os.path.join(os.path.dirname(model_format.__file__), "shipped",
                         "changesweep-siamdiff-oscd-rgb-v1")
  assert evaluate.main(["--pairs", one, "--model", shipped]) == 2  # the reported crash
  assert "reads 3 bands" in _one_line_error(capsys)
  assert evaluate.main(["--pairs", one, "--model", str(tmp_path / "nope")]) == 2
  _one_line_error(capsys)


# ----------------------------------------------------------------------------- training


def test_sampler_batches_are_one_band_set_in_any_order():
  rng = np.random.default_rng(0)
  h, w = 40, 40
  raw = rng.uniform(100, 3000, (h, w, 13)).astype(np.float32)
  label = np.zeros((h, w), np.int8)
  label[5:15, 5:15] = 1
  cap = anyband.Capture(raw, raw.reshape(-1, 13)[:500])
  city = anyband.City("c", cap, anyband.Capture(raw[::-1].copy(), raw.reshape(-1, 13)[500:1000]),
                      label)
  sampler = anyband.AnyBandSampler([city], size=16, seed=1)
  kinds = set()
  for _ in range(40):
    b, a, c, y = sampler.batch(2)
    assert b.shape == a.shape and b.shape[:3] == (2, 16, 16) and c.shape == (2, b.shape[-1])
    assert np.isfinite(b).all() and np.abs(b).max() <= norm.Z_CLIP
    assert (b[..., c[0] == 0] == 0).all()
    kinds.add(int(b.shape[-1] == 1) + 2 * int((c < 0).any()))
  assert len(kinds) >= 3
  again = anyband.AnyBandSampler([city], size=16, seed=1).batch(2)
  np.testing.assert_array_equal(again[0], anyband.AnyBandSampler([city], size=16,
                                                                 seed=1).batch(2)[0])


# ----------------------------------------------------------------------------- archive_optical


def test_optical_mix_takes_archive_stats_for_optical_bands_only():
  codes = [S2["B04"], norm.CODE_INDEX, norm.CODE_UNKNOWN, norm.CODE_EMPTY]
  archive = (np.array([1000.0, 0.5, 7.0, 9.0]), np.array([300.0, 0.2, 2.0, 3.0]))
  capture = (np.array([900.0, 0.1, 5.0, 4.0]), np.array([250.0, 0.3, 1.0, 2.0]))
  center, scale = norm.optical_mix(codes, archive, capture)
  np.testing.assert_allclose(center, [1000.0, 0.1, 5.0, 0.0])
  np.testing.assert_allclose(scale, [300.0, 0.3, 1.0, 1.0])


def test_capture_mean_std_ignores_non_finite_values():
  x = np.array([[1.0, 2.0], [3.0, np.nan], [5.0, 4.0]], np.float32)
  mean, std = norm.capture_mean_std(x)
  np.testing.assert_allclose(mean, [3.0, 3.0])
  np.testing.assert_allclose(std, [np.sqrt(8 / 3), 1.0], rtol=1e-6)


def test_archive_optical_pools_only_optical_bands_in_the_sweep():
  from changesweep.pipeline import anyband as sweep_anyband
  from changesweep.pipeline.elements import Pair, SceneRef

  def scene(uri, means, stds):
    return SceneRef("loc", "2020-01-01", (uri,), ("B04", "NDVI"), 10, 10, "float32", "",
                    (1.0, 0.0, 0.0, 0.0, -1.0, 0.0), None, 0, 1.0, means, stds, None, None)

  pair = Pair("p", scene("a.tif", (1000.0, 0.2), (100.0, 0.1)),
              scene("b.tif", (1200.0, 0.6), (120.0, 0.2)), (0, 1), (0, 1), ("B04", "NDVI"),
              (S2["B04"], norm.CODE_INDEX))
  assert {k[1] for k, _ in sweep_anyband.capture_band_stats(pair)} == {"B04", "NDVI"}
  assert {k[1] for k, _ in sweep_anyband.capture_band_stats(pair, optical_only=True)} == {"B04"}
  pooled = {"B04": (1100.0, 150.0)}
  center, scale = sweep_anyband.slot_stats(pair, pair.after, pair.after_bands, pooled, 4)
  np.testing.assert_allclose(center[:2], [1100.0, 0.6])
  np.testing.assert_allclose(scale[:2], [150.0, 0.2])


def test_sampler_archive_optical_normalises_indices_per_capture():
  rng = np.random.default_rng(0)
  raw = rng.uniform(100, 3000, (24, 24, 13)).astype(np.float32)
  cap = anyband.Capture(raw, raw.reshape(-1, 13))
  archive = (np.full(16, 5.0, np.float32), np.full(16, 2.0, np.float32))
  ndvi = anyband.fixed_band_set(("NDVI",), unknown=True)
  z = anyband.capture_view(raw, cap.sample, ndvi, "archive_optical", archive, rng)
  assert abs(float(z.mean())) < 1e-3 and abs(float(z.std()) - 1.0) < 1e-2  # its own mean/std
  red = anyband.fixed_band_set(("B04",))
  z = anyband.capture_view(raw, cap.sample, red, "archive_optical", archive, rng)
  np.testing.assert_allclose(z[..., 0], np.clip((raw[..., 3] - 5.0) / 2.0, -8, 8), rtol=1e-5)

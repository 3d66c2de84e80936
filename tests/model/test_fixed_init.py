"""`changesweep train --init_from` in fixed mode: the stem is mapped by band name."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from changesweep.model import fixed_init  # noqa: E402
from changesweep.model import network as net  # noqa: E402

WIDTHS = (8, 8, 16, 16)


def _randomise(model, seed: int) -> None:
  """Every weight random (BatchNorm variances positive), so that copying matters."""
  rng = np.random.default_rng(seed)
  for w in model.weights:
    value = rng.normal(0.0, 0.3, tuple(w.shape)).astype(np.float32)
    if w.path.endswith("moving_variance"):
      value = np.abs(value) + 0.5
    w.assign(value)


def _model_dir(tmp_path, model, bands, keras_file: bool) -> str:
  path = os.path.join(str(tmp_path), "source")
  os.makedirs(path)
  with open(os.path.join(path, "metadata.json"), "w") as f:
    json.dump({"bands": list(bands), "training": {"widths": list(WIDTHS)}}, f)
  if keras_file:
    model.save(os.path.join(path, fixed_init.NETWORK_FILE))
  else:
    model.save_weights(os.path.join(path, fixed_init.CHECKPOINT_FILE))
  return path


@pytest.mark.parametrize("keras_file", [True, False])
def test_mapped_stem_reproduces_the_source_on_shared_bands(tmp_path, keras_file):
  source = net.build_network(3, WIDTHS, seed=1)
  _randomise(source, 1)
  src_dir = _model_dir(tmp_path, source, ("red", "green", "blue"), keras_file)
  model = net.build_network(4, WIDTHS, seed=2)
  report = fixed_init.init_from_model_dir(model, ("blue", "green", "red", "nir"), src_dir)
  assert report["skipped"] == [] and report["zero_bands"] == ["nir"]
  assert report["copied"] == len(model.weights)

  rng = np.random.default_rng(0)
  rgb_b = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
  rgb_a = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
  expected = source([rgb_b, rgb_a], training=False).numpy()
  assert np.std(expected) > 1e-3  # the output varies with the input, so a wrong map shows

  for extra_scale in (0.0, 7.0):
    def four(x):  # red, green, blue -> blue, green, red, nir (anything)
      nir = extra_scale * rng.normal(size=x.shape[:-1] + (1,)).astype(np.float32)
      return np.concatenate([x[..., 2:3], x[..., 1:2], x[..., 0:1], nir], -1)
    got = model([four(rgb_b), four(rgb_a)], training=False).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)

  # The same weights with the channels taken in the source's order would differ.
  wrong = np.concatenate([rgb_b, np.zeros_like(rgb_b[..., :1])], -1)
  wrong_a = np.concatenate([rgb_a, np.zeros_like(rgb_a[..., :1])], -1)
  assert np.abs(model([wrong, wrong_a], training=False).numpy() - expected).max() > 1e-2


def test_map_stem_kernel_by_name():
  kernel = np.stack([np.full((3, 3, 5), float(c + 1)) for c in range(3)], axis=2)  # [3,3,3,5]
  out, zero = fixed_init.map_stem_kernel(kernel, ("red", "green", "blue"),
                                         ("B02", "nir", "B04", "green"))
  assert out.shape == (3, 3, 4, 5)
  assert zero == ["nir"]
  assert [float(out[0, 0, c, 0]) for c in range(4)] == [3.0, 0.0, 1.0, 2.0]


def test_map_stem_kernel_rejects_no_shared_band_and_duplicates():
  kernel = np.ones((3, 3, 3, 4), np.float32)
  with pytest.raises(ValueError, match="share no band"):
    fixed_init.map_stem_kernel(kernel, ("red", "green", "blue"), ("nir", "B11"))
  with pytest.raises(ValueError, match="twice"):
    fixed_init.map_stem_kernel(kernel, ("red", "green", "blue"), ("red", "B04"))
  with pytest.raises(ValueError, match="reads 3 bands"):
    fixed_init.map_stem_kernel(kernel, ("red", "green"), ("red",))


def test_any_band_source_is_refused(tmp_path):
  path = os.path.join(str(tmp_path), "any")
  os.makedirs(path)
  with open(os.path.join(path, "metadata.json"), "w") as f:
    json.dump({"bands": ["B02"], "band_mode": "any"}, f)
  with pytest.raises(ValueError, match="any-band"):
    fixed_init.load_source(path)

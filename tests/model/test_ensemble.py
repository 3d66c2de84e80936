"""The multispectral ensemble: the mean of two networks where a capture has the specialist's
bands (found by band code, in any slot order), the any-band network alone where it has not."""
import numpy as np
import pytest

from changesweep.model import anyband, ensemble
from changesweep.model import network as net

SPEC = ("B02", "B03", "B04", "B08")


@pytest.fixture(scope="module")
def members():
  anyband_net = net.build_anyband_network((4, 8, 8, 8), stem_width=4, seed=1)
  specialist = net.build_network(4, (4, 8, 8, 8), seed=2)
  codes = [anyband.channel_code(b) for b in SPEC]
  return anyband_net, specialist, ensemble.build_ensemble(anyband_net, specialist, codes, 0.5)


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def squeeze(p):
  p = np.asarray(p)
  return p[..., 0] if p.ndim == 4 else p


def test_with_the_four_bands_in_any_slot_order_it_is_the_mean_of_both(members):
  anyband_net, specialist, model = members
  rng = np.random.default_rng(0)
  bands = ("B01", "B08", "B03", "B11", "B02", "B04")  # the four among others, shuffled
  codes = np.asarray([[anyband.channel_code(b) for b in bands]] * 2, np.float32)
  b = rng.normal(size=(2, 32, 32, len(bands))).astype(np.float32)
  a = rng.normal(size=(2, 32, 32, len(bands))).astype(np.float32)
  got = sigmoid(model([b, a, codes]))
  order = [bands.index(x) for x in SPEC]
  want = 0.5 * sigmoid(squeeze(anyband_net([b, a, codes]))) + 0.5 * sigmoid(
      squeeze(specialist([b[..., order], a[..., order]])))
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_without_one_of_them_it_is_the_anyband_network_alone(members):
  anyband_net, _, model = members
  rng = np.random.default_rng(1)
  bands = ("B02", "B03", "B04", "B8A")  # B8A is not B08 (0.865 against 0.842 um)
  codes = np.asarray([[anyband.channel_code(x) for x in bands]], np.float32)
  b = rng.normal(size=(1, 32, 32, 4)).astype(np.float32)
  a = rng.normal(size=(1, 32, 32, 4)).astype(np.float32)
  np.testing.assert_allclose(sigmoid(model([b, a, codes])),
                             sigmoid(squeeze(anyband_net([b, a, codes]))), atol=1e-5)


def test_the_shipped_ensemble_is_the_default_for_multispectral_pairs():
  from changesweep.model.model_dir import read_model_info
  from changesweep.pipeline.options import DEFAULT_MULTISPECTRAL_MODEL
  info = read_model_info(DEFAULT_MULTISPECTRAL_MODEL)
  assert info.model_id == "changesweep-ensemble-s2-v1" and info.raw["band_mode"] == "any"
  val = info.raw["metrics"]["validation"]
  assert val["f1_per_set"]["s2_4"] > 0.5 and val["f1_per_set"]["s2_13"] > 0.5

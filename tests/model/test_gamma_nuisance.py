"""The fixed-band sampler's gamma nuisance (`data.raw_gamma`, `ChipSampler.gamma_prob`)."""
from __future__ import annotations

import numpy as np
import pytest

from changesweep.model import data

MEAN = np.array([1364.0, 1280.0, 1291.0, 1977.0], np.float32)
STD = np.array([414.0, 537.0, 763.0, 874.0], np.float32)


def test_raw_gamma_is_a_gamma_of_the_raw_values():
  rng = np.random.default_rng(0)
  raw = rng.uniform(200, 4000, (8, 8, 4)).astype(np.float32)
  z = (raw - MEAN) / STD
  np.testing.assert_allclose(data.raw_gamma(z, 1.0, MEAN, STD), z, atol=1e-5)
  ref = MEAN + 3 * STD
  want = (ref * (raw / ref) ** 0.8 - MEAN) / STD
  np.testing.assert_allclose(data.raw_gamma(z, 0.8, MEAN, STD), want, rtol=1e-4, atol=1e-4)
  below = raw < ref  # gamma < 1 brightens below the reference, darkens above it
  out = data.raw_gamma(z, 0.8, MEAN, STD)
  assert below.any() and (~below).any()
  assert (out[below] > z[below]).all() and (out[~below] < z[~below]).all()


def _pair(seed):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(96, 96, 4)).astype(np.float32)
  return data.Pair("p", z, z + 0.1, (rng.random((96, 96)) < 0.1).astype(np.int8))


def test_sampler_without_gamma_draws_the_same_chips():
  plain = data.ChipSampler([_pair(1)], size=32, seed=3).batch(6)
  off = data.ChipSampler([_pair(1)], size=32, seed=3, gamma_prob=0.0,
                         raw_stats=(MEAN, STD)).batch(6)
  on = data.ChipSampler([_pair(1)], size=32, seed=3, gamma_prob=1.0,
                        raw_stats=(MEAN, STD)).batch(6)
  assert all(np.array_equal(x, y) for x, y in zip(plain, off))
  assert not np.array_equal(plain[0], on[0]) or not np.array_equal(plain[1], on[1])


def test_sampler_gamma_needs_raw_stats():
  with pytest.raises(ValueError, match="raw_stats"):
    data.ChipSampler([_pair(2)], size=32, seed=0, gamma_prob=1.0).batch(8)

"""The "archive_optical_robust" normalisation: archive statistics for optical bands, each
capture's own median / 1.4826 * MAD for index, SAR and unnamed bands; and the band mixes."""
import numpy as np
import pytest

from changesweep.model import anyband
from changesweep.transforms import normalization as norm

S2 = norm.S2_WAVELENGTHS


def skewed(n=4000, seed=0):
  """One band, mostly around 0.3, with 15% of the pixels far out (clouds, water)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(0.3, 0.05, n)
  x[: int(0.15 * n)] = -0.8
  return x.astype(np.float32)


def test_the_new_mode_is_a_normalisation_of_its_own():
  assert norm.ARCHIVE_OPTICAL_ROBUST in norm.NORMALIZATIONS
  assert set(norm.OPTICAL_ONLY_MODES) == {"archive_optical", "archive_optical_robust"}


def test_mixed_stats_take_archive_for_optical_and_median_mad_for_the_others():
  x = skewed()
  pixels = np.stack([np.full_like(x, 1500.0) + x * 100, x, x, np.zeros_like(x)], 1)
  codes = [S2["B04"], norm.CODE_INDEX, norm.CODE_UNKNOWN, norm.CODE_EMPTY]
  archive = (np.array([1000.0, 0.5, 7.0, 9.0]), np.array([300.0, 0.2, 2.0, 3.0]))
  center, scale = norm.mixed_stats("archive_optical_robust", codes, archive, pixels)
  med = np.median(x)
  mad = 1.4826 * np.median(np.abs(x - med))
  np.testing.assert_allclose(center, [1000.0, med, med, 0.0], rtol=1e-5)
  np.testing.assert_allclose(scale, [300.0, mad, mad, 1.0], rtol=1e-5)
  # the robust centre ignores the outliers, the mean does not
  mean_center, mean_scale = norm.mixed_stats("archive_optical", codes, archive, pixels)
  np.testing.assert_allclose(mean_center[1], x.mean(), rtol=1e-5)
  assert abs(center[1] - 0.3) < 0.03 < abs(mean_center[1] - 0.3)
  assert scale[1] < 0.1 < mean_scale[1]


def test_capture_side_stats_refuses_modes_without_capture_statistics():
  with pytest.raises(ValueError, match="does not mix"):
    norm.capture_side_stats("archive", np.ones((4, 1)), [S2["B04"]])


def test_sampler_view_of_an_unnamed_index_is_its_robust_z_score():
  rng = np.random.default_rng(0)
  raw = rng.uniform(100, 3000, (24, 24, 13)).astype(np.float32)
  raw[:6, :, 7] = 20000.0  # a bright NIR strip: NDVI far from the rest
  sample = raw.reshape(-1, 13)
  archive = (np.full(16, 5.0, np.float32), np.full(16, 2.0, np.float32))
  ndvi = anyband.fixed_band_set(("NDVI",), unknown=True)
  z = anyband.capture_view(raw, sample, ndvi, "archive_optical_robust", archive, rng)
  index = anyband.add_indices(raw)[..., anyband.CHANNELS.index("NDVI")]
  med = np.median(index)
  mad = 1.4826 * np.median(np.abs(index - med))
  np.testing.assert_allclose(z[..., 0], np.clip((index - med) / mad, -8, 8), rtol=1e-4, atol=1e-4)
  red = anyband.fixed_band_set(("B04",))
  z = anyband.capture_view(raw, sample, red, "archive_optical_robust", archive, rng)
  np.testing.assert_allclose(z[..., 0], np.clip((raw[..., 3] - 5.0) / 2.0, -8, 8), rtol=1e-5)


def test_default_band_mix_is_unchanged_and_single_draws_more_one_band_sets():
  def kinds(mix):
    rng = np.random.default_rng(3)
    return [len(anyband.draw_band_set(rng, mix).channels) == 1 for _ in range(3000)]

  rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
  assert ([anyband.draw_band_set(rng_a) for _ in range(200)]
          == [anyband.draw_band_set(rng_b, "default") for _ in range(200)])
  default, single = np.mean(kinds("default")), np.mean(kinds("single"))
  assert 0.30 < default < 0.42 and single > default + 0.1
  with pytest.raises(ValueError, match="band_mix"):
    anyband.AnyBandSampler([], band_mix="nope")


def test_evaluate_nuisance_statistics_follow_the_mode(monkeypatch):
  """evaluate's per-capture statistics for the mixed modes are `mixed_stats` of the capture."""
  from changesweep.model import evaluate

  seen = []

  class Recorder:
    max_bands = 13

    def prob_fn(self, codes, sb, sa):
      seen.append(sb)
      return lambda b, a: np.zeros(b.shape[:3], np.float32)

    def pad(self, x):
      return x

  x = skewed(64 * 64).reshape(64, 64, 1)
  codes = (norm.CODE_UNKNOWN,)
  monkeypatch.setattr(evaluate, "load_any_capture", lambda uri, bands, k: (x, codes))
  archive = (np.zeros(1, np.float32), np.ones(1, np.float32))
  for mode in ("archive_optical_robust", "archive_optical"):
    evaluate.any_nuisance_check(Recorder(), [type("R", (), {"before": "x.tif"})()], 32, 0.5,
                                None, overlap=0, kinds=("brightness",), archive=archive,
                                optical_only=mode)
  robust, mean_std = seen
  np.testing.assert_allclose(robust[0], norm.capture_stats(x, codes)[0], rtol=1e-6)
  np.testing.assert_allclose(mean_std[0], norm.capture_mean_std(x)[0], rtol=1e-6)
  assert abs(float(robust[0][0]) - float(mean_std[0][0])) > 0.05


def test_multispectral_mix_draws_optical_sets_of_four_or_more_bands():
  rng = np.random.default_rng(0)
  sets = [anyband.draw_band_set(rng, "multispectral") for _ in range(500)]
  optical = [c for b in sets for c in b.codes if c > 0]
  assert min(sum(c > 0 for c in b.codes) for b in sets) >= 4 and optical
  assert all(c > 0 or c == norm.CODE_INDEX for b in sets for c in b.codes)

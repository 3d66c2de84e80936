import numpy as np
import pytest

from changesweep.transforms import preprocessing as pp


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
  rng = np.random.default_rng(0)
  size, bands = 8, 3
  instances, pixels = [], []
  for i in range(6):
    before = rng.normal([10, 100, 1000], [1, 5, 50], (size, size, bands)).astype(np.float32)
    after = rng.normal([12, 90, 1100], [2, 5, 40], (size, size, bands)).astype(np.float32)
    valid = rng.random((size, size)) > 0.3
    before[~valid] = 1e6  # nodata that must not leak into the statistics
    instances.append(pp.make_instance(f"k{i}", before, after, valid.astype(np.float32)))
    pixels += [before[valid], after[valid]]
  out = pp.analyze_to_dir(instances, bands, size, str(tmp_path_factory.mktemp("tft")))
  return out, np.concatenate(pixels), instances, size, bands


def test_per_band_statistics_match_numpy_over_valid_pixels_of_both_captures(analyzed):
  transform_dir, pixels, *_ = analyzed
  mean, std = pp.band_statistics(transform_dir)
  np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=1e-4)
  np.testing.assert_allclose(std, pixels.std(axis=0), rtol=1e-3)


def test_both_captures_are_normalised_with_the_same_statistics(analyzed):
  transform_dir, pixels, instances, size, bands = analyzed
  normalise = pp.load_normalizer(transform_dir)
  inst = instances[0]
  shape = (1, size, size, bands)
  before = inst[pp.BEFORE].reshape(shape)
  after = inst[pp.AFTER].reshape(shape)
  valid = inst[pp.VALID].reshape(shape[:3])
  bn, an = normalise(before, after, valid)
  expected = (after - pixels.mean(0)) / pixels.std(0)
  mask = valid[..., None].astype(bool).repeat(bands, -1)
  np.testing.assert_allclose(an.numpy()[mask], expected[mask], rtol=1e-3, atol=1e-3)
  assert (bn.numpy()[~mask] == 0).all(), "invalid pixels are zeroed, not normalised"
  assert pp.transform_dir_shape(transform_dir) == (bands, size)

import pytest

from changesweep.transforms.bands import BandError, canonical, resolve_bands


def test_aliases_and_short_ids():
  assert canonical("red") == canonical("B4") == canonical("b04") == "B04"


def test_resolve_by_name_in_model_order():
  assert resolve_bands(["red", "green", "blue"], ("B02", "B03", "B04", "B08")) == [2, 1, 0]


def test_resolve_by_index():
  assert resolve_bands(["3", "1"], (None, None, None)) == [2, 0]
  with pytest.raises(BandError, match="out of range"):
    resolve_bands(["5"], (None, None))


def test_unnamed_bands_are_used_in_order_only_when_the_count_matches():
  assert resolve_bands(["red", "green", "blue"], (None, None, None)) == [0, 1, 2]
  with pytest.raises(BandError, match="unnamed"):
    resolve_bands(["red", "green", "blue"], (None, None, None, None))


def test_missing_band_is_an_error_not_a_guess():
  with pytest.raises(BandError, match="absent"):
    resolve_bands(["nir"], ("B02", "B03", "B04"))

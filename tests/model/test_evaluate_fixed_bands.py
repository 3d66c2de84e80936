"""`changesweep evaluate` with a fixed-band model on captures with more bands than it reads."""
from __future__ import annotations

import os

import numpy as np
import pytest

from changesweep.model import bandcodes
from changesweep.model import evaluate
from tests import rasters

S2_13 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
         "B12")


def test_fixed_reader_picks_the_model_bands_by_name(tmp_path):
  data = rasters.scene(3, bands=13)
  path = rasters.write_raster(os.path.join(str(tmp_path), "s2_13.tif"), data,
                              descriptions=S2_13)
  read = evaluate.fixed_capture_reader(("blue", "green", "red", "nir"), None)
  got = read([path])
  want = np.stack([data[S2_13.index(b)] for b in ("B02", "B03", "B04", "B08")], -1)
  np.testing.assert_array_equal(got, want.astype(np.float32))
  # --bands chooses others, still in the model's order
  read = evaluate.fixed_capture_reader(("blue", "green", "red", "nir"),
                                       ["B02", "B03", "B04", "B8A"])
  np.testing.assert_array_equal(read([path])[..., 3], data[S2_13.index("B8A")])


def test_fixed_reader_refuses_missing_or_miscounted_bands(tmp_path):
  data = rasters.scene(4, bands=3)
  path = rasters.write_raster(os.path.join(str(tmp_path), "rgb.tif"), data,
                              descriptions=("B04", "B03", "B02"))
  with pytest.raises(bandcodes.BandInputError, match="not in the capture"):
    evaluate.fixed_capture_reader(("blue", "green", "red", "nir"), None)([path])
  with pytest.raises(bandcodes.BandInputError, match="names 2 bands"):
    evaluate.fixed_capture_reader(("blue", "green", "red", "nir"), ["B02", "B03"])

"""Sweeps with the real default models, no --model: each pair gets the shipped model that fits.

A 3-band archive named red/green/blue is scored by the RGB model; a 4-band Sentinel-2 archive
(the sample: B02, B03, B04, B08) and a 1-band NDVI archive with no band names by the any-band
model, which reads every band; rows say which model scored them.
"""
import glob
import os

import numpy as np
import pytest
import rasterio

from changesweep.pipeline import main as sweep_main
from changesweep.pipeline.sinks import read_jsonl_rows
from tests.conftest import SAMPLE_ARCHIVE, SAMPLE_LABELS  # noqa: F401

ANY = "changesweep-anyband-s2-v3"
MULTI = "changesweep-ensemble-s2-v1"  # the multispectral choice (>= 4 optical bands)
RGB = "changesweep-siamdiff-oscd-rgb-v1"


def ndvi_archive(root):
  """The sample archive's cities as 1-band float32 NDVI files without band descriptions."""
  for path in sorted(glob.glob(os.path.join(SAMPLE_ARCHIVE, "*", "*.tif")))[:4]:
    with rasterio.open(path) as src:
      names = src.descriptions
      nir = src.read(names.index("B08") + 1).astype(np.float32)
      red = src.read(names.index("B04") + 1).astype(np.float32)
      profile = src.profile
    ndvi = (nir - red) / np.maximum(nir + red, 1)
    profile.update(count=1, dtype="float32", nodata=None)
    out = os.path.join(root, os.path.basename(os.path.dirname(path)), os.path.basename(path))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with rasterio.open(out, "w", **profile) as dst:
      dst.write(ndvi[None])
  return str(root)


def rgb_archive(root):
  """The sample archive's first cities as 3-band files (B04, B03, B02 named red, green, blue)."""
  for path in sorted(glob.glob(os.path.join(SAMPLE_ARCHIVE, "*", "*.tif")))[:4]:
    with rasterio.open(path) as src:
      names = src.descriptions
      rgb = np.stack([src.read(names.index(b) + 1) for b in ("B04", "B03", "B02")])
      profile = src.profile
    profile.update(count=3)
    out = os.path.join(root, os.path.basename(os.path.dirname(path)), os.path.basename(path))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with rasterio.open(out, "w", **profile) as dst:
      dst.write(rgb)
      for k, name in enumerate(("red", "green", "blue"), 1):
        dst.set_band_description(k, name)
  return str(root)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("defaults")
  ndvi = ndvi_archive(tmp / "ndvi")
  rgb = rgb_archive(tmp / "rgb")
  out = {}
  for name, archive in (("s2", SAMPLE_ARCHIVE), ("ndvi", ndvi), ("rgb", rgb)):
    o = str(tmp / f"out-{name}")
    out[name] = (o, sweep_main.run(["--input", archive, "--output", o, "--run_id", "t",
                                    "--no_maps"]))
  return out


def test_a_named_4_band_archive_is_scored_by_the_multispectral_model(runs):
  out, summary = runs["s2"]
  rows = read_jsonl_rows(out, "pairs")
  assert len(rows) == 4 and {r["model_id"] for r in rows} == {MULTI}
  used = {m["model_id"]: m["pairs"] for m in summary["models_used"]}
  assert used == {RGB: 0, MULTI: 4, ANY: 0}
  assert all(0 < r["changed_fraction"] < 0.5 for r in rows)


def test_a_3_band_rgb_archive_is_scored_by_the_rgb_model(runs):
  out, summary = runs["rgb"]
  rows = read_jsonl_rows(out, "pairs")
  assert len(rows) == 2 and {r["model_id"] for r in rows} == {RGB}
  used = {m["model_id"]: m["pairs"] for m in summary["models_used"]}
  assert used == {RGB: 2, MULTI: 0, ANY: 0}
  assert all(0 <= r["changed_fraction"] < 0.5 for r in rows)


def test_an_unnamed_1_band_ndvi_archive_is_scored_by_the_any_band_model(runs):
  out, summary = runs["ndvi"]
  rows = read_jsonl_rows(out, "pairs")
  assert len(rows) == 2 and {r["model_id"] for r in rows} == {ANY}
  assert summary["counts"]["dead_letters"] == 0 and summary["accounting"]["ok"]
  used = {m["model_id"]: m["pairs"] for m in summary["models_used"]}
  assert used == {RGB: 0, MULTI: 0, ANY: 2}
  for r in rows:  # real scores: a probability map with some change and mostly none
    assert r["valid_fraction"] > 0.9 and 0.0 <= r["changed_fraction"] < 0.5
    assert r["max_change_prob"] > r["mean_change_prob"]


@pytest.mark.parametrize("names,expected", [
    (("red", "green", "blue"), RGB),                        # RGB only: the RGB model
    (("B02", "B03", "B04", "B08"), MULTI),                  # 4 optical bands: multispectral
    (("B02", "B03", "B08"), ANY),                           # 3 optical, not RGB: any-band
    (("VV", "VH"), ANY),                                    # SAR
    ((None,), ANY),                                         # one unnamed band
])
def test_the_default_choice_follows_the_bands_both_captures_have(names, expected):
  from changesweep.model.model_dir import read_model_info
  from changesweep.pipeline.elements import Pair, SceneRef
  from changesweep.pipeline.options import DEFAULT_FIXED_MODELS, DEFAULT_MULTISPECTRAL_MODEL
  from changesweep.pipeline.sweep import pick_model

  first = [read_model_info(p) for p in (*DEFAULT_FIXED_MODELS, DEFAULT_MULTISPECTRAL_MODEL)]
  scene = lambda t: SceneRef("loc", t, ("a.tif",), names, 64, 64, "uint16", "", (1, 0, 0, 0, -1, 0),
                             None, 0)
  i, _ = pick_model(Pair("p", scene("2020-01-01"), scene("2021-01-01"), (), ()), tuple(first))
  assert ([m.model_id for m in first] + [ANY])[i] == expected

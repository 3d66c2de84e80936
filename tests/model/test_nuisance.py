"""The shipped model stays quiet where nothing changed (nuisance-invariance check).

A real capture (a crop of an OSCD test city) is paired with itself after a brightness/contrast
shift, sensor noise and a one-pixel shift (`model.data.raw_nuisance`); fewer than 1% of its
pixels may be flagged at the model's threshold.
"""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from changesweep.model import data, format as model_format

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
SHIPPED = sorted(d for d in glob.glob(os.path.join(ROOT, "model", "shipped", "*"))
                 if os.path.exists(os.path.join(d, "metadata.json"))
                 and "learned" in open(os.path.join(d, "metadata.json")).read())
CROP = os.path.join(HERE, "data", "montpellier_img1_crop.png")


@pytest.fixture(scope="module", params=SHIPPED or [None])
def shipped(request):
  if request.param is None:
    pytest.skip("no learned model under model/shipped/")
  info = model_format.read_model_info(request.param)
  if info.band_mode == "any":
    return info, _any_band_scorer(request.param, info)
  module = model_format.load_saved_model(info)
  fn = module.signatures["serving_default"]
  return info, lambda b, a: fn(before=tf.constant(b[None]), after=tf.constant(a[None]))[
      "change_prob"].numpy()[0]


def _any_band_scorer(path, info):
  """The crop is an RGB PNG: codes of red, green, blue; statistics as the model was trained
  (per capture, or over the two captures as their archive)."""
  from changesweep.model import bandcodes, evaluate
  from changesweep.transforms import normalization as norm
  scorer = evaluate.AnyBandScorer(path)
  codes = bandcodes.capture_codes([None] * 3, "PNG")

  def score(b, a):
    if info.raw.get("normalization") == "archive":
      both = np.concatenate([b.reshape(-1, 3), a.reshape(-1, 3)])
      sb = sa = (both.mean(0), both.std(0))
    else:
      sb, sa = norm.capture_stats(b, codes), norm.capture_stats(a, codes)
    return scorer.prob_fn(codes, sb, sa)(scorer.pad(b)[None], scorer.pad(a)[None])[0]

  return score


def test_shipped_model_is_small():
  for d in SHIPPED:
    size = sum(os.path.getsize(f) for f in glob.glob(os.path.join(d, "**"), recursive=True)
               if os.path.isfile(f))
    with open(os.path.join(d, "metadata.json")) as f:
      networks = 2 if "ensemble" in json.load(f).get("training", {}) else 1
    assert size < networks * 5 * 2 ** 20, d  # 5 MB per network it holds


def test_capture_with_itself_is_quiet(shipped):
  info, score = shipped
  image = data.read_raster(CROP)
  prob = score(image, image)
  assert (prob >= info.threshold).mean() < 0.001


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nuisance_changes_are_not_flagged(shipped, seed):
  info, score = shipped
  image = data.read_raster(CROP)
  other = data.raw_nuisance(image, np.random.default_rng(seed))
  flagged = (score(image, other) >= info.threshold).mean()
  assert flagged < 0.01, f"{flagged:.2%} of pixels flagged"

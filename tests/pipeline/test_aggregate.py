"""The streaming aggregation gives the rows the whole-pair aggregation gave.

`reference_*` below are the whole-pair functions the sweep used before (stitch the scene, then
summarise and label it): the streaming path must reproduce them from per-chip partials.
"""
import math

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from changesweep.pipeline import aggregate, main as sweep_main, pair_summary, polygons
from changesweep.pipeline.elements import PROB_NODATA, PROB_SCALE
from changesweep.pipeline.sinks import read_jsonl_rows
from changesweep.transforms.tiling import chip_grid, core_slice
from tests.conftest import CVA_MODEL, SAMPLE_ARCHIVE


def reference_summarize(prob, valid, threshold):
  n_valid = int(valid.sum())
  if n_valid == 0:
    return {"valid_fraction": 0.0, "changed_fraction": None, "changed_pixels": 0,
            "mean_change_prob": None, "max_change_prob": None, "change_score": None}
  p = prob[valid].astype(np.float32) / PROB_SCALE
  changed = int((p >= threshold).sum())
  k = max(1, int(math.ceil(0.01 * p.size)))
  top = np.sort(p)[p.size - k:]
  return {"valid_fraction": n_valid / valid.size, "changed_fraction": changed / n_valid,
          "changed_pixels": changed, "mean_change_prob": float(p.mean()),
          "max_change_prob": float(p.max()), "change_score": float(top.mean())}


def reference_regions(prob, valid, threshold, max_regions, min_pixels, side=2048):
  changed = valid & (prob >= int(math.ceil(threshold * PROB_SCALE)))
  factor = max(1, math.ceil(max(changed.shape) / side))
  if factor > 1:
    h, w = changed.shape
    changed = np.pad(changed, ((0, -h % factor), (0, -w % factor)))
    changed = changed.reshape(changed.shape[0] // factor, factor, -1, factor).any(axis=(1, 3))
  labels, n = ndimage.label(changed, structure=np.ones((3, 3), bool))
  if n == 0:
    return []
  areas = np.bincount(labels.ravel())[1:]
  boxes = ndimage.find_objects(labels)
  out = []
  for label in np.argsort(-areas, kind="stable")[:max_regions]:
    if areas[label] * factor * factor < min_pixels:
      break
    rs, cs = boxes[label]
    r0, r1 = rs.start * factor, min(rs.stop * factor, prob.shape[0])
    c0, c1 = cs.start * factor, min(cs.stop * factor, prob.shape[1])
    window = prob[r0:r1, c0:c1][valid[r0:r1, c0:c1]]
    out.append((r0, c0, r1, c1, int(areas[label]) * factor * factor,
                float(window.max()) / PROB_SCALE if window.size else None))
  return out


def streaming(prob, valid, size, overlap, threshold, side=2048):
  """The streaming path on a whole scene: chip by chip, shuffled, as the sweep runs it."""
  h, w = prob.shape
  factor = max(1, math.ceil(max(h, w) / side))
  flags = pair_summary.flag_levels(threshold)
  partials, chip_rows = [], []
  for chip in chip_grid(h, w, size, overlap):
    core = (slice(chip.core_row0, chip.core_row1), slice(chip.core_col0, chip.core_col1))
    partials.append(pair_summary.chip_partial(chip, prob[core], valid[core], factor, flags))
    chip_rows.append(aggregate.summarize(prob[core], valid[core], threshold))
  rng = np.random.default_rng(1)
  order = rng.permutation(len(partials))
  # combine in two halves, as bundles on two workers would
  halves = [pair_summary.merge_partials([partials[i] for i in order[:len(order) // 2]]),
            pair_summary.merge_partials([partials[i] for i in order[len(order) // 2:]])]
  merged = pair_summary.merge_partials(halves)
  pooled = pair_summary.pooled_map(merged, h, w, factor)
  return (pair_summary.summary_from_histogram(merged.hist, h * w, threshold), chip_rows,
          pair_summary.regions_from_pooled(pooled, None, 20, 4), merged)


def random_scene(h, w, seed=0):
  rng = np.random.default_rng(seed)
  prob = ndimage.gaussian_filter(rng.random((h, w)), 6)
  prob = np.clip((prob - prob.min()) / np.ptp(prob) * 1.4 - 0.2, 0, 1)
  prob = np.round(prob * PROB_SCALE).astype(np.uint8)
  valid = rng.random((h, w)) > 0.02
  valid[: h // 7] = False
  return np.where(valid, prob, 0).astype(np.uint8), valid


def assert_summaries_equal(new, old):
  assert new.keys() == old.keys()
  for k in old:
    assert new[k] == pytest.approx(old[k], rel=1e-5, abs=1e-7), k


@pytest.mark.parametrize("h,w,side", [(700, 530, 2048), (613, 900, 128)])
def test_streaming_aggregation_equals_whole_pair_aggregation(h, w, side):
  prob, valid = random_scene(h, w)
  summary, chip_rows, regions, merged = streaming(prob, valid, 128, 16, 0.5, side)
  assert_summaries_equal(summary, reference_summarize(prob, valid, 0.5))
  for chip, row in zip(chip_grid(h, w, 128, 16), chip_rows):
    core = (slice(chip.core_row0, chip.core_row1), slice(chip.core_col0, chip.core_col1))
    assert_summaries_equal(row, reference_summarize(prob[core], valid[core], 0.5))
  got = [(r["row0"], r["col0"], r["row1"], r["col1"], r["area_pixels"], r["max_change_prob"])
         for r in regions]
  assert got == reference_regions(prob, valid, 0.5, 20, 4, side) and got
  assert len(merged.chips) == len(chip_grid(h, w, 128, 16))


@pytest.mark.parametrize("h,w,side", [(700, 530, 2048), (613, 900, 128)])
def test_polygons_from_chip_patches_equal_those_of_the_whole_pooled_map(h, w, side):
  """Patches keep only flagged and rim cells; the polygons (area, mean, max) must not change,
  also where cells are cut by chip borders (side 128: 8 px cells, 112 px chip cores)."""
  prob, valid = random_scene(h, w, seed=3)
  _, _, _, merged = streaming(prob, valid, 128, 16, 0.5, side)
  factor = max(1, math.ceil(max(h, w) / side))
  from_patches = polygons.regions_from_pooled(
      pair_summary.pooled_map(merged, h, w, factor), None, "", max_regions=50, min_pixels=1)
  whole = polygons.regions_from_pooled(polygons.pool_map(prob, valid, 0.5, factor), None, "",
                                       max_regions=50, min_pixels=1)
  assert from_patches == whole and len(whole) > 1


def test_a_mostly_unchanged_chip_sends_its_rim_not_its_whole_patch():
  prob = np.zeros((256, 256), np.uint8)
  prob[100:110, 100:110] = PROB_SCALE
  valid = np.ones_like(prob, bool)
  chip = chip_grid(256, 256, 256, 0)[0]
  patch, = pair_summary.chip_partial(chip, prob, valid, 2, pair_summary.flag_levels(0.5)).patches
  assert patch.shape == (128, 128)
  assert len(patch.cells) == 4 * 127 + 25  # the rim and the 5x5 changed cells


def test_a_chip_that_arrives_twice_is_an_error():
  prob, valid = random_scene(64, 64)
  chip = chip_grid(64, 64, 64)[0]
  p = pair_summary.chip_partial(chip, prob, valid, 1, pair_summary.flag_levels(0.5))
  with pytest.raises(ValueError, match="arrived twice"):
    pair_summary.merge_partials([p, p])


def test_top_score_counts_part_of_a_bin():
  hist = np.zeros(255, np.int64)
  hist[254], hist[100], hist[0] = 3, 10, 287  # 300 valid: the top 1% is 3 px
  s = pair_summary.summary_from_histogram(hist, 400, 0.3)
  assert s["change_score"] == 1.0 and s["changed_pixels"] == 13 and s["valid_fraction"] == 0.75
  hist[254] = 1  # now top 3 = one 254 and two 100s
  s = pair_summary.summary_from_histogram(hist, 400, 0.3)
  assert s["change_score"] == pytest.approx((1 + 2 * np.float32(100) / 254) / 3)


def test_sample_archive_rows_equal_the_whole_pair_aggregation_of_their_maps(tmp_path):
  """The written maps are the stitched scenes: the old aggregation of each gives its row."""
  sweep_main.run(["--input", SAMPLE_ARCHIVE, "--output", str(tmp_path), "--model", CVA_MODEL,
                  "--run_id", "t", "--no_report"])
  pairs = read_jsonl_rows(str(tmp_path), "pairs")
  chips = read_jsonl_rows(str(tmp_path), "chips")
  assert len(pairs) == 4
  for row in pairs:
    with rasterio.open(row["change_map_uri"]) as src:
      encoded = src.read(1)
      assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    valid = encoded != PROB_NODATA
    prob = np.where(valid, encoded, 0).astype(np.uint8)
    old = reference_summarize(prob, valid, row["threshold"])
    assert_summaries_equal({k: row[k] for k in old}, old)
    regions = reference_regions(prob, valid, row["threshold"], 20, 4)
    assert [(r["row0"], r["col0"], r["row1"], r["col1"], r["area_pixels"], r["max_change_prob"])
            for r in row["regions"]] == regions
    for c in (c for c in chips if c["pair_id"] == row["pair_id"]):
      core = (slice(c["row0"], c["row1"]), slice(c["col0"], c["col1"]))
      old = reference_summarize(prob[core], valid[core], row["threshold"])
      assert_summaries_equal({k: c[k] for k in old}, old)

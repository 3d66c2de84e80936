"""Scoring labelled pairs: whole scenes predicted chip by chip, pooled metrics, nuisance checks."""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from changesweep.model import data as pair_data
from changesweep.model import metrics as pair_metrics
from changesweep.model.photometric import NUISANCES, apply_nuisance

ProbFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def predict_scene(prob_fn: ProbFn, before: np.ndarray, after: np.ndarray, size: int,
                  overlap: int = 32, batch_size: int = 4) -> np.ndarray:
  """Change probability `[H, W]` of a whole scene, chip by chip.

  Args:
    prob_fn: `(before [b,S,S,C], after) -> prob [b,S,S]` on numpy arrays.
    before: `[H, W, C]` capture.
    after: `[H, W, C]` capture.
    size: Chip size S.
    overlap: Overlap of neighbouring chips (pixels; at most a quarter of the chip).
    batch_size: Chips per call.
  """
  from changesweep.transforms import tiling
  overlap = min(overlap, size // 4)
  h, w = before.shape[:2]
  b = pair_data.pad_to(before, size, size)
  a = pair_data.pad_to(after, size, size)
  ph, pw = b.shape[:2]
  out = np.zeros((ph, pw), np.float32)
  chips = tiling.chip_grid(ph, pw, size, overlap)
  for i in range(0, len(chips), batch_size):
    group = chips[i:i + batch_size]
    xb = np.stack([b[c.row:c.row + size, c.col:c.col + size] for c in group])
    xa = np.stack([a[c.row:c.row + size, c.col:c.col + size] for c in group])
    prob = np.asarray(prob_fn(xb.astype(np.float32), xa.astype(np.float32)))
    for c, p in zip(group, prob):
      rows, cols = tiling.core_slice(c)
      out[c.core_row0:c.core_row1, c.core_col0:c.core_col1] = p[rows, cols]
  return out[:h, :w]


def block_scores(prob: np.ndarray, label: np.ndarray, block: int,
                 min_changed: float = 0.01) -> tuple[list[float], list[int]]:
  """Per-block mean probability and label (changed if >= min_changed of labelled pixels)."""
  scores, labels = [], []
  h, w = label.shape
  for y in range(0, h, block):
    for x in range(0, w, block):
      lab = label[y:y + block, x:x + block]
      known = lab >= 0
      if known.sum() < 0.25 * block * block:
        continue
      scores.append(float(prob[y:y + block, x:x + block][known].mean()))
      labels.append(int((lab[known] == 1).mean() >= min_changed))
  return scores, labels


def _zscore(x: np.ndarray, pixels: np.ndarray) -> np.ndarray:
  pixels = pixels[np.isfinite(pixels).all(axis=1)]
  mean, std = pixels.mean(0), pixels.std(0)
  std = np.where(std > 1e-6, std, 1.0)
  return ((x - mean) / std).astype(np.float32)


def pair_normalise(before: np.ndarray, after: np.ndarray, per_capture: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Z-scores a pair with per-band statistics over both captures (finite pixels), as the
  sweep does with archive statistics; or each capture with its own (`per_capture`)."""
  c = before.shape[-1]
  if per_capture:
    return _zscore(before, before.reshape(-1, c)), _zscore(after, after.reshape(-1, c))
  both = np.concatenate([before.reshape(-1, c), after.reshape(-1, c)])
  return _zscore(before, both), _zscore(after, both)


class SavedModelScorer:
  """Scores chips with a model directory's SavedModel.

  `signature="serving_default"` takes raw pixels (the model's own transform is applied);
  `signature="normalized"` takes z-scored pixels.
  """

  def __init__(self, model_dir: str, signature: str = "serving_default"):
    from changesweep.model import format as model_format
    self.info = model_format.read_model_info(model_dir)
    self.module = model_format.load_saved_model(self.info)
    self.fn = self.module.signatures[signature]

  def __call__(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    import tensorflow as tf
    out = self.fn(before=tf.constant(before, tf.float32), after=tf.constant(after, tf.float32))
    return out["change_prob"].numpy()


def evaluate_pairs(prob_fn: ProbFn, records: list[pair_data.PairRecord], size: int,
                   threshold: float, overlap: int = 32, auc_block: int = 64,
                   log: Callable[[str], None] | None = None,
                   keep_maps: bool = False, normalise_pairs: bool | str = False,
                   scene_fn: Callable | None = None,
                   read: Callable | None = None) -> dict:
  """Runs `prob_fn` over every pair and returns the metrics dictionary (see module doc).

  With `normalise_pairs`, each pair is z-scored with its own statistics (`pair_normalise`;
  `"capture"`: each capture with its own) before `prob_fn` (which must then take normalised
  chips). `scene_fn(record) -> Pair-like (label) and prob [H, W]`, when given, replaces the
  loading and prediction (the any-band path); `read(paths)`, when given, reads each capture
  (a fixed-band model picking its bands out of a larger capture).
  """
  total = pair_metrics.Confusion()
  per_pair = {}
  pair_scores, pair_labels, blk_scores, blk_labels = [], [], [], []
  maps = {}
  for r in records:
    t0 = time.time()
    if scene_fn is not None:
      pair, prob = scene_fn(r)
    else:
      pair = pair_data.load_pair(r, read or pair_data.read_raster)
      before, after = pair.before, pair.after
      if normalise_pairs:
        before, after = pair_normalise(before, after, normalise_pairs == "capture")
      prob = predict_scene(prob_fn, before, after, size, overlap)
    conf = pair_metrics.Confusion().add(prob >= threshold, pair.label)
    total = total + conf
    scores = conf.scores()
    known = pair.label >= 0
    scores["changed_fraction_predicted"] = float((prob[known] >= threshold).mean())
    scores["changed_fraction_true"] = float((pair.label[known] == 1).mean())
    scores["scene_score"] = float(prob[known].mean())
    per_pair[r.pair_id] = scores
    pair_scores.append(scores["scene_score"])
    pair_labels.append(int(conf.tp + conf.fn > 0))
    s, l = block_scores(prob, pair.label, auc_block)
    blk_scores += s
    blk_labels += l
    if keep_maps:
      maps[r.pair_id] = prob
    if log:
      log(f"{r.pair_id:>14s}  F1 {scores['f1']:.3f}  P {scores['precision']:.3f}  "
          f"R {scores['recall']:.3f}  ({time.time() - t0:.1f}s)")
  result = {"overall": total.scores(), "per_pair": per_pair, "threshold": threshold}
  if len(set(pair_labels)) > 1:
    result["scene_roc_auc"] = pair_metrics.roc_auc(pair_scores, pair_labels)
    result["scene_roc_auc_unit"] = "pair (changed if its mask has changed pixels)"
  else:
    result["scene_roc_auc"] = pair_metrics.roc_auc(blk_scores, blk_labels)
    result["scene_roc_auc_unit"] = (f"{auc_block}x{auc_block} block (all pairs have the same "
                                    f"label; block changed if >=1% of its labelled pixels "
                                    f"change; {sum(blk_labels)}/{len(blk_labels)} changed)")
  if keep_maps:
    result["maps"] = maps
  return result


def nuisance_check(prob_fn: ProbFn, records: list[pair_data.PairRecord], size: int,
                   threshold: float, seed: int = 0, overlap: int = 32) -> dict:
  """Pairs each pair's `before` capture with itself after a nuisance change
  (`data.raw_nuisance`: brightness/contrast shift, noise, one-pixel shift) and reports the
  fraction of pixels flagged (all pixels; nothing changed)."""
  rng = np.random.default_rng(seed)
  flagged, total, per_pair = 0, 0, {}
  for r in records:
    before = pair_data.read_raster(r.before)
    prob = predict_scene(prob_fn, before, pair_data.raw_nuisance(before, rng), size, overlap)
    n = int(np.count_nonzero(prob >= threshold))
    per_pair[r.pair_id] = n / prob.size
    flagged += n
    total += prob.size
  return {"flagged_fraction": flagged / max(total, 1), "per_pair": per_pair, "seed": seed}


def format_table(result: dict) -> str:
  """Human-readable summary of `evaluate_pairs` output."""
  o = result["overall"]
  lines = [f"{'pair':>14s}  {'P':>6s} {'R':>6s} {'F1':>6s} {'IoU':>6s} {'OA':>6s} {'kappa':>6s}"]
  for pid, s in result["per_pair"].items():
    lines.append(f"{pid:>14s}  {s['precision']:6.3f} {s['recall']:6.3f} {s['f1']:6.3f} "
                 f"{s['iou']:6.3f} {s['overall_accuracy']:6.3f} {s['kappa']:6.3f}")
  lines.append(f"{'ALL':>14s}  {o['precision']:6.3f} {o['recall']:6.3f} {o['f1']:6.3f} "
               f"{o['iou']:6.3f} {o['overall_accuracy']:6.3f} {o['kappa']:6.3f}")
  auc = result.get("scene_roc_auc")
  lines.append(f"threshold {result['threshold']:.3f}; scene ROC-AUC "
               f"{'n/a' if auc is None else f'{auc:.3f}'} per {result['scene_roc_auc_unit']}")
  return "\n".join(lines)


def flagged_fractions(scene_prob: Callable, records, threshold: float, kinds: Sequence[str],
                      seed: int = 0, log=None) -> dict:
  """The nuisance checks' tally: for each nuisance `kind`, the fraction of all pixels with
  `p >= threshold` over `scene_prob(record, kind, rng) -> prob [H, W]` of every record."""
  rng = np.random.default_rng(seed)
  out = {}
  for kind in kinds:
    flagged = total = 0
    for r in records:
      prob = scene_prob(r, kind, rng)
      flagged += int(np.count_nonzero(prob >= threshold))
      total += prob.size
    out[kind] = flagged / max(total, 1)
    if log:
      log(f"nuisance {kind}: {out[kind]:.4%} of pixels flagged")
  return {"flagged_fraction": out, "max_flagged_fraction": max(out.values()), "seed": seed}


def fixed_nuisance_check(scorer, records, size: int, threshold: float, read,
                         overlap: int = 32, seed: int = 0, kinds: Sequence[str] = NUISANCES,
                         log=None) -> dict:
  """The issue's nuisance list (`apply_nuisance`) for a fixed-band model: each pair's before
  capture (`read(paths)`) paired with itself after each nuisance, through the model's own
  statistics (`serving_default`); the fraction of pixels flagged per nuisance."""
  def scene_prob(r, kind, rng):
    x = read(r.before)
    return predict_scene(scorer, x, apply_nuisance(x, (), kind, rng), size, overlap)

  return flagged_fractions(scene_prob, records, threshold, kinds, seed, log)

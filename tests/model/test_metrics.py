"""Metrics against hand-computed values."""
import numpy as np
import pytest

from changesweep.model import metrics


def _example():
  # 3x4 map; -1 is ignored. Counts: tp=2, fp=1, fn=1, tn=4 (ignored pixels: 4).
  label = np.array([[1, 1, 1, 0],
                    [0, 0, 0, 0],
                    [-1, -1, -1, -1]])
  pred = np.array([[1, 1, 0, 1],
                   [0, 0, 0, 0],
                   [1, 0, 1, 0]])
  return pred, label


def test_confusion_counts_skip_ignored_pixels():
  pred, label = _example()
  c = metrics.Confusion().add(pred, label)
  assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 1, 4)


def test_scores_match_hand_computation():
  pred, label = _example()
  s = metrics.Confusion().add(pred, label).scores()
  assert s["precision"] == pytest.approx(2 / 3)
  assert s["recall"] == pytest.approx(2 / 3)
  assert s["f1"] == pytest.approx(2 / 3)
  assert s["iou"] == pytest.approx(0.5)
  assert s["overall_accuracy"] == pytest.approx(6 / 8)
  # p_e = (3*3 + 5*5) / 64; kappa = (0.75 - p_e) / (1 - p_e)
  pe = 34 / 64
  assert s["kappa"] == pytest.approx((0.75 - pe) / (1 - pe))


def test_scores_pool_pixels_over_pairs_not_average_per_pair():
  a = metrics.Confusion(tp=9, fp=1, fn=0, tn=90)
  b = metrics.Confusion(tp=0, fp=0, fn=10, tn=90)
  s = (a + b).scores()
  assert s["f1"] == pytest.approx(18 / (18 + 1 + 10))
  assert s["recall"] == pytest.approx(9 / 19)


def test_degenerate_cases_are_zero_not_nan():
  s = metrics.Confusion(tn=10).scores()
  assert s["f1"] == 0.0 and s["precision"] == 0.0 and s["kappa"] == 0.0
  assert s["overall_accuracy"] == 1.0


def test_shape_mismatch_raises():
  with pytest.raises(ValueError, match="differ"):
    metrics.Confusion().add(np.zeros((2, 2)), np.zeros((2, 3)))


def test_roc_auc_hand_value_and_ties():
  assert metrics.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
  assert metrics.roc_auc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)
  assert metrics.roc_auc([0.1, 0.2], [1, 1]) is None


def test_best_threshold_finds_the_separating_cut():
  prob = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
  label = np.array([0, 0, 0, 1, 1, -1])
  t, f1 = metrics.best_threshold(prob, label)
  assert 0.3 <= t < 0.7
  assert f1 == pytest.approx(1.0)


def test_flagged_is_greater_or_equal():
  prob = np.array([0.2, 0.5, 0.50001, 0.8])
  np.testing.assert_array_equal(metrics.flagged(prob, 0.5), [False, True, True, True])


def test_best_threshold_counts_a_score_equal_to_the_cut_as_flagged():
  # The changed pixels score exactly 0.5: only `>=` at 0.5 separates them from 0.2.
  prob = np.array([0.2, 0.2, 0.5, 0.5])
  label = np.array([0, 0, 1, 1])
  t, f1 = metrics.best_threshold(prob, label, candidates=np.array([0.1, 0.5, 0.9]))
  assert t == 0.5 and f1 == pytest.approx(1.0)

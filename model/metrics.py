"""Change-detection metrics over labelled pixels (the OSCD protocol).

All figures are computed from one confusion matrix accumulated over every labelled pixel of
every pair together (not averaged per pair). Pixels labelled -1 (ignored) never count.

One threshold rule everywhere (sweep, evaluation, training, scorer): a pixel is flagged as
changed when `p >= threshold` (`flagged`).
"""
from __future__ import annotations

import dataclasses

import numpy as np


def flagged(prob: np.ndarray, threshold: float) -> np.ndarray:
  """The change map of a probability map: `prob >= threshold` (the one rule of the project).

  Args:
    prob: change probabilities, any shape.
    threshold: the model's threshold.

  Returns:
    A boolean array of `prob`'s shape.
  """
  return np.asarray(prob) >= threshold


@dataclasses.dataclass
class Confusion:
  """Pixel counts of the change class.

  Attributes:
    tp: Changed pixels predicted changed.
    fp: Unchanged pixels predicted changed.
    fn: Changed pixels predicted unchanged.
    tn: Unchanged pixels predicted unchanged.
  """
  tp: int = 0
  fp: int = 0
  fn: int = 0
  tn: int = 0

  def add(self, prediction: np.ndarray, label: np.ndarray) -> "Confusion":
    """Adds a binary prediction against a label map (1 change, 0 no change, -1 ignored)."""
    prediction = np.asarray(prediction).astype(bool)
    label = np.asarray(label)
    if prediction.shape != label.shape:
      raise ValueError(f"prediction {prediction.shape} and label {label.shape} differ")
    known = label >= 0
    pos = label == 1
    self.tp += int(np.count_nonzero(prediction & pos))
    self.fp += int(np.count_nonzero(prediction & known & ~pos))
    self.fn += int(np.count_nonzero(~prediction & pos))
    self.tn += int(np.count_nonzero(~prediction & known & ~pos))
    return self

  def __add__(self, other: "Confusion") -> "Confusion":
    return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                     self.tn + other.tn)

  @property
  def total(self) -> int:
    return self.tp + self.fp + self.fn + self.tn

  def scores(self) -> dict[str, float]:
    """Precision, recall, F1 and IoU of the change class, overall accuracy, Cohen's kappa.

    A ratio whose denominator is zero is reported as 0.0 (kappa: 0.0 when the expected
    agreement is 1).
    """
    tp, fp, fn, tn = (float(v) for v in (self.tp, self.fp, self.fn, self.tn))
    n = tp + fp + fn + tn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    iou = tp / (tp + fp + fn) if tp else 0.0
    oa = (tp + tn) / n if n else 0.0
    expected = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n) if n else 0.0
    kappa = (oa - expected) / (1 - expected) if n and expected < 1 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "iou": iou,
            "overall_accuracy": oa, "kappa": kappa, "tp": self.tp, "fp": self.fp,
            "fn": self.fn, "tn": self.tn}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
  """Area under the ROC curve (Mann-Whitney, ties count half); None if one class is absent."""
  scores = np.asarray(scores, np.float64).ravel()
  labels = np.asarray(labels).astype(bool).ravel()
  n_pos, n_neg = int(labels.sum()), int((~labels).sum())
  if not n_pos or not n_neg:
    return None
  from scipy.stats import rankdata
  ranks = rankdata(scores)
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def best_threshold(prob: np.ndarray, label: np.ndarray,
                   candidates: np.ndarray | None = None) -> tuple[float, float]:
  """The probability threshold maximising F1 of the change class over labelled pixels.

  Returns:
    `(threshold, f1)`. Prediction is `flagged(prob, threshold)`, i.e. `prob >= threshold`.
  """
  prob = np.asarray(prob, np.float32).ravel()
  label = np.asarray(label).ravel()
  known = label >= 0
  prob, pos = prob[known], label[known] == 1
  if candidates is None:
    candidates = np.concatenate([np.linspace(0.02, 0.98, 49), [0.99, 0.995]])
  order = np.sort(candidates)
  pos_counts = np.array([np.count_nonzero(flagged(prob[pos], t)) for t in order])
  neg_counts = np.array([np.count_nonzero(flagged(prob[~pos], t)) for t in order])
  n_pos = int(pos.sum())
  f1 = np.where(pos_counts > 0, 2 * pos_counts / (n_pos + pos_counts + neg_counts + 1e-12), 0)
  i = int(np.argmax(f1))
  return float(order[i]), float(f1[i])

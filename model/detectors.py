"""Detectors on deep-feature differences, as TensorFlow modules that export into a model directory.

Isolation Forest and One-Class SVM (label-free) and a random-forest pair classifier (labelled
chips), fitted with scikit-learn and rewritten as graph ops so the exported SavedModel needs no
scikit-learn at serving time.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def _average_path_length(n: np.ndarray) -> np.ndarray:
  """c(n) of Liu et al.: average path length of an unsuccessful BST search."""
  n = np.asarray(n, np.float64)
  out = np.zeros_like(n)
  out[n == 2] = 1.0
  big = n > 2
  out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
  return out



def _tree_tables(trees, feature_maps, leaf_values):
  """Pads sklearn trees into `[n_trees, max_nodes]` tables (leaves point to themselves)."""
  size = max(t.node_count for t in trees)
  n = len(trees)
  feature = np.zeros((n, size), np.int32)
  threshold = np.zeros((n, size), np.float32)
  left = np.zeros((n, size), np.int32)
  right = np.zeros((n, size), np.int32)
  leaf = np.zeros((n, size), np.float32)
  depth_max = 0
  for i, (t, fmap, values) in enumerate(zip(trees, feature_maps, leaf_values)):
    k = t.node_count
    is_leaf = t.children_left[:k] == -1
    feature[i, :k] = np.where(is_leaf, 0, fmap[np.maximum(t.feature[:k], 0)])
    threshold[i, :k] = t.threshold[:k]
    left[i, :k] = np.where(is_leaf, np.arange(k), t.children_left[:k])
    right[i, :k] = np.where(is_leaf, np.arange(k), t.children_right[:k])
    leaf[i, :k] = np.where(is_leaf, values, 0.0)
    depth_max = max(depth_max, int(t.max_depth))
  return feature, threshold, left, right, leaf, depth_max


def _node_depths(t) -> np.ndarray:
  k = t.node_count
  depth = np.zeros(k, np.int64)
  for node in range(k):  # children always come after parents in sklearn trees
    if t.children_left[node] != -1:
      depth[t.children_left[node]] = depth[node] + 1
      depth[t.children_right[node]] = depth[node] + 1
  return depth


class TreeEnsembleTF(tf.Module):
  """Trees as tensors, traversed in the graph; returns the mean leaf value over trees."""

  def __init__(self, trees, feature_maps, leaf_values, name: str = "trees"):
    super().__init__(name=name)
    feature, threshold, left, right, leaf, depth = _tree_tables(trees, feature_maps,
                                                                leaf_values)
    self.feature = tf.constant(feature)
    self.threshold = tf.constant(threshold)
    self.left = tf.constant(left)
    self.right = tf.constant(right)
    self.leaf_value = tf.constant(leaf)
    self.depth = depth

  def mean_leaf(self, x):
    """Mean over trees of the value of the leaf `x` `[P, F]` reaches -> `[P]`."""
    p = tf.shape(x)[0]
    n_trees = self.feature.shape[0]
    node = tf.zeros([p, n_trees], tf.int32)
    tree_idx = tf.broadcast_to(tf.range(n_trees)[None, :], [p, n_trees])

    def at(table, nd):
      return tf.gather_nd(table, tf.stack([tree_idx, nd], axis=-1))

    for _ in range(self.depth):
      f = at(self.feature, node)
      value = tf.gather(x, f, batch_dims=1)
      go_left = value <= at(self.threshold, node)
      node = tf.where(go_left, at(self.left, node), at(self.right, node))
    return tf.reduce_mean(at(self.leaf_value, node), axis=1)


class IsolationForestTF(TreeEnsembleTF):
  """An sklearn IsolationForest's trees as tensors, traversed in the graph."""

  def __init__(self, forest):
    trees = [e.tree_ for e in forest.estimators_]
    leaf_values = [_node_depths(t) + _average_path_length(t.n_node_samples[:t.node_count])
                   for t in trees]
    super().__init__(trees, forest.estimators_features_, leaf_values, "isolation_forest")
    self.norm = float(_average_path_length(np.array([forest.max_samples_]))[0])

  def __call__(self, x):
    """Anomaly score `2 ** (-E[h] / c(psi))` of `x` `[P, F]` -> `[P]`."""
    return tf.pow(2.0, -self.mean_leaf(x) / self.norm)


class RandomForestTF(TreeEnsembleTF):
  """An sklearn RandomForestClassifier (two classes) as tensors: P(class 1) `[P, F]` -> `[P]`."""

  def __init__(self, forest):
    trees = [e.tree_ for e in forest.estimators_]
    positive = list(forest.classes_).index(1)
    leaf_values = []
    for t in trees:
      v = t.value[:t.node_count, 0, :]
      leaf_values.append(v[:, positive] / np.maximum(v.sum(axis=1), 1e-12))
    identity = [np.arange(forest.n_features_in_)] * len(trees)
    super().__init__(trees, identity, leaf_values, "random_forest")

  def __call__(self, x):
    return self.mean_leaf(x)


class OneClassSVMTF(tf.Module):
  """An sklearn OneClassSVM (RBF kernel) in the graph, as a probability of change.

  `p = sigmoid((s - center) / scale)` with `s = -decision_function(x)`, so `p = 0.5` where the
  anomaly score equals `center`.
  """

  def __init__(self, svm, center: float, scale: float):
    super().__init__(name="one_class_svm")
    if svm.kernel != "rbf":
      raise ValueError(f"only the RBF kernel is exported, not {svm.kernel!r}")
    self.support = tf.constant(np.asarray(svm.support_vectors_, np.float32))
    self.dual = tf.constant(np.asarray(svm.dual_coef_[0], np.float32))
    self.gamma = float(svm._gamma)
    self.intercept = float(svm.intercept_[0])
    self.center = float(center)
    self.scale = float(scale)

  def anomaly(self, x):
    """`-decision_function(x)` of `x` `[P, F]` -> `[P]`."""
    x = tf.convert_to_tensor(x, tf.float32)
    sq = (tf.reduce_sum(tf.square(x), 1)[:, None] + tf.reduce_sum(tf.square(self.support), 1)[None]
          - 2.0 * tf.matmul(x, self.support, transpose_b=True))
    kernel = tf.exp(-self.gamma * tf.maximum(sq, 0.0))
    return -(tf.linalg.matvec(kernel, self.dual) + self.intercept)

  def __call__(self, x):
    return tf.sigmoid((self.anomaly(x) - self.center) / self.scale)

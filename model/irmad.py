"""IR-MAD (iteratively reweighted multivariate alteration detection), as a model directory.

Nielsen, "The Regularized Iteratively Reweighted MAD Method for Change Detection in Multi- and
Hyperspectral Data", IEEE TIP 2007.

Design choice: IR-MAD is fitted **per chip, inside the graph**. For each `S` x `S` chip the
network runs `iterations` rounds of weighted canonical correlation analysis between the two
captures (Cholesky + `eigh` of the whitened cross-covariance), forms the MAD variates
`U_i - V_i` with variances `2 (1 - rho_i)`, their chi-square statistic
`Z = sum_i MAD_i^2 / var_i` (C degrees of freedom) and reweights pixels by the probability
of no change `1 - P_chi2(Z)`. The change probability of a pixel is `P_chi2(Z; C)`.
Fitting per chip is what IR-MAD is designed for (the canonical weights describe one scene's
pair radiometry, so they cannot be carried from one scene to another), keeps the model
stateless, and makes it invariant to any per-band affine change of either capture.

The only parameter fitted on data is the decision threshold on `Z`, chosen to maximise F1 on
the labelled training pairs (`fit_and_export`). Because the chi-square probability saturates
at 1.0 in float32 far below the useful cut (the F1-optimal cut on OSCD lies beyond
P = 1 - 1e-5), the exported network rescales the statistic, `P_chi2(Z * z_scale; C)` with
`z_scale = median(chi2_C) / Z_cut`, so the cut sits at probability 0.5 (the metadata
threshold) and the output is still a monotone chi-square probability. With `z_scale = 1`
(no labels) the classical rule is a probability threshold of 0.99. The transform_fn is
computed on the same pairs (IR-MAD does not need it, being affine invariant, but the model
directory format requires it).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

from changesweep.model import data as pair_data
from changesweep.model import metrics as pair_metrics

QUANTILES = np.concatenate([np.linspace(0.5, 0.98, 25), [0.985, 0.99, 0.995, 0.998, 0.999]])


class IRMADNetwork(tf.Module):
  """`(before, after)` `[b, S, S, C]` -> chi-square change probability `[b, S, S]`."""

  def __init__(self, iterations: int = 10, regularisation: float = 1e-4,
               z_scale: float = 1.0):
    super().__init__(name="irmad")
    self.iterations = iterations
    self.regularisation = regularisation
    self.z_scale = float(z_scale)

  def statistic(self, before, after):
    """Chi-square statistic `Z` `[b, S, S]` and canonical correlations `[b, C]`."""
    before = tf.convert_to_tensor(before, tf.float32)
    after = tf.convert_to_tensor(after, tf.float32)
    shape = tf.shape(before)
    c = before.shape[-1]
    x = tf.reshape(tf.cast(before, tf.float64), [shape[0], -1, c])
    y = tf.reshape(tf.cast(after, tf.float64), [shape[0], -1, c])
    eye = tf.eye(c, dtype=tf.float64) * self.regularisation
    w = tf.ones(tf.shape(x)[:2], tf.float64)
    z = tf.zeros_like(w)
    rho = tf.zeros([shape[0], c], tf.float64)
    dof = tf.cast(c, tf.float64)
    for _ in range(self.iterations):
      sw = tf.reduce_sum(w, axis=1, keepdims=True)[..., None]  # [b,1,1]
      wx = w[..., None]
      mx = tf.reduce_sum(wx * x, axis=1, keepdims=True) / sw
      my = tf.reduce_sum(wx * y, axis=1, keepdims=True) / sw
      xc, yc = x - mx, y - my
      sxx = tf.matmul(xc * wx, xc, transpose_a=True) / sw + eye
      syy = tf.matmul(yc * wx, yc, transpose_a=True) / sw + eye
      sxy = tf.matmul(xc * wx, yc, transpose_a=True) / sw
      lx = tf.linalg.cholesky(sxx)
      ly = tf.linalg.cholesky(syy)
      # Whitened cross-covariance K = Lx^-1 Sxy Ly^-T; its SVD gives the canonical pairs.
      k = tf.linalg.triangular_solve(lx, sxy, lower=True)
      k = tf.transpose(tf.linalg.triangular_solve(ly, tf.transpose(k, [0, 2, 1]), lower=True),
                       [0, 2, 1])
      s, u, v = tf.linalg.svd(k)
      a = tf.linalg.triangular_solve(tf.transpose(lx, [0, 2, 1]), u, lower=False)
      b = tf.linalg.triangular_solve(tf.transpose(ly, [0, 2, 1]), v, lower=False)
      rho = tf.clip_by_value(s, 0.0, 1.0 - 1e-6)
      mad = tf.matmul(xc, a) - tf.matmul(yc, b)  # [b, N, C], var 2(1 - rho)
      var = tf.maximum(2.0 * (1.0 - rho), 1e-6)[:, None, :]
      z = tf.reduce_sum(tf.square(mad) / var, axis=-1)
      w = tf.math.igammac(dof / 2.0, z / 2.0)  # P(no change)
      w = tf.where(tf.math.is_finite(w), w, tf.zeros_like(w)) + 1e-12
    return tf.cast(tf.reshape(z, shape[:3]), tf.float32), tf.cast(rho, tf.float32)

  def __call__(self, before, after):
    z, _ = self.statistic(before, after)
    c = float(before.shape[-1])
    return tf.math.igamma(c / 2.0, z * self.z_scale / 2.0)


def fit_and_export(pairs: str, out_dir: str, data_root: str | None = None,
                   bands: tuple[str, ...] = ("red", "green", "blue"), chip_size: int = 256,
                   model_id: str = "irmad-oscd-rgb", version: str = "1",
                   iterations: int = 10, log=print) -> dict:
  """Chooses the threshold on the labelled pairs of `pairs` and writes a model directory."""
  from changesweep.model import format as model_format
  from changesweep.model.evaluate import predict_scene
  from changesweep.model.train import compute_transform

  records = pair_data.read_manifest(pairs, data_root)
  loaded = [pair_data.load_pair(r) for r in records]
  transform_dir = os.path.join(tempfile.mkdtemp(prefix="irmad-tft-"), "transform_fn")
  mean, std = compute_transform(loaded, len(bands), chip_size, transform_dir)
  from scipy.stats import chi2
  net = IRMADNetwork(iterations)
  fn = tf.function(lambda b, a: net.statistic(b, a)[0], reduce_retracing=True)
  stats, labels = [], []
  for p in loaded:
    z = predict_scene(lambda b, a: fn(tf.constant((b - mean) / std),
                                      tf.constant((a - mean) / std)).numpy(),
                      p.before, p.after, chip_size)
    stats.append(z.ravel())
    labels.append(p.label.ravel())
  z, label = np.concatenate(stats), np.concatenate(labels)
  z_cut, f1 = pair_metrics.best_threshold(z, label, np.quantile(z[label >= 0], QUANTILES))
  scores = pair_metrics.Confusion().add(pair_metrics.flagged(z, z_cut), label).scores()
  z_scale = float(chi2.median(len(bands)) / z_cut)
  net = IRMADNetwork(iterations, z_scale=z_scale)
  log(f"IR-MAD: Z cut {z_cut:.1f} (F1 {f1:.3f} on the fitting pairs), z_scale {z_scale:.4g}")
  info = model_format.export_model_dir(out_dir, net, transform_dir, {
      "model_id": model_id, "version": version, "kind": "irmad", "bands": list(bands),
      "chip_size": chip_size, "threshold": 0.5,
      "description": ("IR-MAD fitted per chip in the graph (Nielsen 2007); change probability "
                      "= chi-square CDF of the MAD statistic rescaled so that the cut on Z "
                      "chosen for F1 on the labelled fitting pairs is at 0.5."),
      "training": {"manifest": os.path.basename(pairs), "pairs": [r.pair_id for r in records],
                   "iterations": iterations, "z_cut": float(z_cut), "z_scale": z_scale,
                   "band_mean": mean.tolist(), "band_std": std.tolist()},
      "metrics": {"fitting_pairs": scores},
  })
  return info.raw


def main(argv: list[str] | None = None) -> int:
  """Entry point: fit the IR-MAD threshold on labelled pairs and write a model directory."""
  parser = argparse.ArgumentParser(
      prog="python -m changesweep.model.irmad",
      description="Write the IR-MAD baseline as a changesweep model directory.",
      epilog="example: python -m changesweep.model.irmad --pairs model/manifests/oscd_train.csv "
             "--data_root ../shared/data --out /tmp/irmad")
  parser.add_argument("--pairs", required=True, help="labelled-pair manifest (threshold fit)")
  parser.add_argument("--out", required=True)
  parser.add_argument("--data_root", default=None)
  parser.add_argument("--bands", default="red,green,blue")
  parser.add_argument("--iterations", type=int, default=10)
  parser.add_argument("--model_id", default="irmad-oscd-rgb")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  fit_and_export(args.pairs, args.out, args.data_root, tuple(args.bands.split(",")),
                 model_id=args.model_id, iterations=args.iterations)
  return 0


if __name__ == "__main__":
  from changesweep.model.entry import exit_after

  exit_after(main)

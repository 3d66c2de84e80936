"""Benchmark 1, pipeline overhead: the whole sweep against the bare model on the same chips.

The sweep runs on the in-process runner with 2 workers (multi_processing) over two synthetic
archives: a 1-pair archive (start-up and the fixed cost of a run) and an N-pair one, each
swept `--repeats` times, interleaved, at its median wall time. Its
throughput is given both over the whole run and at the margin, (chips_N - chips_1) /
(wall_N - wall_1), which is the rate a long sweep settles at. The bare model is the model
directory's `normalized` signature called in a tight loop on the same chips (read and z-scored
beforehand, not timed), in batches of the sweep's batch size, in this process, once before
each repeat's sweeps; the ratios are the median of each repeat's own.

    python bench/overhead.py            # full size (README figures)
    python bench/overhead.py --smoke    # tiny, proves the script runs
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402

TARGET_RATIO = 0.8
CHIP = 256
OVERLAP = 16
BATCH = 8


def read_chips(archive: str, bands: tuple[str, ...], limit: int | None = None):
  """All chips of every pair of `archive`, as z-scored `(before, after)` float32 arrays.

  The statistics are the per-band mean and std over the chips' pixels, as the sweep's archive
  statistics are.
  """
  import numpy as np
  import rasterio
  from rasterio.windows import Window

  from changesweep.transforms import bands as band_names
  from changesweep.transforms import tiling

  before, after = [], []
  for loc in sorted(os.listdir(archive)):
    files = sorted(os.listdir(os.path.join(archive, loc)))
    for b_file, a_file in zip(files, files[1:]):
      with rasterio.open(os.path.join(archive, loc, b_file)) as b, \
          rasterio.open(os.path.join(archive, loc, a_file)) as a:
        idx = [i + 1 for i in band_names.resolve_bands(list(bands), b.descriptions)]
        for chip in tiling.chip_grid(b.height, b.width, CHIP, OVERLAP):
          w = Window(chip.col, chip.row, chip.width, chip.height)
          before.append(np.moveaxis(b.read(idx, window=w, out_dtype="float32"), 0, -1))
          after.append(np.moveaxis(a.read(idx, window=w, out_dtype="float32"), 0, -1))
          if limit and len(before) >= limit:
            break
  before, after = np.stack(before), np.stack(after)
  both = np.concatenate([before, after]).reshape(-1, len(bands))
  mean, std = both.mean(axis=0), both.std(axis=0)
  return (before - mean) / std, (after - mean) / std


def bare_model_rate(model_dir: str, before, after, batch: int = BATCH, min_seconds: float = 0.0
                    ) -> dict:
  """Chips per second of the model's `normalized` signature over the given chips.

  One batch is run first (tracing, allocation); then all chips are scored in order, again
  from the start while less than `min_seconds` have passed.
  """
  import tensorflow as tf

  from changesweep.model.format import NORMALIZED_SIGNATURE

  fn = tf.saved_model.load(os.path.join(model_dir, "saved_model")).signatures[NORMALIZED_SIGNATURE]
  fn(before=tf.constant(before[:batch]), after=tf.constant(after[:batch]))
  n, start = 0, time.perf_counter()
  while True:
    for i in range(0, len(before), batch):
      fn(before=tf.constant(before[i:i + batch]), after=tf.constant(after[i:i + batch]))
      n += len(before[i:i + batch])
    elapsed = time.perf_counter() - start
    if elapsed >= min_seconds:
      break
  return {"chips": n, "seconds": round(elapsed, 3), "chips_per_s": round(n / elapsed, 2),
          "batch": batch, "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}


def run(smoke: bool = False, pairs: int = 12, size: int = 1024, keep: bool = False,
        repeats: int = 3) -> dict:
  import json as _json

  model, model_note = common.model_for_throughput()
  with open(os.path.join(model, "metadata.json")) as f:
    bands = tuple(_json.load(f)["bands"])
  if smoke:
    pairs, size = 2, 256
  workers = 1 if smoke else 2
  tmp = common.scratch("overhead")
  try:
    small = common.write_archive(os.path.join(tmp, "small"), 1, size) if not smoke else None
    big = common.write_archive(os.path.join(tmp, "big"), pairs, size)
    before, after = read_chips(big, bands)
    bares, runs = [], {"small": [], "big": []}
    # a smoke run only proves the script works: one sweep, no marginal rate; a full run
    # repeats the bare model and both sweeps, interleaved, so each repeat's ratio compares
    # rates taken minutes apart (the machine's speed drifts by 10-20% over a bench run)
    for r in range(1 if smoke else repeats):
      bares.append(bare_model_rate(model, before, after, min_seconds=0 if smoke else 10))
      for name, archive in ((("small", small),) if not smoke else ()) + (("big", big),):
        runs[name].append(common.run_sweep(archive, os.path.join(tmp, f"out-{name}-{r}"), model,
                                           workers=workers, maps=True, in_process=smoke))
    del before, after
    sweeps = {name: common.median_run(rs) if rs else None for name, rs in runs.items()}
  finally:
    if not keep:
      common.remove(tmp)
  bare = common.median_item(bares, "chips_per_s")
  bare["chips_per_s_runs"] = [b["chips_per_s"] for b in bares]
  chips_big = sweeps["big"]["counts"]["chips"]
  whole = chips_big / sweeps["big"]["wall_s"]
  marginal = None
  if sweeps["small"]:
    dt = sweeps["big"]["wall_s"] - sweeps["small"]["wall_s"]
    marginal = (chips_big - sweeps["small"]["counts"]["chips"]) / dt if dt > 0 else None
  # each repeat's own ratios (its bare model, its two sweeps), then their median
  marginal_ratios, whole_ratios = [], []
  for i, b in enumerate(bares):
    big_wall = runs["big"][i]["wall_s"]
    whole_ratios.append(chips_big / big_wall / b["chips_per_s"])
    if runs["small"]:
      dt_i = big_wall - runs["small"][i]["wall_s"]
      if dt_i > 0:
        marginal_ratios.append(
            (chips_big - runs["small"][i]["counts"]["chips"]) / dt_i / b["chips_per_s"])
  mp = CHIP * CHIP / 1e6
  ratio = statistics.median(marginal_ratios) if marginal_ratios else None
  return {
      "benchmark": "overhead", "smoke": smoke, "model": os.path.relpath(model, common.ROOT),
      "model_note": model_note, "bands": list(bands),
      "archive": {"pairs": pairs, "scene_px": size, "chips": chips_big,
                  "synthetic": "4-band uint16 GeoTIFF, tiled 256, uncompressed"},
      "workers": workers, "repeats": 1 if smoke else repeats,
      "bare": {**bare, "megapixels_per_s": round(bare["chips_per_s"] * mp, 2)},
      "sweep": {"whole_run_chips_per_s": round(whole, 2),
                "whole_run_megapixels_per_s": round(whole * mp, 2),
                "marginal_chips_per_s": round(marginal, 2) if marginal else None,
                "marginal_megapixels_per_s": round(marginal * mp, 2) if marginal else None,
                "runs": sweeps},
      "ratio_marginal": round(ratio, 3) if ratio else None,
      "ratio_whole_run": round(statistics.median(whole_ratios), 3),
      "ratio_note": "median over repeats of each repeat's ratio (its own bare-model rate and "
                    "sweeps, taken minutes apart); the rates above are the median runs'",
      "ratio_marginal_runs": [round(x, 3) for x in marginal_ratios],
      "ratio_whole_run_runs": [round(x, 3) for x in whole_ratios],
      "target": f"marginal sweep throughput >= {TARGET_RATIO:.0%} of the bare model",
      "target_met": bool(ratio and ratio >= TARGET_RATIO),
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true")
  parser.add_argument("--pairs", type=int, default=12)
  parser.add_argument("--size", type=int, default=1024)
  parser.add_argument("--keep", action="store_true", help="keep the synthetic archives")
  parser.add_argument("--repeats", type=int, default=3, help="sweeps of each archive (median)")
  args = parser.parse_args(argv)
  result = run(args.smoke, args.pairs, args.size, args.keep, args.repeats)
  result["machine"] = common.machine()
  print(json.dumps(result, indent=2))
  print("wrote", common.save("overhead", result, args.smoke))
  return 0


if __name__ == "__main__":
  sys.exit(main())

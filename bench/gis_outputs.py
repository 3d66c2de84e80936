"""Sizes and times of the GIS outputs for a 10980^2 pair: polygons, GeoParquet/GeoJSON, COG, STAC.

    .venv/bin/python bench/gis_outputs.py [--side 10980] [--out /tmp/gis-bench]

The pair is synthetic: a smooth low-probability background, 40 changed fields of 20-200 px and
speckle (0.05% of pixels) that makes many one-pixel regions, the worst case for vectorising.
The pooled map has ceil(side / 2048) px cells (6 at 10980^2: 1830^2 cells), as the streaming
aggregation gives it; the COG is converted from a 256 px tiled, deflated GeoTIFF as the sweep
writes it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import time
import tracemalloc

import numpy as np


def synthetic_map(side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  coarse = (rng.random((side // 256 + 2, side // 256 + 2)) * 30).astype(np.uint8)
  idx = np.arange(side) // 256
  prob = coarse[idx][:, idx]  # blocky low background, 0..30
  for r in range(0, side, 1024):
    prob[r:r + 1024] += rng.integers(0, 8, prob[r:r + 1024].shape, dtype=np.uint8)
  for _ in range(40):
    r, c = rng.integers(0, side - 200, 2)
    h, w = rng.integers(20, 200, 2)
    prob[r:r + h, c:c + w] = rng.integers(160, 255, (h, w), dtype=np.uint8)
  n = int(side * side * 0.0005)
  prob[rng.integers(0, side, n), rng.integers(0, side, n)] = 200
  valid = np.ones(prob.shape, bool)
  valid[:, : side // 50] = False  # a nodata strip at the swath edge
  return prob, valid


def timed(fn, *args, **kw):
  t = time.perf_counter()
  out = fn(*args, **kw)
  return out, time.perf_counter() - t


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--side", type=int, default=10980)
  parser.add_argument("--out", default="/tmp/gis-bench")
  parser.add_argument("--pairs", type=int, default=200, help="items for the STAC timing")
  args = parser.parse_args()
  from pyproj import CRS

  from changesweep.pipeline import aggregate, cog, geoio, polygons, stac
  from changesweep.pipeline.elements import Pair, SceneRef

  shutil.rmtree(args.out, ignore_errors=True)
  os.makedirs(args.out)
  side = args.side
  crs = CRS.from_epsg(32631).to_wkt()
  transform = (10.0, 0.0, 500000.0, 0.0, -10.0, 4800000.0)
  prob, valid = synthetic_map(side)
  factor = max(1, math.ceil(side / 2048))
  pooled, t_pool = timed(polygons.pool_map, prob, valid, 0.5, factor)
  report = {"pooled_map_mb": round(sum(a.nbytes for a in pooled[3:]) / 2**20, 1),
            "side": side, "factor": factor, "cells": list(pooled.flagged.shape),
            "pool_s (test twin; the sweep pools chip by chip)": round(t_pool, 2)}
  for max_regions in (20, 1000):
    tracemalloc.start()
    regions, t = timed(polygons.regions_from_pooled, pooled, transform, crs,
                       max_regions=max_regions, min_pixels=4)
    report[f"regions_peak_alloc_mb[max_regions={max_regions}]"] = round(
        tracemalloc.get_traced_memory()[1] / 2**20, 1)
    tracemalloc.stop()
    report[f"regions_s[max_regions={max_regions}]"] = round(t, 2)
    report[f"regions[max_regions={max_regions}]"] = len(regions)
  union, t = timed(polygons.union_wkt, regions)
  report["union_s"] = round(t, 3)
  report["union_wkt_bytes"] = len(union or "")
  pair_row = {"pair_id": "bench", "location": "loc", "capture_date": "2020-02-01",
              "crs": "EPSG:32631", "model_id": "m", "model_version": "1", "run_id": "r"}
  rows = polygons.region_rows(pair_row, regions)
  report["region_row_json_bytes_mean"] = round(
      np.mean([len(json.dumps(r)) for r in rows]), 1)
  paths, t = timed(geoio.write_regions, args.out, rows, 1)
  report["write_regions_s"] = round(t, 2)
  report["regions_files_bytes"] = {os.path.basename(p): os.path.getsize(p) for p in paths}

  ref = SceneRef("loc", "2020-02-01T10:00:00", ("after.tif",), ("B04",), side, side, "uint16",
                 crs, transform, 0, 1)
  pair = Pair("bench", ref._replace(captured_at="2020-01-01T10:00:00"), ref, (0,), (0,))
  tif = os.path.join(args.out, "map.tif")
  _, t = timed(aggregate.write_change_map, tif, pair, prob, valid)
  report["plain_geotiff_write_s"] = round(t, 2)
  report["plain_geotiff_bytes"] = os.path.getsize(tif)
  del prob, valid
  cog_path = os.path.join(args.out, "map.cog.tif")
  _, t = timed(cog.to_cog, tif, cog_path)
  report["to_cog_s"] = round(t, 2)
  report["cog_bytes"] = os.path.getsize(cog_path)
  report["cog_layout"] = "COG" if cog.is_cog(cog_path) else "not COG"

  grid = stac.Grid(transform, crs, side, side)
  base = {"location": "loc", "before_captured_at": "2020-01-01T10:00:00", "before_uri": "b.tif",
          "after_uri": "a.tif", "change_map_uri": cog_path, "change_score": 0.5,
          "model_id": "m", "model_version": "1", "run_id": "r"}
  night = [{**base, "pair_id": f"p{i:05d}", "after_captured_at": "2020-02-01T10:00:00"}
           for i in range(args.pairs)]
  _, t = timed(stac.write_stac, args.out, night, grids={r["pair_id"]: grid for r in night})
  report[f"write_stac_s[{args.pairs} new items]"] = round(t, 2)
  more = [{**r, "pair_id": f"q{i:05d}"} for i, r in enumerate(night)]
  _, t = timed(stac.write_stac, args.out, more, grids={r["pair_id"]: grid for r in more})
  report[f"write_stac_s[+{args.pairs} onto {args.pairs}]"] = round(t, 2)
  report["stac_item_bytes"] = os.path.getsize(stac.item_href(args.out, "p00000"))
  report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()

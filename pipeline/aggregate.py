"""Scored chips -> chip rows and per-pair partials; partials + pair -> the pair's row and map.

Nothing here holds a pair's pixels: `ReduceChip` turns each chip into its row, its map tile and
a small partial summary (`pipeline.pair_summary`), the partials are combined per pair with
`CombinePerKey`, and `FinishPair` makes the pair row from the combined summary and assembles
the map tile by tile.
"""
from __future__ import annotations

from typing import Any

import apache_beam as beam
import numpy as np

from changesweep.pipeline import change_maps, coregistration, pair_summary, polygons
from changesweep.pipeline.elements import (PROB_SCALE, ChipFailure, ChipKey, ChipScore,
                                           DeadLetter, Pair)
from changesweep.pipeline.metrics import inc_counter
from changesweep.transforms import tiling

STAGE = "aggregate"


def summarize(prob: np.ndarray, valid: np.ndarray, threshold: float) -> dict:
  """Scores of one map (a chip core): fractions, mean/max and the change score.

  Same numbers as `pair_summary.summary_from_histogram`, which the pair rows use.
  """
  p = prob[valid]
  hist = np.bincount(p, minlength=PROB_SCALE + 1)[:PROB_SCALE + 1]
  return pair_summary.summary_from_histogram(hist, valid.size, threshold)


def chip_row(key: ChipKey, chip: tiling.Chip, prob: np.ndarray, valid: np.ndarray,
             threshold: float, run: dict) -> dict:
  return {"pair_id": key.pair_id, "location": key.location, "capture_date": key.capture_date,
          "chip_index": chip.index, "row0": chip.core_row0, "col0": chip.core_col0,
          "row1": chip.core_row1, "col1": chip.core_col1,
          **summarize(prob, valid, threshold), **run}


@beam.typehints.with_output_types(tuple[str, Any])
class ReduceChip(beam.DoFn):
  """`(ChipKey, ChipScore)` -> `(pair_id, Partial)`; chip rows tagged "chips"; map tiles.

  Attributes:
    chip_size, overlap: the chip grid.
    threshold: flagged means `p >= threshold`.
    output: the sweep's output root (tiles go under `maps/_tiles/`); None: no maps.
    run: fields copied into every row (model id and version, run id).
  """

  def __init__(self, chip_size: int, overlap: int, threshold: float, output: str | None,
               run: dict):
    self.chip_size = chip_size
    self.overlap = overlap
    self.threshold = threshold
    self.output = output
    self.run = dict(run)

  def setup(self):
    self._flags = pair_summary.flag_levels(self.threshold)

  def process(self, element):
    key, score = element
    grid = tiling.chip_grid(key.height, key.width, self.chip_size, self.overlap)
    chip = grid[score.chip_index]
    rows, cols = tiling.core_slice(chip)
    prob, valid = score.prob[rows, cols], score.valid[rows, cols]
    yield beam.pvalue.TaggedOutput("chips", chip_row(key, chip, prob, valid, self.threshold,
                                                     self.run))
    if self.output:
      change_maps.write_tile(change_maps.tile_path(self.output, key.pair_id, chip.index),
                             pair_summary.encode_tile(prob, valid))
    factor = pair_summary.pool_factor(key.height, key.width)
    yield key.pair_id, pair_summary.chip_partial(chip, prob, valid, factor, self._flags)


def failure_dead_letter(pair: Pair, failures: list[ChipFailure]) -> DeadLetter:
  """One dead letter for a pair with failed chips, filed under its after capture.

  Each capture is accounted for once: as the first capture of its location or as the after
  capture of one pair; the reason names the pair's before capture too.
  """
  first = sorted(failures)[0]
  stage = "scoring" if first.reason.startswith("inference failed") else "chips"
  return DeadLetter(pair.after.uri, stage,
                    f"pair with {pair.before.uri}: {first.reason} ({len(failures)} chip(s) failed)",
                    pair.location, pair.pair_id)


def crs_name(wkt: str) -> str | None:
  if not wkt:
    return None
  import rasterio

  c = rasterio.crs.CRS.from_wkt(wkt)
  return c.to_string() if c.to_epsg() else wkt


class FinishPair(beam.DoFn):
  """`(pair_id, {pair, summary, failed})` -> pair row, region rows ("regions"), dead letter, map.

  The pair row's `regions` are the largest boxes (as before); the region rows are polygons of
  the pooled map (`pipeline.polygons`), up to `max_polygons` a pair, and the row's `geometry`
  is their union in WGS84.

  Attributes:
    chip_size, overlap, threshold, run: as for `ReduceChip`.
    output: the output root, or None when no maps are written.
    max_regions, min_region_pixels: region rows kept per pair.
  """

  def __init__(self, chip_size: int, overlap: int, threshold: float, output: str | None,
               run: dict, max_regions: int, min_region_pixels: int, max_polygons: int = 1000):
    self.chip_size = chip_size
    self.overlap = overlap
    self.threshold = threshold
    self.output = output
    self.run = dict(run)
    self.max_regions = max_regions
    self.min_region_pixels = min_region_pixels
    self.max_polygons = max_polygons

  def process(self, element):
    pair_id, joined = element
    pairs = list(joined["pair"])
    if not pairs:  # chips of a pair that was never planned cannot happen; guard anyway
      return
    pair = pairs[0]
    failures = list(joined["failed"])
    if failures:
      if self.output:
        change_maps.delete_tiles(self.output, pair_id)
      yield beam.pvalue.TaggedOutput("dead", failure_dead_letter(pair, failures))
      return
    h, w = pair.height, pair.width
    planned = len(tiling.chip_grid(h, w, self.chip_size, self.overlap))
    partials = list(joined["summary"])
    partial = (pair_summary.merge_partials(partials) if partials
               else pair_summary.empty_partial())
    if len(partial.chips) != planned:
      inc_counter(STAGE, "pairs_with_missing_chips")
      yield beam.pvalue.TaggedOutput("dead", DeadLetter(
          pair.after.uri, STAGE, f"pair with {pair.before.uri}: {len(partial.chips)} of "
          f"{planned} chips were scored", pair.location, pair_id))
      return
    summary = pair_summary.summary_from_histogram(partial.hist, h * w, self.threshold)
    if summary["changed_fraction"] is None:
      inc_counter(STAGE, "pairs_without_valid_pixels")
      if self.output:
        change_maps.delete_tiles(self.output, pair_id)
      yield beam.pvalue.TaggedOutput("dead", DeadLetter(
          pair.after.uri, STAGE, f"pair with {pair.before.uri}: no pixel is valid in both "
          "captures (all nodata, masked or not finite)", pair.location, pair_id))
      return
    factor = pair_summary.pool_factor(h, w)
    pooled = pair_summary.pooled_map(partial, h, w, factor)
    transform = pair.transform if pair.crs else None
    shapes = polygons.regions_from_pooled(pooled, transform, pair.crs,
                                          max_regions=self.max_polygons,
                                          min_pixels=self.min_region_pixels)
    regions = pair_summary.regions_from_pooled(pooled, transform, self.max_regions,
                                               self.min_region_pixels)
    del pooled  # the map is written next; it need not share the worker with the pooled map
    map_uri = None
    if self.output:
      map_uri = change_maps.assemble_map(self.output, pair, self.chip_size, self.overlap)
      inc_counter(STAGE, "maps_written")
    inc_counter(STAGE, "pairs_scored")
    row = {
        "pair_id": pair_id, "location": pair.location,
        "capture_date": pair.after.captured_at[:10],
        "before_captured_at": pair.before.captured_at,
        "after_captured_at": pair.after.captured_at,
        "before_uri": pair.before.uri, "after_uri": pair.after.uri,
        "height": h, "width": w, "crs": crs_name(pair.crs),
        **summary, "threshold": self.threshold, "num_chips": planned,
        "regions": regions,
        "geometry": polygons.union_wkt(shapes), "change_map_uri": map_uri,
        **coregistration.pair_row_fields(pair), **self.run}
    yield row
    for region in polygons.region_rows(row, shapes):
      yield beam.pvalue.TaggedOutput("regions", region)

"""Pair consecutive captures per location: a metadata-only shuffle, never pixels."""
from __future__ import annotations

import collections
import math
from typing import Iterable, NamedTuple

import apache_beam as beam

from changesweep.pipeline import band_slots
from changesweep.pipeline.elements import (CaptureRecord, DeadLetter, FirstCapture, Pair, SceneRef,
                                           make_pair_id)
from changesweep.pipeline.listing import CaptureFile
from changesweep.pipeline.metrics import inc_counter
from changesweep.pipeline.rasters import PixelReadError, RasterError
from changesweep.transforms.band_grid import BandGridError, Grid, finest
from changesweep.transforms.bands import BandError

STAGE = "pairing"


def assemble_captures(location: str, files: Iterable[CaptureFile]
                      ) -> tuple[list[SceneRef], list[DeadLetter]]:
  """Joins the files of each capture time into captures (one file, or one file per band).

  Conflicts keep one and dead-letter the rest, the first by uri, so reruns keep the same one
  and every file is accounted for: two single-file captures at the same time; two files of
  the same band; band files and single files at the same time (the band files are kept).
  """
  by_time = collections.defaultdict(list)
  for f in files:
    by_time[f.captured_at].append(f)
  scenes, dead = [], []
  for captured_at, group in sorted(by_time.items()):
    group.sort(key=lambda f: (f.band or "", f.uri))
    banded = [f for f in group if f.band is not None]
    if banded:
      kept = {}
      for f in banded:
        if f.band in kept:
          dead.append(DeadLetter(f.uri, STAGE, f"two files give band {f.band!r} of {location} "
                                 f"at {captured_at}; kept {kept[f.band].uri}", location))
        else:
          kept[f.band] = f
      banded = list(kept.values())
      names = [f.band for f in banded]
      dead += [DeadLetter(f.uri, STAGE, f"a single file and band files give {location} at "
                          f"{captured_at}; kept the band files", location)
               for f in group if f.band is None]
      first = banded[0].meta
      grid, why = _band_grid(banded)
      if why:
        dead.append(DeadLetter(";".join(f.uri for f in banded), STAGE, why, location))
        continue
      # The `--mask_band` file (e.g. SCL) stays among the files, so it is accounted for with
      # its capture, and masks the capture's pixels; it is no band the model can ask for.
      mask_file = next((f.uri for f in banded if f.is_mask), None)
      scenes.append(SceneRef(location, captured_at, tuple(f.uri for f in banded), tuple(names),
                             grid.height, grid.width, first.dtype, grid.crs, grid.transform,
                             first.nodata, sum(max(f.size_bytes, 0) for f in banded),
                             **{**_stats_fields(banded),
                                **({"mask_uri": mask_file} if mask_file else {})}))
      continue
    keep, *others = group
    dead += [DeadLetter(f.uri, STAGE, f"same location and capture time as {keep.uri} "
                        f"({captured_at}); kept that one", location) for f in others]
    m = keep.meta
    scenes.append(SceneRef(location, captured_at, (keep.uri,), m.descriptions, m.height, m.width,
                           m.dtype, m.crs, m.transform, m.nodata, max(keep.size_bytes, 0),
                           **_stats_fields([keep])))
  return scenes, dead


def _band_grid(files: list[CaptureFile]) -> tuple[object | None, str | None]:
  """The header of the band file whose grid a capture is read on (the finest), or why none.

  Band files of one capture may differ in resolution (Sentinel-2's 10/20/60 m): they are read
  on the finest one's grid, bilinear (`transforms.band_grid`), if they cover the same extent.
  """
  if any(f.meta.count != 1 for f in files):
    return None, "band files of one capture must be single-band rasters"
  grids = [Grid(f.meta.crs, f.meta.transform, f.meta.height, f.meta.width) for f in files]
  try:
    return files[finest(grids)].meta, None
  except BandGridError as e:
    return None, str(e)


def _stats_fields(files: list[CaptureFile]) -> dict:
  """Usability of a capture from its files' statistics (the least usable file decides)."""
  if any(f.stats is None for f in files):
    return {"mask_uri": files[0].mask_uri, "mask_band": files[0].mask_band}
  robust = all(len(f.stats.band_medians) == len(f.stats.band_means) for f in files)
  return {"usable_fraction": min(f.stats.usable_fraction for f in files),
          "band_means": tuple(v for f in files for v in f.stats.band_means),
          "band_stds": tuple(v for f in files for v in f.stats.band_stds),
          # robust statistics only where every file has them (not from an older state)
          "band_medians": tuple(v for f in files for v in f.stats.band_medians) if robust else (),
          "band_mads": tuple(v for f in files for v in f.stats.band_mads) if robust else (),
          "mask_uri": files[0].mask_uri, "mask_band": files[0].mask_band}


def grid_mismatch(a: SceneRef, b: SceneRef, bands_a: tuple, bands_b: tuple) -> str | None:
  """Why two captures cannot be compared pixel for pixel, or None if they can."""
  if (a.height, a.width) != (b.height, b.width):
    return f"shape {b.height}x{b.width} differs from the previous capture's {a.height}x{a.width}"
  if a.crs != b.crs:
    return "CRS differs from the previous capture's"
  if not all(math.isclose(x, y, rel_tol=0, abs_tol=1e-6 * max(1.0, abs(x)))
             for x, y in zip(a.transform, b.transform)):
    return f"geotransform {b.transform} differs from the previous capture's {a.transform}"
  if a.dtype != b.dtype:
    return f"data type {b.dtype} differs from the previous capture's {a.dtype}"
  if len(bands_a) != len(bands_b):
    return f"band count {len(bands_b)} differs from the previous capture's {len(bands_a)}"
  return None


class GridOptions(NamedTuple):
  """`--grid`, `--min_overlap` and `--resampling` (see `pipeline.grids`)."""
  spec: str = "earlier"
  min_overlap: float = 0.2
  resampling: str = "bilinear"


def common_grid(a: SceneRef, b: SceneRef, bands_a: tuple, bands_b: tuple, options: GridOptions
                ) -> tuple[object | None, str | None]:
  """`(None, None)` when the captures share a grid, `(PairGrid, None)` when one is warped onto
  the pair's grid, `(None, reason)` when they cannot be compared."""
  from changesweep.pipeline import grids

  if len(bands_a) != len(bands_b):
    return None, f"band count {len(bands_b)} differs from the previous capture's {len(bands_a)}"
  spec = grids.parse_grid_option(options.spec)
  if spec.source == "earlier" and grid_mismatch(a, b, bands_a, bands_b) is None:
    return None, None  # the common case: one grid, no warp
  try:
    plan = grids.plan_common_grid(a, b, spec, options.min_overlap,
                                  resampling=grids.parse_resampling(options.resampling))
  except Exception as e:  # a CRS GDAL cannot read, a degenerate transform: this pair, not the run
    return None, f"no common grid ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
  if isinstance(plan, str):
    return None, plan
  return (None if plan.no_warp else plan), None


def capture_record(scene: SceneRef, bands: tuple) -> CaptureRecord | None:
  """The history record of a usable capture: statistics of the model's bands."""
  stats = [band_slots.band_stats(scene, b) for b in bands]
  if not scene.band_means or None in stats:
    return None
  return CaptureRecord(scene.location, scene.captured_at, scene.uri, scene.usable_fraction,
                       tuple(m for m, _ in stats), tuple(s for _, s in stats))


def pair_series(location: str, files: Iterable[CaptureFile], bands: tuple[str, ...],
                min_usable: float = 0.0, max_bands: int = 0, grids: GridOptions | None = None,
                mask_values: tuple[int, ...] = ()
                ) -> Iterable[Pair | FirstCapture | DeadLetter | CaptureRecord]:
  """Consecutive pairs of one location's captures, sorted by time.

  Every capture ends up in exactly one place: the first usable one as a `FirstCapture`, each
  later one as the `after` of a `Pair`, or as a `DeadLetter` with the reason. A capture whose
  bands cannot feed the model, or whose usable fraction (valid, cloud-free pixels) is below
  `min_usable`, is skipped, so the next capture pairs with the last usable one. Each usable
  capture also yields its `CaptureRecord` for the location's history.

  With `max_bands` (an any-band model), a capture feeds every band it has that can be
  identified (or the `bands` asked for), and a pair the identities both captures share.
  An index asked for (NDVI, NDWI, NBR) that a capture lacks is derived from its source bands
  (`transforms.bands.plan_bands`); its statistics are read here, on the usability pass's
  decimated grid (`mask_values` as `--mask_values`).

  Captures on different grids (CRS, resolution, extent or alignment) are paired on a common
  grid (`pipeline.grids.plan_common_grid`, by default the earlier capture's) unless they cannot
  be compared (no or too little overlap, no georeference, resolutions too far apart).
  """
  grids = grids or GridOptions()
  scenes, dead = assemble_captures(location, files)
  yield from dead
  previous, previous_bands, previous_sel = None, None, None
  for scene in scenes:
    try:
      if max_bands:
        sel = band_slots.select_bands(scene, bands or None, max_bands)
        scene_bands = tuple(sel[0])
      else:
        sel, scene_bands = None, tuple(band_slots.plan_fixed(scene, bands))
    except BandError as e:
      yield DeadLetter(scene.uri, STAGE, str(e), location)
      continue
    if scene.usable_fraction < min_usable or scene.usable_fraction == 0:
      yield DeadLetter(scene.uri, "usability",
                       f"unusable: {100 * scene.usable_fraction:.1f}% of pixels are valid "
                       f"(nodata, cloud or masked), below the {100 * min_usable:.0f}% needed",
                       location)
      continue
    try:  # a derived band's statistics, from the usability pass's decimated read
      scene = band_slots.with_derived_stats(scene, scene_bands, mask_values)
    except (RasterError, PixelReadError) as e:
      yield DeadLetter(scene.uri, "usability", str(e), location)
      continue
    if previous is None:
      yield FirstCapture(location, scene.captured_at, scene.uri)
    else:
      slots = band_slots.slots_for_pair(previous_sel, sel) if max_bands else None
      pair_id = make_pair_id(previous, scene)
      before_bands = slots.before if slots and not isinstance(slots, str) else previous_bands
      after_bands = slots.after if slots and not isinstance(slots, str) else scene_bands
      grid, why = None, slots if isinstance(slots, str) else None
      if why is None:
        grid, why = common_grid(previous, scene, before_bands, after_bands, grids)
      if why:
        yield DeadLetter(scene.uri, STAGE, f"not comparable with {previous.uri}: {why}",
                         location, pair_id)
      elif slots:
        yield Pair(pair_id, previous, scene, slots.before, slots.after, slots.names, slots.codes,
                   grid)
      else:
        yield Pair(pair_id, previous, scene, previous_bands, scene_bands, grid=grid)
    record = capture_record(scene, scene_bands)
    if record is not None:
      yield record
    previous, previous_bands, previous_sel = scene, scene_bands, sel


class PairConsecutive(beam.PTransform):
  """`CaptureFile`s -> `(pairs, first_captures, dead_letters, capture_records)` by location."""

  def __init__(self, bands: tuple[str, ...], min_usable: float = 0.0, max_bands: int = 0,
               grids: GridOptions | None = None, mask_values: tuple[int, ...] = ()):
    super().__init__()
    self.mask_values = tuple(mask_values)
    self.grids = grids or GridOptions()
    if not bands and not max_bands:
      raise ValueError("the model's input bands must be known to pair captures")
    self.max_bands = max_bands
    if not 0.0 <= min_usable <= 1.0:
      raise ValueError(f"min_usable_fraction must be in 0..1, got {min_usable}")
    self.bands = tuple(bands or ())
    self.min_usable = min_usable

  def expand(self, files):
    bands, min_usable, max_bands, grids = self.bands, self.min_usable, self.max_bands, self.grids
    mask_values = self.mask_values
    counters = {"Pair": "pairs_emitted", "FirstCapture": "first_captures",
                "DeadLetter": "captures_rejected", "CaptureRecord": "usable_captures"}

    def pair(location, group):
      for out in pair_series(location, group, bands, min_usable, max_bands, grids, mask_values):
        kind = type(out).__name__
        inc_counter(STAGE, counters[kind])
        yield beam.pvalue.TaggedOutput(kind, out)

    out = (files
           | "KeyByLocation" >> beam.Map(lambda f: (f.location, f))
           | "GroupByLocation" >> beam.GroupByKey()
           | "PairSeries" >> beam.FlatMapTuple(pair).with_outputs(
               "Pair", "FirstCapture", "DeadLetter", "CaptureRecord"))
    return out.Pair, out.FirstCapture, out.DeadLetter, out.CaptureRecord

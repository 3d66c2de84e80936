"""Each location's own history: how unusual is tonight's change for this place at this time of year.

The history is compact: one record per usable capture (per-band statistics of its valid pixels)
and the change score of the pair that ends at it; never pixels. A pair is scored against the
records *before* its later capture only, so a nightly run that reads last night's history gives
the same scores as one run over all nights.

Methods, by how much history there is:
- `seasonal` (a year or more, `SEASONAL_MIN_CAPTURES` usable captures): per band, a harmonic
  regression of the capture's band mean over time (mean, trend, annual cosine and sine, in the
  spirit of CCDC) fitted on the past captures. The pair's anomaly is the largest jump, over bands,
  between the two captures' departures from the fit, in units of the fit's residual spread. The
  season's normal swing is what the fit predicts, so it does not count; clouds and nodata never
  enter the statistics.
- `robust` (at least `ROBUST_MIN_PAIRS` past pairs): the robust z-score of the pair's change
  score against the past pairs' scores (median and MAD).
- `none`: too little history; `anomaly_score` is null.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from typing import Iterable, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio

from changesweep.pipeline import times
from changesweep.pipeline.elements import CaptureRecord
from changesweep.pipeline.metrics import inc_counter

SEASONAL_MIN_DAYS = 365
SEASONAL_MIN_CAPTURES = 12
ROBUST_MIN_PAIRS = 3
_YEAR_DAYS = 365.25
_MAD_TO_SIGMA = 1.4826
_MIN_SPREAD = 1e-3


def _years(iso: str) -> float:
  t = times.to_datetime(iso)
  return (t - dt.datetime(2000, 1, 1)).total_seconds() / 86400 / _YEAR_DAYS


def harmonic_design(years: np.ndarray) -> np.ndarray:
  """Columns: intercept, linear trend, annual cosine and sine."""
  w = 2 * math.pi * years
  return np.stack([np.ones_like(years), years - years.mean(), np.cos(w), np.sin(w)], axis=1)


def seasonal_departures(past: list[CaptureRecord], targets: list[CaptureRecord]
                        ) -> tuple[np.ndarray, np.ndarray]:
  """Fits the harmonic model on `past` and returns the targets' residuals and the fit's spread.

  Returns:
    `(residuals [len(targets), bands], spread [bands])`.
  """
  t = np.array([_years(r.captured_at) for r in past])
  y = np.array([r.band_means for r in past], np.float64)
  centre = t.mean()
  design = harmonic_design(t)
  coef, *_ = np.linalg.lstsq(design, y, rcond=None)
  dof = max(1, len(past) - design.shape[1])
  spread = np.sqrt(((y - design @ coef) ** 2).sum(axis=0) / dof)
  spread = np.maximum(spread, _MIN_SPREAD * np.maximum(np.abs(y).mean(axis=0), 1.0))
  tt = np.array([_years(r.captured_at) for r in targets])
  w = 2 * math.pi * tt
  target_design = np.stack([np.ones_like(tt), tt - centre, np.cos(w), np.sin(w)], axis=1)
  ty = np.array([r.band_means for r in targets], np.float64)
  return ty - target_design @ coef, spread


def robust_z(value: float, past: list[float]) -> float:
  median = float(np.median(past))
  mad = float(np.median(np.abs(np.asarray(past) - median)))
  return (value - median) / max(_MAD_TO_SIGMA * mad, 0.01)


def pair_anomaly(before: CaptureRecord, after: CaptureRecord, past: list[CaptureRecord]
                 ) -> tuple[float | None, str]:
  """Anomaly of the pair `(before, after)` given the records strictly before `after`."""
  span_days = 0.0
  if past:
    span_days = (times.to_datetime(past[-1].captured_at)
                 - times.to_datetime(past[0].captured_at)).days
  if span_days >= SEASONAL_MIN_DAYS and len(past) >= SEASONAL_MIN_CAPTURES:
    residuals, spread = seasonal_departures(past, [before, after])
    jump = np.abs(residuals[1] - residuals[0]) / (spread * math.sqrt(2))
    return float(jump.max()), "seasonal"
  scores = [r.change_score for r in past if r.change_score is not None]
  if len(scores) >= ROBUST_MIN_PAIRS and after.change_score is not None:
    return robust_z(after.change_score, scores), "robust"
  return None, "none"


def merge_records(prior: Iterable[CaptureRecord], tonight: Iterable[CaptureRecord]
                  ) -> list[CaptureRecord]:
  """Tonight's records win over the prior history's for the same capture; sorted by time."""
  merged = {r.captured_at: r for r in prior}
  for r in tonight:
    old = merged.get(r.captured_at)
    if old is not None and r.pair_id is None and old.pair_id is not None:
      r = r._replace(pair_id=old.pair_id, change_score=old.change_score,
                     anomaly_score=old.anomaly_score, anomaly_method=old.anomaly_method)
    merged[r.captured_at] = r
  return [merged[k] for k in sorted(merged)]


def score_location(records: list[CaptureRecord], pair_rows: list[dict]
                   ) -> tuple[list[dict], list[CaptureRecord]]:
  """Adds `anomaly_score`, `anomaly_method` and `history_length` to tonight's pair rows.

  Args:
    records: the location's usable captures (prior history merged with tonight's), sorted.
    pair_rows: tonight's scored pairs of the location.

  Returns:
    The pair rows with anomaly fields, and the updated records (the next night's history).
  """
  by_time = {r.captured_at: i for i, r in enumerate(records)}
  records = list(records)
  for row in pair_rows:
    i = by_time.get(row["after_captured_at"])
    if i is not None:
      records[i] = records[i]._replace(pair_id=row["pair_id"], change_score=row["change_score"])
  out = []
  for row in sorted(pair_rows, key=lambda r: r["after_captured_at"]):
    i = by_time.get(row["after_captured_at"])
    j = by_time.get(row["before_captured_at"])
    if i is None or j is None:  # cannot happen for pairs of usable captures; stay explicit
      score, method, past_len = None, "none", 0
    else:
      past = records[:i]
      score, method = pair_anomaly(records[j], records[i], past)
      past_len = len(past)
      records[i] = records[i]._replace(anomaly_score=score, anomaly_method=method)
    out.append({**row, "anomaly_score": score, "anomaly_method": method,
                "history_length": past_len})
  return out, records


def history_pattern(path: str) -> str:
  """`--history` is a previous sweep's output folder, or a file pattern of history rows."""
  if path.endswith((".jsonl", ".json")) or "*" in path:
    return path
  return path.rstrip("/") + "/history/history-*.jsonl"


class _ScoreLocations(beam.DoFn):
  """One location's pair rows, tonight's records and prior history -> scored rows + history."""

  def __init__(self, run_id: str):
    self.run_id = run_id

  def process(self, element):
    _, groups = element
    records = merge_records(groups["prior"], groups["records"])
    rows, updated = score_location(records, list(groups["pairs"]))
    for row in rows:
      inc_counter("history", f"anomaly_{row['anomaly_method']}")
      yield row
    for record in updated:
      yield beam.pvalue.TaggedOutput("history", record.to_row(self.run_id))


class ScoreAgainstHistory(beam.PTransform):
  """`(pair rows, capture records)` -> `(pair rows with anomaly fields, history rows)`.

  Groups by location the pair rows, tonight's capture records and the prior history (if
  `prior` names one), and scores each pair against its location's past.
  """

  def __init__(self, prior: str | None, run_id: str):
    super().__init__()
    self.prior = prior
    self.run_id = run_id

  def expand(self, inputs):
    pair_rows, records = inputs
    p = pair_rows.pipeline
    if self.prior:
      prior = (p
               | "MatchHistory" >> fileio.MatchFiles(history_pattern(self.prior))
               | "ReadHistory" >> fileio.ReadMatches()
               | "ParseHistory" >> beam.FlatMap(lambda f: [
                   CaptureRecord.from_row(json.loads(line))
                   for line in f.read_utf8().splitlines() if line.strip()]))
    else:
      prior = p | "NoPriorHistory" >> beam.Create([])
    out = ({"pairs": pair_rows | "KeyPairRows" >> beam.Map(lambda r: (r["location"], r)),
            "records": records | "KeyRecords" >> beam.Map(lambda r: (r.location, r)),
            "prior": prior | "KeyPrior" >> beam.Map(lambda r: (r.location, r))}
           | "GroupByLocation" >> beam.CoGroupByKey()
           | "ScoreLocations" >> beam.ParDo(_ScoreLocations(self.run_id)).with_outputs(
               "history", main="pairs"))
    return out.pairs, out.history

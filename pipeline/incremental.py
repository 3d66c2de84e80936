"""Incremental sweeps: score only pairs whose later capture is newer than the location's state.

The state is a JSONL file (local or gs://), one line per location::

  {"location": "dubai", "last_captured_at": "2018-03-30T00:00:00", "run_id": "sweep-..."}

`last_captured_at` is the latest capture of the location that a sweep has accounted for: the
`after` of a pair that was scored, or the location's first capture. Tonight's sweep still lists
and pairs the whole series, so a new capture pairs with its previous capture even when that one
came before the last run; then a pair is kept only if its `after` is newer than the state
(`--force` keeps them all) and, with `--since DATE`, on or after DATE. The state is rewritten at
the end of the run from the pairs that were scored, so a pair that failed is tried again next
night.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Iterable, NamedTuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from changesweep.pipeline.elements import FirstCapture, Pair
from changesweep.pipeline.metrics import inc_counter

STAGE = "incremental"


class LocationState(NamedTuple):
  """The last capture of a location a sweep has accounted for.

  Attributes:
    location: the location id.
    last_captured_at: ISO 8601 capture time.
    run_id: the run that advanced it.
  """
  location: str
  last_captured_at: str
  run_id: str = ""

  def to_json(self) -> str:
    return json.dumps(self._asdict(), sort_keys=True)


def parse_since(text: str | None) -> str | None:
  """`--since` as an ISO date (YYYY-MM-DD), or None.

  Raises:
    ValueError: not a date.
  """
  if not text:
    return None
  try:
    return dt.date.fromisoformat(text).isoformat()
  except ValueError:
    raise ValueError(f"--since must be a date YYYY-MM-DD, got {text!r}") from None


def parse_state(text: str, where: str = "state") -> list[LocationState]:
  """The lines of a state file (blank lines skipped).

  Raises:
    ValueError: a line that is not a state record (a corrupt state must stop the run, not
      silently re-score everything).
  """
  out = []
  for n, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
      out.append(LocationState(str(row["location"]), _iso(row["last_captured_at"]),
                               str(row.get("run_id") or "")))
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"{where}:{n}: not a state record ({e}): {line[:200]!r}") from None
  return out


def _iso(text: str) -> str:
  return dt.datetime.fromisoformat(str(text)).isoformat()


def _time(text: str) -> dt.datetime:
  return dt.datetime.fromisoformat(text)


def is_new(captured_at: str, last: str | None, since: str | None = None,
           force: bool = False) -> bool:
  """Whether a pair whose later capture is `captured_at` is to be scored tonight."""
  if since and captured_at[:10] < since:
    return False
  return force or last is None or _time(captured_at) > _time(last)


def select_new(location: str, pairs: Iterable[Pair], firsts: Iterable[FirstCapture],
               last: str | None, since: str | None = None, force: bool = False
               ) -> tuple[list[Pair], list[FirstCapture]]:
  """The pairs and first captures of one location that tonight's sweep reports (pure).

  A first capture is reported once: when the location is not in the state yet.
  """
  new_pairs = [p for p in pairs if is_new(p.after.captured_at, last, since, force)]
  new_firsts = [f for f in firsts if (force or last is None)
                and (not since or f.captured_at[:10] >= since)]
  return new_pairs, new_firsts


def advance(states: Iterable[LocationState]) -> LocationState:
  """The latest of a location's states (old state and tonight's scored captures)."""
  return max(states, key=lambda s: (_time(s.last_captured_at), s.run_id))


class ReadState(beam.PTransform):
  """The state file -> `(location, last_captured_at)`; a missing file is an empty state."""

  def __init__(self, path: str):
    super().__init__()
    if not path:
      raise ValueError("a state path is required")
    self.path = path

  def expand(self, pbegin):
    return (pbegin
            | "MatchState" >> fileio.MatchFiles(
                self.path, empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW)
            | "ReadMatches" >> fileio.ReadMatches(compression=CompressionTypes.UNCOMPRESSED)
            | "ParseState" >> beam.FlatMap(
                lambda f: parse_state(f.read_utf8(), f.metadata.path))
            | "KeyByLocation" >> beam.Map(lambda s: (s.location, s.last_captured_at)))


class SelectNewPairs(beam.PTransform):
  """`(pairs, first_captures)` + state -> only what tonight's sweep scores and reports.

  A join by location (CoGroupByKey), not a side input: the state of millions of locations never
  has to fit in one worker's memory.
  """

  def __init__(self, state, since: str | None = None, force: bool = False):
    super().__init__()
    self.state = state  # PCollection of (location, last_captured_at), or None
    self.since = parse_since(since)
    self.force = force

  def expand(self, pcolls):
    pairs, firsts = pcolls
    since, force = self.since, self.force
    keyed = {"pairs": pairs | "KeyPairs" >> beam.Map(lambda p: (p.location, p)),
             "firsts": firsts | "KeyFirsts" >> beam.Map(lambda f: (f.location, f))}
    if self.state is not None:
      keyed["state"] = self.state

    def select(location, joined):
      states = list(joined.get("state", ()))
      last = max(states, key=_time) if states else None
      all_pairs = list(joined["pairs"])
      new_pairs, new_firsts = select_new(location, all_pairs, joined["firsts"], last, since,
                                         force)
      inc_counter(STAGE, "pairs_new", len(new_pairs))
      inc_counter(STAGE, "pairs_skipped", len(all_pairs) - len(new_pairs))
      for p in new_pairs:
        yield p
      for f in new_firsts:
        yield beam.pvalue.TaggedOutput("firsts", f)

    out = (keyed
           | "JoinState" >> beam.CoGroupByKey()
           | "Select" >> beam.FlatMapTuple(select).with_outputs("firsts", main="pairs"))
    return out.pairs, out.firsts


class WriteState(beam.PTransform):
  """Old state + tonight's pair rows and first-capture rows -> the new state file.

  Written as one JSONL file at the state path (replaced whole; the old state is carried over
  through the join, so locations not seen tonight keep theirs).
  """

  def __init__(self, path: str, old_state, run_id: str):
    super().__init__()
    self.path = path
    self.old_state = old_state
    self.run_id = run_id

  def expand(self, pcolls):
    pair_rows, first_rows = pcolls
    run_id = self.run_id
    old = self.old_state | "OldState" >> beam.MapTuple(
        lambda loc, at: (loc, LocationState(loc, at, "")))
    scored = pair_rows | "ScoredCaptures" >> beam.Map(
        lambda r: (r["location"], LocationState(r["location"], _iso(r["after_captured_at"]),
                                                run_id)))
    firsts = first_rows | "FirstCaptures" >> beam.Map(
        lambda r: (r["location"], LocationState(r["location"], _iso(r["captured_at"]), run_id)))
    return ((old, scored, firsts)
            | "Flatten" >> beam.Flatten()
            | "Latest" >> beam.CombinePerKey(advance)
            | "ToJson" >> beam.Map(lambda kv: kv[1].to_json())
            | "Write" >> beam.io.WriteToText(self.path, shard_name_template="",
                                             num_shards=1))


def read_state_file(path: str) -> dict[str, str]:
  """`{location: last_captured_at}` of a state file ({} when it does not exist)."""
  if not FileSystems.exists(path):
    return {}
  with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    return {s.location: s.last_captured_at for s in parse_state(f.read().decode(), path)}

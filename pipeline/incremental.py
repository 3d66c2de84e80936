"""Incremental sweeps: score only pairs whose later capture is newer than the location's state.

The state is a JSONL file (local or gs://), one line per location::

  {"location": "dubai", "last_captured_at": "2018-03-30T00:00:00", "retry": [], "run_id": "...",
   "files": {"crs": [...], "files": [...]}}

`last_captured_at` is the latest capture of the location that a sweep has accounted for: the
`after` of a pair that was scored, or the location's first capture. Tonight's sweep still lists
and pairs the whole series, so a new capture pairs with its previous capture even when that one
came before the last run; then a pair is kept only if its `after` is newer than the state, or
its id is in `retry` (`--force` keeps them all) and, with `--since DATE`, on or after DATE.
`retry` holds the pairs that failed (dead letters with a pair id, after pairing) and were not
scored since: a failed pair is tried again every night until it is scored, even when a later
pair of the location was. Pairs left out tonight are counted (`incremental/files_skipped`) so
the accounting of listed files holds on incremental runs too.

`files` holds what listing learnt of each of the location's files (`pipeline.known_files`), so
the next night rebuilds an unchanged file's header and usability statistics from the state
instead of opening it: a night with no new capture reads no raster. A location none of whose
captures could be accounted for yet (all unusable, say) keeps its files with an empty
`last_captured_at`.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Iterable, NamedTuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from changesweep.pipeline import known_files, times
from changesweep.pipeline.elements import FirstCapture, Pair
from changesweep.pipeline.metrics import inc_counter

STAGE = "incremental"


class LocationState(NamedTuple):
  """The last capture of a location a sweep has accounted for.

  Attributes:
    location: the location id.
    last_captured_at: ISO 8601 capture time ("" when no capture is accounted for yet).
    run_id: the run that advanced it.
    retry: ids of the location's pairs that failed and are to be tried again.
    files: the known-file records of the location's listed files (`pipeline.known_files`).
  """
  location: str
  last_captured_at: str
  run_id: str = ""
  retry: tuple[str, ...] = ()
  files: tuple[dict, ...] = ()

  def to_json(self) -> str:
    row = {**self._asdict(), "retry": sorted(self.retry)}
    row["files"] = known_files.pack(self.files) if self.files else None
    if row["files"] is None:
      del row["files"]
    return json.dumps(row, sort_keys=True)


def parse_since(text: str | None) -> str | None:
  """`--since` as an ISO date (YYYY-MM-DD), or None.

  Raises:
    ValueError: not a date.
  """
  if not text:
    return None
  return times.parse_date(text, "--since")


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
      last = row["last_captured_at"]
      out.append(LocationState(str(row["location"]), _iso(last) if last else "",
                               str(row.get("run_id") or ""),
                               tuple(str(r) for r in row.get("retry") or ()),
                               known_files.unpack(row.get("files"))))
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"{where}:{n}: not a state record ({e}): {line[:200]!r}") from None
  return out


def _iso(text: str) -> str:
  return times.parse_capture_time(str(text))


def _time(text: str) -> dt.datetime:
  return times.to_datetime(text)


def is_new(captured_at: str, last: str | None, since: str | None = None,
           force: bool = False) -> bool:
  """Whether a pair whose later capture is `captured_at` is to be scored tonight."""
  if since and captured_at[:10] < since:
    return False
  return force or last is None or _time(captured_at) > _time(last)


def select_new(location: str, pairs: Iterable[Pair], firsts: Iterable[FirstCapture],
               last: str | None, since: str | None = None, force: bool = False,
               retry: Iterable[str] = ()) -> tuple[list[Pair], list[FirstCapture]]:
  """The pairs and first captures of one location that tonight's sweep reports (pure).

  A pair is reported when its after capture is new, or when it failed before (`retry`). A
  first capture is reported once: when the location is not in the state yet.
  """
  retry = set(retry)
  new_pairs = [p for p in pairs if is_new(p.after.captured_at, last, since, force)
               or (p.pair_id in retry and is_new(p.after.captured_at, None, since))]
  new_firsts = [f for f in firsts if (force or last is None)
                and (not since or f.captured_at[:10] >= since)]
  return new_pairs, new_firsts


def advance(states: Iterable[LocationState]) -> LocationState:
  """The latest of a location's states (old state and tonight's scored captures)."""
  return max(states, key=lambda s: (s.last_captured_at != "",
                                    _time(s.last_captured_at) if s.last_captured_at else None,
                                    s.run_id))


def last_accounted(states: list[LocationState]) -> str | None:
  """The latest capture the states account for, or None (the location is new tonight)."""
  return (advance(states).last_captured_at or None) if states else None


def next_state(location: str, old: Iterable[LocationState], scored: Iterable[dict],
               firsts: Iterable[dict], dead: Iterable[dict], run_id: str,
               files: Iterable[dict] | None = None) -> LocationState | None:
  """A location's state after tonight (pure): the latest capture accounted for, the pairs
  to retry (those that failed before or tonight, less those scored tonight) and the files.

  Args:
    old: the location's previous state records.
    scored, firsts, dead: tonight's pair rows, first-capture rows and dead-letter rows.
    files: the known-file records of tonight's listed files (all of them: a file not listed
      tonight is gone), or None to keep the old records.

  Returns:
    The new state, or None when nothing gives the location a last capture yet and no file is
    known (then the next night treats it as new and tries all its pairs anyway).
  """
  scored, old = list(scored), list(old)
  known = (tuple(sorted(files, key=lambda r: r["uri"])) if files is not None
           else tuple({r["uri"]: r for s in old for r in s.files}.values()))
  states = [s for s in old if s.last_captured_at]
  states += [LocationState(location, _iso(r["after_captured_at"]), run_id) for r in scored]
  states += [LocationState(location, _iso(r["captured_at"]), run_id) for r in firsts]
  if not states and not known:
    return None
  failed = {r["pair_id"] for r in dead if r.get("pair_id") and r.get("stage") != "pairing"}
  retry = ({p for s in old for p in s.retry} | failed) - {r["pair_id"] for r in scored}
  state = advance(states) if states else LocationState(location, "", run_id)
  return state._replace(retry=tuple(sorted(retry)), files=known)


def skipped_files(pairs: Iterable[Pair], firsts: Iterable[FirstCapture]) -> int:
  """Listed files in the pairs and first captures left out tonight: the accounting counts
  them as accounted for by an earlier night."""
  return (sum(len(p.after.uris) for p in pairs)
          + sum(len([u for u in f.uri.split(";") if u]) for f in firsts))


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
            | "KeyByLocation" >> beam.Map(lambda s: (s.location, s)))


class KnownFiles(beam.PTransform):
  """The state's `(location, LocationState)` -> its known-file records (for `ListCaptures`)."""

  def expand(self, state):
    return state | "Files" >> beam.FlatMap(lambda kv: kv[1].files)


class SelectNewPairs(beam.PTransform):
  """`(pairs, first_captures)` + state -> only what tonight's sweep scores and reports.

  A join by location (CoGroupByKey), not a side input: the state of millions of locations never
  has to fit in one worker's memory.
  """

  def __init__(self, state, since: str | None = None, force: bool = False):
    super().__init__()
    self.state = state  # PCollection of (location, LocationState), or None
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
      last = last_accounted(states)
      retry = [p for s in states for p in s.retry]
      all_pairs, all_firsts = list(joined["pairs"]), list(joined["firsts"])
      new_pairs, new_firsts = select_new(location, all_pairs, all_firsts, last, since,
                                         force, retry)
      inc_counter(STAGE, "pairs_new", len(new_pairs))
      inc_counter(STAGE, "pairs_skipped", len(all_pairs) - len(new_pairs))
      kept = {p.pair_id for p in new_pairs}
      inc_counter(STAGE, "files_skipped", skipped_files(
          [p for p in all_pairs if p.pair_id not in kept],
          [f for f in all_firsts if f not in new_firsts]))
      for p in new_pairs:
        yield p
      for f in new_firsts:
        yield beam.pvalue.TaggedOutput("firsts", f)

    out = (keyed
           | "JoinState" >> beam.CoGroupByKey()
           | "Select" >> beam.FlatMapTuple(select).with_outputs("firsts", main="pairs"))
    return out.pairs, out.firsts


class WriteState(beam.PTransform):
  """Old state + tonight's pair, first-capture and dead-letter rows -> the new state file.

  Written as one JSONL file at the state path (replaced whole; the old state is carried over
  through the join, so locations not seen tonight keep theirs). With `known` (the known-file
  records of tonight's listed files, `listing.KnownFileRecords`), they replace the old ones.
  """

  def __init__(self, path: str, old_state, run_id: str, known=None):
    super().__init__()
    self.path = path
    self.old_state = old_state
    self.run_id = run_id
    self.known = known

  def expand(self, pcolls):
    pair_rows, first_rows, dead_rows = pcolls
    run_id = self.run_id

    def by_location(rows, name):
      return rows | f"Key{name}" >> beam.Map(lambda r: (r["location"], r))

    failed = (dead_rows
              | "PairFailures" >> beam.Filter(lambda r: bool(r.get("pair_id") and r.get("location")))
              | "KeyFailures" >> beam.Map(lambda r: (r["location"], r)))
    inputs = {"old": self.old_state, "scored": by_location(pair_rows, "Scored"),
              "firsts": by_location(first_rows, "Firsts"), "dead": failed}
    if self.known is not None:
      inputs["files"] = by_location(self.known, "Files")
    return (inputs
            | "JoinByLocation" >> beam.CoGroupByKey()
            | "NextState" >> beam.FlatMapTuple(lambda loc, j: [s for s in [next_state(
                loc, j["old"], j["scored"], j["firsts"], j["dead"], run_id,
                j["files"] if "files" in j else None)] if s])
            | "ToJson" >> beam.Map(lambda s: s.to_json())
            | "Write" >> beam.io.WriteToText(self.path, shard_name_template="",
                                             num_shards=1))


def read_state_file(path: str) -> dict[str, str]:
  """`{location: last_captured_at}` of a state file ({} when it does not exist)."""
  if not FileSystems.exists(path):
    return {}
  with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    return {s.location: s.last_captured_at for s in parse_state(f.read().decode(), path)
            if s.last_captured_at}

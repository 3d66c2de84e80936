"""Incremental sweeps: nights of captures arriving in turn give exactly the pairs of one full run,
none twice; --since and --force; the state file."""
import os
import shutil

import pytest

from changesweep.pipeline import incremental
from changesweep.pipeline import main as sweep_main
from changesweep.pipeline.elements import Pair, SceneRef
from changesweep.pipeline.elements import FirstCapture
from changesweep.pipeline.sinks import read_jsonl_rows
from tests.conftest import CVA_MODEL
from tests.rasters import write_series


def scene(location, at):
  return SceneRef(location, at, (f"{location}/{at}.tif",), ("B02",), 8, 8, "uint16", "", (1.0,) * 6,
                  None, 1)


def pair(location, before, after):
  return Pair(f"{location}:{before}:{after}", scene(location, before), scene(location, after),
              (0,), (0,))


@pytest.mark.parametrize("after,last,since,force,new", [
    ("2020-01-02T00:00:00", None, None, False, True),
    ("2020-01-02T00:00:00", "2020-01-02T00:00:00", None, False, False),
    ("2020-01-02T00:00:01", "2020-01-02T00:00:00", None, False, True),
    ("2020-01-02T00:00:00", "2020-01-05T00:00:00", None, True, True),
    ("2020-01-02T00:00:00", None, "2020-01-03", False, False),
    ("2020-01-03T23:00:00", None, "2020-01-03", False, True),
    ("2020-01-02T00:00:00", "2019-01-01T00:00:00", "2020-01-03", True, False),
])
def test_is_new(after, last, since, force, new):
  assert incremental.is_new(after, last, since, force) is new


def test_select_new_keeps_the_new_capture_paired_with_an_old_one():
  pairs = [pair("a", "2020-01-01T00:00:00", "2020-02-01T00:00:00"),
           pair("a", "2020-02-01T00:00:00", "2020-03-01T00:00:00")]
  firsts = [FirstCapture("a", "2020-01-01T00:00:00", "a/1.tif")]
  new, new_firsts = incremental.select_new("a", pairs, firsts, "2020-02-01T00:00:00")
  assert new == pairs[1:] and new_firsts == []  # before (Feb) predates the last run: still paired
  assert incremental.select_new("a", pairs, firsts, None) == (pairs, firsts)
  assert incremental.select_new("a", pairs, firsts, "2020-03-01T00:00:00", force=True) == (
      pairs, firsts)


def test_state_round_trip_and_corrupt_state():
  states = [incremental.LocationState("a", "2020-01-01T00:00:00", "r1"),
            incremental.LocationState("a", "2020-03-01T00:00:00", "r2"),
            incremental.LocationState("a", "2020-02-01T00:00:00", "r3")]
  text = "\n".join(s.to_json() for s in states) + "\n\n"
  assert incremental.parse_state(text) == states
  assert incremental.advance(states).run_id == "r2"
  with pytest.raises(ValueError, match="state:2"):
    incremental.parse_state(states[0].to_json() + "\n{\"location\": \"b\"}\n")
  with pytest.raises(ValueError, match="YYYY-MM-DD"):
    incremental.parse_since("last tuesday")


# Three locations; captures arrive over three nights. `rio` gets nothing on night 2, `lima`
# appears only on night 3, `oslo` gets two captures in one night.
ARRIVALS = {
    1: {"oslo": ["2020-01-01", "2020-01-11"], "rio": ["2020-01-03"]},
    2: {"oslo": ["2020-01-21", "2020-01-31"]},
    3: {"oslo": ["2020-02-10"], "rio": ["2020-02-12", "2020-02-20"], "lima": ["2020-02-01"]},
}


def _pairs(out):
  return [(r["location"], r["before_captured_at"][:10], r["after_captured_at"][:10])
          for r in read_jsonl_rows(str(out), "pairs")]


def _sweep(archive, out, *args):
  return sweep_main.run(["--input", str(archive), "--output", str(out), "--model", CVA_MODEL,
                         "--statistics", "model", "--no_maps", "--run_id", os.path.basename(out),
                         *args])


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
  root = tmp_path_factory.mktemp("incremental")
  source, archive = root / "source", root / "archive"
  for seed, loc in enumerate(sorted({l for night in ARRIVALS.values() for l in night})):
    dates = sorted(d for night in ARRIVALS.values() for d in night.get(loc, []))
    write_series(str(source), loc, dates, h=40, w=48, seed=seed, change_at=len(dates) // 2)
  state = root / "state" / "locations.jsonl"
  per_night, firsts, accounting = [], [], []
  for night, arrived in sorted(ARRIVALS.items()):
    for loc, dates in arrived.items():
      os.makedirs(archive / loc, exist_ok=True)
      for d in dates:
        shutil.copy(source / loc / f"{d}.tif", archive / loc / f"{d}.tif")
    out = root / f"night{night}"
    accounting.append(_sweep(archive, out, "--state", str(state))["accounting"])
    per_night.append(_pairs(out))
    firsts.append(sorted(r["location"] for r in read_jsonl_rows(str(out), "first_captures")))
  full = root / "full"
  _sweep(archive, full)
  return {"root": root, "archive": archive, "state": state, "per_night": per_night,
          "firsts": firsts, "full": sorted(_pairs(full)), "accounting": accounting}


def test_three_nights_give_the_pairs_of_one_full_run_none_twice(nights):
  incremental_pairs = [p for night in nights["per_night"] for p in night]
  assert len(incremental_pairs) == len(set(incremental_pairs))
  assert sorted(incremental_pairs) == nights["full"]
  assert len(nights["full"]) == 6  # oslo 5 captures, rio 3, lima 1
  # night 2 pairs oslo's new capture with the one scored on night 1
  assert ("oslo", "2020-01-11", "2020-01-21") in nights["per_night"][1]
  assert nights["firsts"] == [["oslo", "rio"], [], ["lima"]]


def test_every_night_accounts_for_every_listed_file(nights):
  # night 3: 9 files listed, 3 in tonight's pairs, 1 first capture (lima), 5 reported before
  assert [a["ok"] for a in nights["accounting"]] == [True] * 3, nights["accounting"]
  assert [(a["listed"], a["skipped"]) for a in nights["accounting"]] == [(3, 0), (5, 3),
                                                                          (9, 5)]


def test_state_holds_the_last_capture_of_every_location(nights):
  state = incremental.read_state_file(str(nights["state"]))
  assert state == {"oslo": "2020-02-10T00:00:00", "rio": "2020-02-20T00:00:00",
                   "lima": "2020-02-01T00:00:00"}


def test_a_fourth_night_without_arrivals_scores_nothing_and_force_since_rescores(nights):
  again = nights["root"] / "night4"
  _sweep(nights["archive"], again, "--state", str(nights["state"]))
  assert _pairs(again) == []
  forced = nights["root"] / "forced"
  _sweep(nights["archive"], forced, "--state", str(nights["state"]), "--force",
         "--since", "2020-02-01")
  assert sorted(_pairs(forced)) == sorted(p for p in nights["full"] if p[2] >= "2020-02-01")


def row(pair_id, after="2020-03-01T00:00:00"):
  return {"pair_id": pair_id, "location": "a", "after_captured_at": after}


def test_next_state_keeps_failed_pairs_to_retry_until_scored():
  old = [incremental.LocationState("a", "2020-02-01T00:00:00", "r1", ("p1",))]
  dead = [{"pair_id": "p2", "location": "a", "stage": "chips"},
          {"pair_id": "px", "location": "a", "stage": "pairing"},  # re-paired every night
          {"pair_id": None, "location": "a", "stage": "usability"}]
  state = incremental.next_state("a", old, [row("p3")], [], dead, "r2")
  assert state == incremental.LocationState("a", "2020-03-01T00:00:00", "r2", ("p1", "p2"))
  state = incremental.next_state("a", [state], [row("p1", "2020-01-01T00:00:00")], [], [], "r3")
  assert state.retry == ("p2",) and state.last_captured_at == "2020-03-01T00:00:00"
  assert incremental.parse_state(state.to_json()) == [state]
  assert incremental.next_state("a", [], [], [], dead, "r") is None


def test_select_new_retries_a_failed_pair_behind_the_last_scored_one():
  pairs = [pair("a", "2020-01-01T00:00:00", "2020-02-01T00:00:00"),
           pair("a", "2020-02-01T00:00:00", "2020-03-01T00:00:00")]
  new, _ = incremental.select_new("a", pairs, [], "2020-03-01T00:00:00",
                                  retry=[pairs[0].pair_id])
  assert new == pairs[:1]
  assert incremental.select_new("a", pairs, [], "2020-03-01T00:00:00", since="2020-02-15",
                                retry=[pairs[0].pair_id]) == ([], [])


def test_a_failed_pair_is_retried_the_next_night_and_accounting_holds(tmp_path, monkeypatch):
  from changesweep.pipeline import chips

  archive, state = tmp_path / "archive", tmp_path / "state.jsonl"
  write_series(str(archive), "a", ["2020-01-01", "2020-02-01", "2020-03-01"], h=40, w=48)
  read_pair_window = chips.read_pair_window

  def flaky(reader, pair, *args, **kwargs):  # night 1: the pair into February fails
    if pair.after.captured_at.startswith("2020-02-01"):
      raise ValueError("storage unavailable")
    return read_pair_window(reader, pair, *args, **kwargs)

  monkeypatch.setattr(chips, "read_pair_window", flaky)
  night1 = _sweep(archive, tmp_path / "night1", "--state", str(state))
  monkeypatch.setattr(chips, "read_pair_window", read_pair_window)
  assert _pairs(tmp_path / "night1") == [("a", "2020-02-01", "2020-03-01")]
  assert night1["counts"]["dead_letters"] == 1 and night1["accounting"]["ok"]
  night2 = _sweep(archive, tmp_path / "night2", "--state", str(state))
  assert _pairs(tmp_path / "night2") == [("a", "2020-01-01", "2020-02-01")]
  assert night2["counts"]["dead_letters"] == 0
  assert night2["accounting"]["ok"] and night2["accounting"]["skipped"] == 2
  night3 = _sweep(archive, tmp_path / "night3", "--state", str(state))
  assert _pairs(tmp_path / "night3") == []
  assert night3["accounting"]["ok"] and night3["accounting"]["skipped"] == 3
  [line] = state.read_text().splitlines()
  assert incremental.parse_state(line)[0].retry == ()

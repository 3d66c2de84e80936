"""The accounting invariant: every listed file is in a pair, a first-capture row or a dead letter.

Each capture is counted once: as the first usable capture of its location, as the *after*
capture of one pair (scored, or dead-lettered with the reason), or as a dead letter of its own;
on an incremental run, also as skipped: in a pair or first capture an earlier night reported.
"""
from __future__ import annotations

import collections

from changesweep.pipeline import sinks


def _files(uri: str) -> list[str]:
  return [u for u in uri.split(";") if u]


def account(output: str, listed: int, skipped: int = 0) -> dict:
  """Counts where each listed file ended up in a finished sweep's outputs.

  Args:
    skipped: files of pairs and first captures an incremental run left out (reported before).

  Returns:
    `{"listed", "in_pairs", "first_captures", "dead_letters", "skipped", "accounted", "twice",
    "ok"}`; `twice` lists files found in more than one place, `ok` is the invariant.
  """
  places = collections.Counter()
  counts = {}
  for table, column in (("pairs", "after_uri"), ("first_captures", "uri"),
                        ("dead_letter", "uri")):
    files = [f for row in sinks.read_jsonl_rows(output, table) for f in _files(row[column])]
    places.update(files)
    counts[table] = len(files)
  twice = sorted(f for f, n in places.items() if n > 1)
  accounted = sum(counts.values()) + skipped
  return {"listed": listed, "in_pairs": counts["pairs"],
          "first_captures": counts["first_captures"], "dead_letters": counts["dead_letter"],
          "skipped": skipped, "accounted": accounted, "twice": twice, "ok": accounted == listed and not twice}

"""Dead letters by reason: one line per cause, however many captures it hit, and the verdict
that fails a run when one cause took (nearly) everything.

A nightly job where every pair died of the same error must go red, not quietly write nothing;
and a person reading 400 dead letters needs the one line they share.
"""
from __future__ import annotations

import collections
import re
from typing import Iterable

# A run fails when one reason accounts for at least this share of its outcomes (pairs scored
# plus dead letters), and for at least one of them.
FAIL_SHARE = 0.9

# Beam's RunInference dead-letter error: "(<class 'E'>, "E('message')", ['Traceback ...'])".
_BEAM_ERROR = re.compile(r"\(<class '(?:\w+\.)*(\w+)'>, [\"'](?:\w+)\((['\"])(.*?)\2\)[\"'], "
                         r"\[.*?(?= \(\d+ chip\(s\) failed\)|$)", re.S)

_PATTERNS = (
    (re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s;,()'\"]*", re.I), "<uri>"),
    (re.compile(r"(?<![\w.>])/[^\s:;,()'\"]+"), "<path>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ][\d:.]+)?"), "<time>"),
    (re.compile(r"\b0x[0-9a-f]+\b|\b[0-9a-f]{16,}\b", re.I), "<id>"),
    (re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"), "N"),
    (re.compile(r"(?:<(?:uri|path)>;)+<(?:uri|path)>"), "<files>"),
    (re.compile(r"\s+"), " "),
)


def normalize_reason(reason: str) -> str:
  """A reason without what varies between captures: uris, paths, times, ids and numbers.

  e.g. "pair with /a/x.tif: reading chip 3 failed: ..." -> "pair with <path>: reading chip N
  failed: ...".
  """
  text = tidy_reason(reason)
  for pattern, repl in _PATTERNS:
    text = pattern.sub(repl, text)
  return text.strip()


def tidy_reason(reason: str) -> str:
  """A reason with Beam's exception tuples written as "Error: message" (no traceback)."""
  return _BEAM_ERROR.sub(r"\1: \3", reason or "")


def by_reason(dead_letters: Iterable[dict]) -> list[dict]:
  """Dead-letter rows grouped by stage and normalised reason, most frequent first.

  Returns:
    `[{"count", "stage", "reason", "example"}]`: `reason` is the normalised form, `example`
    one full reason of the group (the first by uri, so reruns agree).
  """
  groups: dict[tuple[str, str], list[dict]] = collections.defaultdict(list)
  for row in dead_letters:
    groups[(row.get("stage") or "", normalize_reason(row.get("reason") or ""))].append(row)
  out = []
  for (stage, reason), rows in groups.items():
    first = min(rows, key=lambda r: (r.get("uri") or "", r.get("reason") or ""))
    out.append({"count": len(rows), "stage": stage, "reason": reason,
                "example": tidy_reason(first.get("reason") or "")})
  return sorted(out, key=lambda g: (-g["count"], g["stage"], g["reason"]))


def format_reason(group: dict) -> str:
  """One line: "N captures: <reason> (stage)"."""
  return f"{group['count']} captures: {group['reason']} ({group['stage']})"


def run_failure(pairs_scored: int, groups: list[dict], share: float = FAIL_SHARE
                ) -> str | None:
  """Why the run failed, on one line, or None when it did not.

  A run fails when one reason took at least `share` of its outcomes (pairs scored plus dead
  letters), and at least one: every pair, or nearly, died of the same cause.
  """
  if not groups:
    return None
  top = groups[0]
  total = pairs_scored + sum(g["count"] for g in groups)
  if top["count"] >= 1 and top["count"] >= share * total:
    return (f"{top['count']} of {total} captures failed for one reason: {top['reason']} "
            f"({top['stage']}; e.g. {top['example'][:300]})")
  return None

"""Capture times: one parser for paths, manifests, state, history and the report.

Every time inside the sweep is a naive ISO 8601 string in UTC (`2017-10-30T10:20:00`), so
times sort as text and compare across archives whatever time zone their files used.
"""
from __future__ import annotations

import datetime as dt


def parse_capture_time(text: str, date_format: str | None = None) -> str:
  """Parses a capture time into ISO 8601, UTC, naive (naive input is taken as UTC).

  Args:
    text: the time as an archive writes it (`2017-10-30`, `20171030`, `2017-10-30T10:20:00Z`,
      `2017-10-30_102000` with `date_format`).
    date_format: a strptime format, or None for ISO 8601.

  Raises:
    ValueError: the text is not a time in the expected format.
  """
  text = str(text).strip()
  try:
    if date_format:
      value = dt.datetime.strptime(text, date_format)
    else:
      value = dt.datetime.fromisoformat(text.replace("_", "T") if "T" not in text else text)
  except ValueError:
    want = date_format or "ISO 8601 (e.g. 2017-10-30 or 20171030)"
    raise ValueError(f"date {text!r} does not parse as {want}") from None
  if value.tzinfo is not None:
    value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
  return value.isoformat()


def to_datetime(iso: str) -> dt.datetime:
  """A time written by the sweep (or any ISO 8601 time) as a naive UTC datetime."""
  return dt.datetime.fromisoformat(parse_capture_time(iso))


def parse_date(text: str, what: str = "date") -> str:
  """A calendar date `YYYY-MM-DD`.

  Raises:
    ValueError: naming `what`.
  """
  try:
    return dt.date.fromisoformat(str(text).strip()).isoformat()
  except ValueError:
    raise ValueError(f"{what} must be a date YYYY-MM-DD, got {text!r}") from None

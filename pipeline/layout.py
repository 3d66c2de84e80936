"""Path templates: how a capture's location, time and band are read from its path.

A template such as `{location}/{date}.tif` or `{location}/{date:%Y%m%d}_{band}.tif` is
relative to the archive root. `{date}` without a format accepts ISO 8601 dates and times
(`2017-10-30`, `20171030`, `2017-10-30T10:20:00`). Other `{names}` match any text and are
ignored. Paths that do not have the template's shape are never listed; paths that have it but
whose fields do not parse become dead letters.
"""
from __future__ import annotations

import dataclasses
import re
import string

from changesweep.pipeline import times

FIELDS = ("location", "date", "band")
_FIELD_RE = r"[^/]+?"


class LayoutError(ValueError):
  """A path does not fit the layout template."""


@dataclasses.dataclass(frozen=True)
class Layout:
  """A parsed path template.

  Attributes:
    template: the template text.
    glob: the glob (relative to the archive root) that lists candidate files.
    regex: the anchored regex that extracts the fields.
    date_format: the strptime format of `{date}`, or None for ISO 8601.
  """
  template: str
  glob: str
  regex: re.Pattern
  date_format: str | None

  @classmethod
  def parse(cls, template: str) -> "Layout":
    """Parses a template.

    Raises:
      ValueError: the template lacks `{location}` or `{date}`, repeats a field, or is absolute.
    """
    if template.startswith("/") or ".." in template.split("/"):
      raise ValueError(f"layout {template!r} must be relative to the archive, without '..'")
    glob, regex, seen, date_format = [], [], set(), None
    for literal, name, spec, _ in string.Formatter().parse(template):
      glob.append(literal.replace("[", "[[]").replace("?", "[?]"))
      regex.append(re.escape(literal))
      if name is None:
        continue
      if not name or not name.isidentifier():
        raise ValueError(f"layout {template!r}: field names must be identifiers, got {name!r}")
      if name in seen:
        raise ValueError(f"layout {template!r} repeats {{{name}}}")
      seen.add(name)
      if name == "date" and spec:
        date_format = spec
      glob.append("*")
      regex.append(f"(?P<{name}>{_FIELD_RE})" if name in FIELDS else _FIELD_RE)
    missing = [f for f in ("location", "date") if f not in seen]
    if missing:
      raise ValueError(f"layout {template!r} needs {', '.join('{%s}' % m for m in missing)}")
    return cls(template, "".join(glob), re.compile("".join(regex) + r"\Z"), date_format)

  @property
  def has_band(self) -> bool:
    return "band" in self.regex.groupindex

  def match(self, relative_path: str) -> dict[str, str]:
    """Fields of a path relative to the archive root.

    Raises:
      LayoutError: the path does not fit, or its date does not parse.
    """
    m = self.regex.match(relative_path)
    if not m:
      raise LayoutError(f"path {relative_path!r} does not match layout {self.template!r}")
    fields = m.groupdict()
    fields["captured_at"] = parse_time(fields.pop("date"), self.date_format)
    return fields


def parse_time(text: str, date_format: str | None = None) -> str:
  """Parses a capture time into ISO 8601 (naive times are taken as UTC); see `pipeline.times`.

  Raises:
    LayoutError: the text is not a date in the expected format.
  """
  try:
    return times.parse_capture_time(text, date_format)
  except ValueError as e:
    raise LayoutError(str(e)) from None

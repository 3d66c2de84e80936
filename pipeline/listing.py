"""List the archive: files matched by the layout (or a manifest) -> per-file header facts."""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Iterator, NamedTuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems

from pipeline import rasters
from pipeline.elements import DeadLetter
from pipeline.layout import Layout, LayoutError, parse_time
from pipeline.metrics import inc_counter

STAGE = "listing"


class CaptureFile(NamedTuple):
  """One listed file: what the layout or manifest says of it, then its raster header."""
  location: str
  captured_at: str
  band: str | None
  uri: str
  size_bytes: int
  meta: rasters.FileMeta | None = None


def relative_to(root: str, path: str) -> str:
  root = root.rstrip("/") + "/"
  if not path.startswith(root):
    raise LayoutError(f"{path!r} is not under the archive root {root!r}")
  return path[len(root):]


def entry_from_path(root: str, layout: Layout, path: str, size: int) -> CaptureFile:
  """Applies the layout to one matched path (pure; raises LayoutError)."""
  fields = layout.match(relative_to(root, path))
  return CaptureFile(fields["location"], fields["captured_at"], fields.get("band"), path, size)


def _resolve(base_dir: str, uri: str) -> str:
  if "://" in uri or uri.startswith("/"):
    return uri
  return FileSystems.join(base_dir, uri) if "://" in base_dir else os.path.normpath(
      os.path.join(base_dir, uri))


def parse_manifest(name: str, text: str) -> Iterator[CaptureFile | DeadLetter]:
  """Rows of a CSV or JSONL manifest (`location, captured_at, uri[, band]`).

  Relative uris are taken relative to the manifest's folder. A bad row becomes a dead letter.
  """
  base = name.rsplit("/", 1)[0] if "/" in name else "."
  if name.endswith((".jsonl", ".json", ".ndjson")):
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
      if line.strip():
        try:
          rows.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
          rows.append((n, f"not valid JSON ({e})"))
  else:
    rows = [(n, r) for n, r in enumerate(csv.DictReader(io.StringIO(text)), start=2)]
  for n, row in rows:
    inc_counter(STAGE, "files_matched")
    where = f"{name}:{n}"
    if isinstance(row, str):
      yield DeadLetter(where, STAGE, row)
      continue
    missing = [k for k in ("location", "captured_at", "uri") if not row.get(k)]
    if missing:
      yield DeadLetter(row.get("uri") or where, STAGE,
                       f"manifest row {where} lacks {', '.join(missing)}")
      continue
    try:
      captured_at = parse_time(str(row["captured_at"]))
    except LayoutError as e:
      yield DeadLetter(row["uri"], STAGE, f"manifest row {where}: {e}", row["location"])
      continue
    yield CaptureFile(str(row["location"]), captured_at, row.get("band") or None,
                      _resolve(base, row["uri"]), -1)


class _ReadHeader(beam.DoFn):
  """Adds the raster header to each file; unreadable files go to the dead-letter output."""

  def process(self, entry: CaptureFile):
    try:
      meta = rasters.read_meta(entry.uri)
    except rasters.RasterError as e:
      inc_counter(STAGE, "unreadable_files")
      yield beam.pvalue.TaggedOutput("dead", DeadLetter(entry.uri, "metadata", str(e),
                                                        entry.location))
      return
    inc_counter(STAGE, "captures_listed")
    yield entry._replace(meta=meta)


class ListCaptures(beam.PTransform):
  """Lists an archive by layout template or manifest and reads each file's header.

  Returns a pair `(files, dead_letters)` of PCollections.
  """

  def __init__(self, root: str | None, layout: str = "{location}/{date}.tif",
               manifest: str | None = None):
    super().__init__()
    if not root and not manifest:
      raise ValueError("give an archive root (--input) or a manifest (--manifest)")
    self.root = root.rstrip("/") if root else None
    self.layout = Layout.parse(layout)
    self.manifest = manifest

  @property
  def pattern(self) -> str:
    return self.manifest or f"{self.root}/{self.layout.glob}"

  def _from_manifest(self, pbegin):
    rows = (pbegin
            | "MatchManifest" >> fileio.MatchFiles(self.manifest)
            | "ReadManifest" >> fileio.ReadMatches()
            | "ParseManifest" >> beam.FlatMap(
                lambda f: parse_manifest(f.metadata.path, f.read_utf8())))
    return rows | "SplitRows" >> beam.Partition(
        lambda r, _: int(isinstance(r, DeadLetter)), 2)

  def _from_layout(self, pbegin):
    root, layout = self.root, self.layout

    def parse(meta):
      inc_counter(STAGE, "files_matched")
      inc_counter(STAGE, "bytes_listed", meta.size_in_bytes)
      try:
        return entry_from_path(root, layout, meta.path, meta.size_in_bytes)
      except LayoutError as e:
        return DeadLetter(meta.path, STAGE, str(e))

    rows = (pbegin
            | "MatchArchive" >> fileio.MatchFiles(self.pattern)
            | "ParsePaths" >> beam.Map(parse))
    return rows | "SplitRows" >> beam.Partition(
        lambda r, _: int(isinstance(r, DeadLetter)), 2)

  def expand(self, pbegin):
    good, bad = self._from_manifest(pbegin) if self.manifest else self._from_layout(pbegin)
    files = (good
             | "Reshuffle" >> beam.Reshuffle()
             | "ReadHeaders" >> beam.ParDo(_ReadHeader()).with_outputs("dead", main="files"))
    dead = (bad, files.dead) | "FlattenDead" >> beam.Flatten()
    return files.files, dead

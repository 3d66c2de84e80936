"""List the archive: files matched by the layout (or a manifest) -> per-file header facts."""
from __future__ import annotations

import csv
import io
import json
import os
import re
from typing import Iterator, NamedTuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems

from changesweep.pipeline import rasters, usability
from changesweep.pipeline.elements import DeadLetter
from changesweep.pipeline.layout import Layout, LayoutError, parse_time
from changesweep.pipeline.metrics import inc_counter

STAGE = "listing"


class CaptureFile(NamedTuple):
  """One listed file: what the layout or manifest says of it, then its raster header."""
  location: str
  captured_at: str
  band: str | None
  uri: str
  size_bytes: int
  meta: rasters.FileMeta | None = None
  fields: tuple[tuple[str, str], ...] = ()
  mask_uri: str | None = None
  stats: usability.FileStats | None = None
  mask_band: int | None = None
  is_mask: bool = False  # a band file named as `--mask_band`: the capture's mask, not a band
  band_names: tuple[str, ...] | None = None  # a manifest's `bands`: the file's bands, in order


def relative_to(root: str, path: str) -> str:
  root = root.rstrip("/") + "/"
  if not path.startswith(root):
    raise LayoutError(f"{path!r} is not under the archive root {root!r}")
  return path[len(root):]


def entry_from_path(root: str, layout: Layout, path: str, size: int) -> CaptureFile:
  """Applies the layout to one matched path (pure; raises LayoutError)."""
  rel = relative_to(root, path)
  fields = layout.match(rel)
  raw = tuple(sorted(layout.regex.match(rel).groupdict().items()))
  return CaptureFile(fields["location"], fields["captured_at"], fields.get("band"), path, size,
                     fields=raw)


def _resolve(base_dir: str, uri: str) -> str:
  if "://" in uri or uri.startswith("/"):
    return uri
  return FileSystems.join(base_dir, uri) if "://" in base_dir else os.path.normpath(
      os.path.join(base_dir, uri))


def parse_manifest(name: str, text: str) -> Iterator[CaptureFile | DeadLetter]:
  """Rows of a CSV or JSONL manifest (`location, captured_at, uri[, band][, bands]`).

  `band` names the one band of a file (one file per band); `bands` names a multi-band file's
  bands in order ("B04;B03;B02", "red,nir", or a JSON list), over its own descriptions.
  Relative uris are taken relative to the manifest's folder. A bad row becomes a dead letter,
  and so does a row that lists a file again (filed under the row, `name:line`, since the
  file itself is accounted for by its first row).
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
  first_row = {}
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
    uri = _resolve(base, row["uri"])
    if uri in first_row:
      yield DeadLetter(where, STAGE, f"manifest row {where} lists {uri} again (first at row "
                       f"{first_row[uri]}); ignored", str(row["location"]))
      continue
    first_row[uri] = n
    mask = row.get("mask") or None
    yield CaptureFile(str(row["location"]), captured_at, row.get("band") or None,
                      uri, -1,
                      mask_uri=_resolve(base, mask) if mask else None,
                      band_names=parse_band_list(row.get("bands")))


def parse_band_list(value) -> tuple[str, ...] | None:
  """A manifest's `bands` cell: names separated by `;`, `,` or `|`, or a JSON list; None if empty."""
  if not value:
    return None
  names = value if isinstance(value, list) else re.split(r"[;,|]", str(value))
  return tuple(str(n).strip() for n in names if str(n).strip()) or None


class _ReadHeader(beam.DoFn):
  """Adds the raster header and the usability statistics (masks applied) to each file.

  Unreadable files, and files whose mask cannot be read, go to the dead-letter output.
  """

  def __init__(self, root: str | None, masks: usability.MaskSpec):
    self.root = root
    self.masks = masks

  def process(self, entry: CaptureFile):
    from changesweep.transforms.bands import BandError, resolve_bands

    masks = self.masks
    try:
      meta = rasters.read_meta(entry.uri)
      if entry.band_names:
        if len(entry.band_names) != meta.count:
          raise BandError(f"the manifest names {len(entry.band_names)} bands "
                          f"{list(entry.band_names)}, the file has {meta.count}")
        meta = meta._replace(descriptions=entry.band_names)
      mask_uri = entry.mask_uri
      if masks.layout and self.root and entry.fields:
        mask_uri = usability.sidecar_uri(self.root, masks.layout, dict(entry.fields))
      mask_band = None
      is_mask = usability.is_mask_file(entry.band, masks)
      if masks.band and entry.band is None:
        mask_band = resolve_bands([masks.band], meta.descriptions)[0]
      if is_mask:  # its usable share is the share of pixels it does not flag
        stats = usability.file_stats(entry.uri, None, 0, None, masks.values, mask_only=True)
      else:
        stats = usability.file_stats(entry.uri, meta.nodata, mask_band, mask_uri, masks.values)
    except (rasters.RasterError, rasters.PixelReadError, BandError) as e:
      inc_counter(STAGE, "unreadable_files")
      yield beam.pvalue.TaggedOutput("dead", DeadLetter(entry.uri, "metadata", str(e),
                                                        entry.location))
      return
    except Exception as e:  # e.g. a mask layout naming a field this path lacks
      inc_counter(STAGE, "unreadable_files")
      yield beam.pvalue.TaggedOutput("dead", DeadLetter(
          entry.uri, "metadata", str(rasters.read_failure(entry.uri, "header", e)),
          entry.location))
      return
    inc_counter(STAGE, "captures_listed")
    yield entry._replace(meta=meta, mask_uri=mask_uri, stats=stats, mask_band=mask_band,
                         is_mask=is_mask)


class ListCaptures(beam.PTransform):
  """Lists an archive by layout template or manifest and reads each file's header.

  Returns a pair `(files, dead_letters)` of PCollections.
  """

  def __init__(self, root: str | None, layout: str = "{location}/{date}.tif",
               manifest: str | None = None, masks: usability.MaskSpec = usability.MaskSpec()):
    super().__init__()
    self.masks = masks
    if masks.layout:
      if manifest:
        raise ValueError("--mask_layout works with --input; a manifest names masks in a "
                         "'mask' column")
      unknown = set(re.findall(r"\{(\w+)", masks.layout)) - set(Layout.parse(layout).regex.groupindex)
      if unknown:
        raise ValueError(f"mask layout {masks.layout!r} uses fields {sorted(unknown)} that the "
                         f"layout {layout!r} does not give")
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
             | "ReadHeaders" >> beam.ParDo(_ReadHeader(self.root, self.masks)).with_outputs(
                 "dead", main="files"))
    dead = (bad, files.dead) | "FlattenDead" >> beam.Flatten()
    return files.files, dead

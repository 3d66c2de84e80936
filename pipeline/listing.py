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

from changesweep.pipeline import known_files, rasters, usability
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
  modified: float | None = None  # the storage listing's modification time (seconds)
  mask_identity: tuple[int, float] | None = None  # the sidecar mask's (size, modified)


def relative_to(root: str, path: str) -> str:
  root = root.rstrip("/") + "/"
  if not path.startswith(root):
    raise LayoutError(f"{path!r} is not under the archive root {root!r}")
  return path[len(root):]


def entry_from_path(root: str, layout: Layout, path: str, size: int,
                    modified: float | None = None) -> CaptureFile:
  """Applies the layout to one matched path (pure; raises LayoutError)."""
  rel = relative_to(root, path)
  fields = layout.match(rel)
  raw = tuple(sorted(layout.regex.match(rel).groupdict().items()))
  return CaptureFile(fields["location"], fields["captured_at"], fields.get("band"), path, size,
                     fields=raw, modified=modified)


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


def mask_uri_of(entry: CaptureFile, root: str | None, masks: usability.MaskSpec) -> str | None:
  """The sidecar mask of a listed file: the manifest's, or the mask layout filled in.

  Raises:
    KeyError: the mask layout names a field this path lacks.
  """
  if masks.layout and root and entry.fields:
    return usability.sidecar_uri(root, masks.layout, dict(entry.fields))
  return entry.mask_uri


class _ReadHeader(beam.DoFn):
  """Adds the raster header and the usability statistics (masks applied) to each file.

  Unreadable files, and files whose mask cannot be read, go to the dead-letter output. The
  files opened and the bytes read are counted (`listing/rasters_opened`, `listing/bytes_read`).
  With `identify`, a sidecar mask's identity is kept too, for the next night's state.
  """

  def __init__(self, root: str | None, masks: usability.MaskSpec, identify: bool = False):
    self.root = root
    self.masks = masks
    self.identify = identify

  def process(self, entry: CaptureFile):
    inc_counter(STAGE, "files_read")
    with rasters.counting_reads() as tally:  # outputs go downstream only after the count
      try:
        out = list(self._read(entry))
      finally:
        inc_counter(STAGE, "rasters_opened", tally.opens)
        inc_counter(STAGE, "bytes_read", tally.bytes)
    yield from out

  def _read(self, entry: CaptureFile):
    from changesweep.transforms.bands import BandError, resolve_bands

    masks = self.masks
    try:
      meta = rasters.read_meta(entry.uri)
      if entry.band_names:
        if len(entry.band_names) != meta.count:
          raise BandError(f"the manifest names {len(entry.band_names)} bands "
                          f"{list(entry.band_names)}, the file has {meta.count}")
        meta = meta._replace(descriptions=entry.band_names)
      mask_uri = mask_uri_of(entry, self.root, masks)
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
    mask_identity = known_files.identity(mask_uri) if self.identify and mask_uri else None
    yield entry._replace(meta=meta, mask_uri=mask_uri, stats=stats, mask_band=mask_band,
                         is_mask=is_mask, mask_identity=mask_identity)


class _UseKnown(beam.DoFn):
  """`(uri, {"listed", "known"})` -> the listed file rebuilt from its known record when that
  still describes it (main output), else the file to read (output "read").

  Costs no raster open: a manifest's file (whose listing gives no size or time) and a sidecar
  mask are looked up in the storage listing (`listing/files_statted`).
  """

  def __init__(self, root: str | None, masks: usability.MaskSpec):
    self.root, self.masks = root, masks
    self.spec = known_files.fingerprint(masks)

  def process(self, element):
    _, joined = element
    rows = list(joined["known"])
    for entry in joined["listed"]:
      entry = self._identified(entry)
      row = self._match(entry, rows)
      if row is None:
        yield beam.pvalue.TaggedOutput("read", entry)
        continue
      inc_counter(STAGE, "files_known")
      inc_counter(STAGE, "captures_listed")
      yield entry._replace(**known_files.decode(row),
                           is_mask=usability.is_mask_file(entry.band, self.masks))

  def _identified(self, entry: CaptureFile) -> CaptureFile:
    if entry.modified and entry.size_bytes >= 0:
      return entry
    inc_counter(STAGE, "files_statted")
    found = known_files.identity(entry.uri)
    return entry._replace(size_bytes=found[0], modified=found[1]) if found else entry

  def _match(self, entry: CaptureFile, rows: list[dict]) -> dict | None:
    try:
      mask_uri = mask_uri_of(entry, self.root, self.masks)
    except KeyError:  # the read dead-letters it with the reason
      return None
    row = next((r for r in rows if known_files.same_file(entry, r, self.spec, mask_uri)), None)
    if row is None or mask_uri is None:
      return row
    inc_counter(STAGE, "files_statted")
    kept = row.get("mask_identity")
    return row if kept and tuple(kept) == known_files.identity(mask_uri) else None


class KnownFileRecords(beam.PTransform):
  """Listed files (`CaptureFile`s with header and statistics) -> their known-file records
  (`pipeline.known_files`), for the incremental state."""

  def __init__(self, masks: usability.MaskSpec = usability.MaskSpec()):
    super().__init__()
    self.spec = known_files.fingerprint(masks)

  def expand(self, files):
    spec = self.spec
    return (files
            | "Identified" >> beam.Filter(lambda f: bool(f.modified) and f.size_bytes >= 0)
            | "Encode" >> beam.Map(known_files.encode, spec))


def read_cost(counters: dict) -> dict:
  """What listing cost a run, from its counters: files listed, rebuilt from the state (known),
  read, and the rasters opened and bytes read to read them."""
  return {k: counters.get(f"{STAGE}/{k}", 0) for k in ("files_matched", "files_known",
                                                       "files_read", "rasters_opened",
                                                       "bytes_read")}


class ListCaptures(beam.PTransform):
  """Lists an archive by layout template or manifest and reads each file's header.

  Returns a pair `(files, dead_letters)` of PCollections.

  With `known` (a PCollection of `pipeline.known_files` records, e.g. the incremental state's),
  a listed file that a record still describes (same size, modification time and settings) is
  rebuilt from it without being opened; only new or changed files are read.
  """

  def __init__(self, root: str | None, layout: str = "{location}/{date}.tif",
               manifest: str | None = None, masks: usability.MaskSpec = usability.MaskSpec(),
               known=None):
    super().__init__()
    self.masks = masks
    self.known = known
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
        return entry_from_path(root, layout, meta.path, meta.size_in_bytes,
                               meta.last_updated_in_seconds or None)
      except LayoutError as e:
        return DeadLetter(meta.path, STAGE, str(e))

    rows = (pbegin
            | "MatchArchive" >> fileio.MatchFiles(self.pattern)
            | "ParsePaths" >> beam.Map(parse))
    return rows | "SplitRows" >> beam.Partition(
        lambda r, _: int(isinstance(r, DeadLetter)), 2)

  def expand(self, pbegin):
    good, bad = self._from_manifest(pbegin) if self.manifest else self._from_layout(pbegin)
    if self.known is None:
      files = (good
               | "Reshuffle" >> beam.Reshuffle()
               | "ReadHeaders" >> beam.ParDo(_ReadHeader(self.root, self.masks)).with_outputs(
                   "dead", main="files"))
      return files.files, (bad, files.dead) | "FlattenDead" >> beam.Flatten()
    split = ({"listed": good | "KeyListed" >> beam.Map(lambda f: (f.uri, f)),
              "known": self.known | "KeyKnown" >> beam.Map(lambda r: (r["uri"], r))}
             | "JoinKnown" >> beam.CoGroupByKey()
             | "UseKnown" >> beam.ParDo(_UseKnown(self.root, self.masks)).with_outputs(
                 "read", main="known"))
    files = split.read | "ReadHeaders" >> beam.ParDo(
        _ReadHeader(self.root, self.masks, identify=True)).with_outputs("dead", main="files")
    return ((split.known, files.files) | "FlattenFiles" >> beam.Flatten(),
            (bad, files.dead) | "FlattenDead" >> beam.Flatten())

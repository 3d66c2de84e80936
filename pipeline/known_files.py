"""What listing learnt of a file, kept in the incremental state so later nights need not open it.

A night lists the whole archive, but only files it has not seen (or that changed) are opened:
for the others the state holds what pairing needs (grid, CRS, band names, nodata, usability and
per-band statistics), and the file's identity (size and modification time, as the storage
listing reports them) says whether it is still the file those facts were read from. The facts
also depend on how they were computed (masks, the decimated grid), so a record carries a
fingerprint of that and a mismatch means the file is read again.

A record is a JSON object; `pack` stores a location's records with each CRS once (a WKT is
about 1 KB, and a location's captures share a handful).
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Iterable

from apache_beam.io.filesystems import FileSystems

from changesweep.pipeline import rasters, usability

# Bump when what listing computes for a file changes (a new field, another statistic).
# 2: the statistics also hold each band's median and 1.4826 * MAD (records of version 1 lack
# them: their fingerprint differs, so the file is read again; `decode` still reads them).
VERSION = 2


def fingerprint(masks: usability.MaskSpec) -> str:
  """How a file's facts were computed: the mask settings, the statistics grid, `VERSION`."""
  text = json.dumps([VERSION, usability.STATS_SIDE, masks.band, masks.layout,
                     sorted(masks.values)])
  return hashlib.sha1(text.encode()).hexdigest()[:12]


def identity(uri: str) -> tuple[int, float] | None:
  """`(size, modified)` of a file from the storage listing (no byte of it read), or None."""
  try:
    found = FileSystems.match([uri], limits=[1])[0].metadata_list
  except Exception:  # a missing file or folder: the read reports it
    return None
  return (int(found[0].size_in_bytes), float(found[0].last_updated_in_seconds)) if found else None


def _floats(values) -> list:
  return [None if v is None else float(v) for v in values]


def encode(entry, spec: str) -> dict:
  """The record of a listed file whose header and statistics were read (a `CaptureFile`)."""
  m, s = entry.meta, entry.stats
  return {"location": entry.location, "uri": entry.uri, "size": entry.size_bytes,
          "modified": entry.modified, "spec": spec,
          "meta": [m.height, m.width, m.count, m.dtype, m.crs, list(m.transform), m.nodata,
                   list(m.descriptions)],
          "stats": None if s is None else [s.usable_fraction, _floats(s.band_means),
                                           _floats(s.band_stds), _floats(s.band_medians),
                                           _floats(s.band_mads)],
          "mask_band": entry.mask_band, "mask_uri": entry.mask_uri,
          "mask_identity": list(entry.mask_identity) if entry.mask_identity else None}


def decode(row: dict) -> dict:
  """The `CaptureFile` fields a record gives: `meta`, `stats`, `mask_band`, `mask_uri`,
  `mask_identity`."""
  h, w, count, dtype, crs, transform, nodata, descriptions = row["meta"]
  stats = row.get("stats")
  return {"meta": rasters.FileMeta(int(h), int(w), int(count), str(dtype), str(crs),
                                   tuple(float(v) for v in transform),
                                   None if nodata is None else float(nodata),
                                   tuple(descriptions)),
          "stats": None if stats is None else usability.FileStats(
              float(stats[0]), *(tuple(_nan(v) for v in values) for values in stats[1:5])),
          "mask_band": row.get("mask_band"), "mask_uri": row.get("mask_uri"),
          "mask_identity": tuple(row["mask_identity"]) if row.get("mask_identity") else None}


def _nan(v) -> float:
  return math.nan if v is None else float(v)


def same_file(entry, row: dict, spec: str, mask_uri: str | None) -> bool:
  """Whether `row` still describes the listed `entry` (pure; the mask is checked apart).

  Args:
    entry: tonight's listing entry, with its size and modification time.
    spec: tonight's `fingerprint`.
    mask_uri: the sidecar mask tonight's settings give the entry (None: no sidecar).
  """
  return (row.get("spec") == spec and row.get("uri") == entry.uri
          and entry.modified is not None and row.get("modified") == entry.modified
          and row.get("size") == entry.size_bytes and entry.size_bytes >= 0
          and row.get("mask_uri") == mask_uri)


def pack(rows: Iterable[dict]) -> dict:
  """A location's records with each CRS stored once (`{"crs": [...], "files": [...]}`)."""
  crs, files = [], []
  for row in sorted(rows, key=lambda r: r["uri"]):
    meta = list(row["meta"])
    if meta[4] not in crs:
      crs.append(meta[4])
    meta[4] = crs.index(meta[4])
    files.append({**row, "meta": meta})
  return {"crs": crs, "files": files}


def unpack(packed: dict | None) -> tuple[dict, ...]:
  """The records of `pack`'s output.

  Raises:
    ValueError: not packed records.
  """
  if not packed:
    return ()
  try:
    crs = list(packed["crs"])
    out = []
    for row in packed["files"]:
      meta = list(row["meta"])
      meta[4] = crs[int(meta[4])]
      out.append({**row, "meta": meta})
  except (KeyError, TypeError, IndexError) as e:
    raise ValueError(f"known files are not packed records ({type(e).__name__}: {e})") from None
  return tuple(out)

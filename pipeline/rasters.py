"""Raster access for local paths and any Beam filesystem (gs://), metadata and windows."""
from __future__ import annotations

import contextlib
import ctypes
import contextvars
import io
import math
import re
import os
import warnings
from typing import NamedTuple

import numpy as np
import rasterio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from changesweep.transforms.bands import Derived, normalized_difference
from changesweep.transforms.masks import band_valid, is_masked

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")

# GDAL's block cache defaults to 5% of RAM in every process (1.2 GB of a 24 GB machine, per Beam
# worker) and fills up with the blocks of chips that are read once. A chip needs the blocks it
# shares with its bands and neighbours, a few MB (chips arrive shuffled, so blocks are rarely
# met twice): a 64 MB cache was ~60 MB of the growth of a worker's peak from 1024^2 to 10980^2
# (bench/memory.py: +22% with 64 MB, +16% with 16 MB, one run each). Set before GDAL's first
# read in the process; an explicit GDAL_CACHEMAX wins.
os.environ.setdefault("GDAL_CACHEMAX", "16")  # MB

# glibc serves a large block from mmap (and returns it on free) only above its mmap threshold,
# and it raises that threshold to the size of each large block freed, up to 32 MB. After the
# first chip batch is freed, chip-sized arrays (0.3-3 MB) then come from the heap, which
# fragments and does not shrink: a worker's RSS grew by ~0.5 GB over a 10980^2 pair
# (bench/memory.py). A fixed threshold keeps them on mmap. glibc also gives each thread that
# contends for the heap an arena of its own (up to 8 per core), and freed memory stays in the
# arena that served it; Beam's worker threads, GDAL and TensorFlow then spread a worker's heap
# over many arenas (two arenas: +19% instead of +22%, one run each; with the 16 MB cache, +19%
# over 3 runs at 10980^2, 1,127-1,166 MB against 981 MB at 1024^2). The variables reach worker
# processes started from here; mallopt sets them for this process. Explicit values win.
_MMAP_THRESHOLD = 128 * 1024
_ARENA_MAX = 2
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # glibc's mallopt parameter numbers


def _mallopt(param: int, value: int) -> None:
  try:
    ctypes.CDLL("libc.so.6").mallopt(param, value)
  except (OSError, AttributeError):  # not glibc (macOS, musl): their allocators differ
    pass


if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
  os.environ["MALLOC_MMAP_THRESHOLD_"] = str(_MMAP_THRESHOLD)
  _mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
if "MALLOC_ARENA_MAX" not in os.environ:
  os.environ["MALLOC_ARENA_MAX"] = str(_ARENA_MAX)
  _mallopt(_M_ARENA_MAX, _ARENA_MAX)


def _beam_opener(path: str, mode: str = "rb"):
  return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


class ReadTally:
  """Raster files opened and bytes GDAL read from them, inside one `counting_reads()` block."""

  def __init__(self):
    self.opens = 0
    self.bytes = 0


_TALLY: contextvars.ContextVar[ReadTally | None] = contextvars.ContextVar("tally", default=None)


@contextlib.contextmanager
def counting_reads():
  """Counts the opens and bytes of every `open_raster` in the block (this thread only).

  Inside the block files are read through a counting file object (GDAL's Python opener), so
  the bytes are those GDAL asked the storage for: headers, blocks, masks, sidecars.
  """
  tally = ReadTally()
  token = _TALLY.set(tally)
  try:
    yield tally
  finally:
    _TALLY.reset(token)


class _CountingFile(io.RawIOBase):
  """A read-only file object that adds the bytes read through it to a `ReadTally`."""

  def __init__(self, raw, tally: ReadTally):
    super().__init__()
    self._raw, self._tally = raw, tally

  def readable(self) -> bool:
    return True

  def seekable(self) -> bool:
    return True

  def read(self, size: int = -1) -> bytes:
    data = self._raw.read(size)
    self._tally.bytes += len(data)
    return data

  def readinto(self, buffer) -> int:
    data = self.read(len(buffer))
    buffer[:len(data)] = data
    return len(data)

  def seek(self, offset: int, whence: int = 0) -> int:
    return self._raw.seek(offset, whence)

  def tell(self) -> int:
    return self._raw.tell()

  def close(self) -> None:
    self._raw.close()
    super().close()


def _counting_opener(tally: ReadTally, remote: bool):
  def opener(path: str, mode: str = "rb"):
    return _CountingFile(_beam_opener(path) if remote else open(path, "rb"), tally)

  return opener


def open_raster(uri: str):
  """Opens a raster for reading; remote uris go through Beam's FileSystems."""
  tally = _TALLY.get()
  remote = "://" in uri and not uri.startswith("file://")
  path = uri if remote else uri.removeprefix("file://")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", NotGeoreferencedWarning)
    if tally is not None:
      tally.opens += 1
      return rasterio.open(path, opener=_counting_opener(tally, remote))
    if remote:
      return rasterio.open(uri, opener=_beam_opener)
    return rasterio.open(path)


_OPENER_PREFIX = re.compile(r"/vsiriopener_[0-9a-f]+/")


def _first_line(error: BaseException) -> str:
  """The first line of an error, without the prefix GDAL's Python opener adds to paths."""
  return _OPENER_PREFIX.sub("", (str(error).splitlines() or [""])[0])[:200]


class FileMeta(NamedTuple):
  """Header facts of one raster file."""
  height: int
  width: int
  count: int
  dtype: str
  crs: str
  transform: tuple[float, ...]
  nodata: float | None
  descriptions: tuple[str | None, ...]


class RasterError(ValueError):
  """A file is not a raster the sweep can read."""


class PixelReadError(OSError):
  """An I/O error while reading a file's pixels; the message names the file, band and error.

  An OSError still, so that readers which retry transient I/O errors keep doing so.
  """


def read_failure(uri: str, what: str, error: Exception) -> Exception:
  """The error to raise when reading `what` ("band 3", "mask") of `uri` failed with `error`.

  I/O errors stay OSErrors (`PixelReadError`), anything else becomes a `RasterError`; either
  way the message says what failed: file, part, error type and its first line.
  """
  if isinstance(error, (RasterError, PixelReadError)):
    return error
  text = f"reading {what} of {uri} failed: {type(error).__name__}: {_first_line(error)}"
  cause = error.__cause__ or error.__context__  # GDAL's own message ("Read failed. See ...")
  if cause is not None and _first_line(cause):
    text += f" ({_first_line(cause)})"
  return PixelReadError(text) if isinstance(error, OSError) else RasterError(text)


@contextlib.contextmanager
def reading(uri: str, what: str):
  """Turns any error raised inside into `read_failure(uri, what, error)`."""
  try:
    yield
  except Exception as e:  # rasterio, GDAL and codec errors alike
    raise read_failure(uri, what, e) from e


def read_meta(uri: str) -> FileMeta:
  """Reads a raster's header (no pixels).

  Raises:
    RasterError: the file is empty, not a raster, or of an unsupported data type.
  """
  try:
    with open_raster(uri) as src:
      dtypes = set(src.dtypes)
      meta = FileMeta(src.height, src.width, src.count, src.dtypes[0],
                      src.crs.to_wkt() if src.crs else "", tuple(src.transform)[:6],
                      None if src.nodata is None or math.isnan(src.nodata) else float(src.nodata),
                      tuple(src.descriptions))
  except rasterio.errors.RasterioIOError as e:
    raise RasterError(f"not a readable raster ({_first_line(e)})") from None
  except (UnicodeDecodeError, ValueError, OverflowError) as e:  # a corrupt header's fields
    raise RasterError(f"not a readable raster ({type(e).__name__}: {_first_line(e)})") from None
  if len(dtypes) > 1:
    raise RasterError(f"bands have different data types {sorted(dtypes)}")
  if meta.dtype not in SUPPORTED_DTYPES:
    raise RasterError(f"data type {meta.dtype} is not supported (use one of {SUPPORTED_DTYPES})")
  if meta.height < 1 or meta.width < 1 or meta.count < 1:
    raise RasterError("raster has no pixels")
  return meta


def _plain_bands(bands: tuple) -> bool:
  """Whether `bands` are distinct band positions of one file (no derived band)."""
  return (bool(bands) and all(isinstance(b, (int, np.integer)) for b in bands)
          and len(set(bands)) == len(bands))


def _inside(window: Window, src) -> bool:
  """Whether an integer `window` lies inside `src` (a read then returns exactly its shape)."""
  return (window.col_off >= 0 and window.row_off >= 0
          and window.col_off + window.width <= src.width
          and window.row_off + window.height <= src.height
          and all(float(v).is_integer() for v in window.flatten()))


class WindowReader:
  """Reads windows of several rasters, keeping recently used files open.

  One reader lives in a DoFn (made in `setup`, closed in `teardown`), so a chip costs a window
  read, not a file open.
  """

  def __init__(self, max_open: int = 16):
    self._open: dict[str, rasterio.DatasetReader] = {}
    self._stack = contextlib.ExitStack()
    self._max_open = max_open

  def _get(self, uri: str, grid=None, resampling: str = "nearest"):
    """The open file, or its view on `grid` (a `WarpedVRT`, see `pipeline.warping`)."""
    key = (uri, grid, resampling if grid is not None else None)
    src = self._open.pop(key, None)
    if src is None:
      if len(self._open) >= self._max_open:
        oldest = next(iter(self._open))
        _close(self._open.pop(oldest))
      src = open_raster(uri)
      if grid is not None:
        from changesweep.pipeline.warping import warp_to_grid

        src = warp_to_grid(src, grid, resampling)
    self._open[key] = src  # most recent last
    return src

  def read(self, uris: tuple[str, ...], bands: tuple, window: Window,
           nodata: float | None, mask_uri: str | None = None, mask_band: int | None = None,
           mask_values: tuple[int, ...] = (), grid=None, resampling: str = "bilinear"
           ) -> tuple[np.ndarray, np.ndarray]:
    """Reads `bands` (0-based, over the capture's band list) in `window`.

    A band may be a `transforms.bands.Derived` (NDVI ...): its two source bands are read and
    their normalized difference taken; it is invalid where either source is or their sum is 0.

    With `grid` (a `pipeline.grids.Grid`), the window is one of that grid and the files are
    read through a `WarpedVRT` onto it: bands with `resampling`, masks with nearest.

    Returns:
      `([h, w, C] float32 pixels, [h, w] bool validity)`; invalid where any band is masked
      (nodata, alpha or internal mask), not finite, or flagged by the capture's mask band or
      sidecar mask file (values in `mask_values`, or any non-zero value when it is empty).
    """
    data = None
    if len(uris) == 1 and _plain_bands(bands):
      try:
        src = self._get(uris[0], grid, resampling)
        if _inside(window, src):
          data, valid = self._read_bands(src, bands, window, nodata, warped=grid is not None)
      except Exception:  # noqa: BLE001 - read again band by band: its error names the band
        data = None
    if data is None:
      data, valid = self._read_planes(uris, bands, window, nodata, grid, resampling)
    if mask_band is not None:
      with reading(uris[0], f"mask band {mask_band + 1}"):
        flags = self._get(uris[0], grid).read(mask_band + 1, window=window)
      valid &= ~is_masked(flags, mask_values)
    if mask_uri is not None:
      with reading(mask_uri, "mask"):
        flags = self._get(mask_uri, grid).read(1, window=window)
      valid &= ~is_masked(flags, mask_values)
    return data, valid

  @staticmethod
  def _read_bands(src, bands: tuple, window: Window, nodata: float | None, warped: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Bands of one open file in one read, written by GDAL straight into `[h, w, C]` (no
    per-band reads, no interleaving copy); GDAL's masks are read only where a band has one
    (a warped view always has one: the footprint of the file under it). The same pixels and
    validity as `_read_planes`."""
    indexes = [b + 1 for b in bands]
    h, w = int(window.height), int(window.width)
    data = np.empty((h, w, len(indexes)), np.float32)
    src.read(indexes, window=window, out=data.transpose(2, 0, 1))
    valid = np.ones((h, w), bool)
    if warped or not all(MaskFlags.all_valid in src.mask_flag_enums[i - 1] for i in indexes):
      valid &= (src.read_masks(indexes, window=window) > 0).all(axis=0)
    if np.dtype(src.dtypes[0]).kind == "f":
      valid &= np.isfinite(data).all(axis=-1)
    if nodata is not None:
      valid &= (data != nodata).all(axis=-1)
    return data, valid

  def _read_planes(self, uris: tuple[str, ...], bands: tuple, window: Window,
                   nodata: float | None, grid, resampling: str
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Band by band: per-band files and derived bands (NDVI ...)."""
    read: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def plane(band: int) -> tuple[np.ndarray, np.ndarray]:
      if band not in read:
        uri, index = (uris[band], 1) if len(uris) > 1 else (uris[0], band + 1)
        with reading(uri, f"band {index}"):
          src = self._get(uri, grid, resampling)
          data = src.read(index, window=window, out_dtype="float32")
          read[band] = data, band_valid(data, src.read_masks(index, window=window), nodata)
      return read[band]

    planes, valid = [], None
    for band in bands:
      if isinstance(band, Derived):
        (a, ok_a), (b, ok_b) = plane(band.a), plane(band.b)
        data = normalized_difference(a, b)
        mask = ok_a & ok_b & np.isfinite(data)
      else:
        data, mask = plane(band)
      valid = mask if valid is None else valid & mask
      planes.append(data)
    return np.stack(planes, axis=-1), valid

  def close(self) -> None:
    for src in self._open.values():
      _close(src)
    self._open.clear()


def _close(src) -> None:
  """Closes a file, or a WarpedVRT and the file under it."""
  under = getattr(src, "src_dataset", None)
  src.close()
  if under is not None:
    under.close()

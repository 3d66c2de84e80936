"""A model directory's metadata: read and validated without TensorFlow.

The sweep's driver, `--help` and the CPU-only stages need only this (what a model reads and
how to threshold it), so it imports no TensorFlow; `model.format` exports directories and
loads their graphs.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

FORMAT = "changesweep.model/v1"
KINDS = ("learned", "cva", "irmad", "unsupervised")
METADATA_FILE = "metadata.json"
TRANSFORM_DIR = "transform_fn"
SAVED_MODEL_DIR = "saved_model"
OUTPUT_KEY = "change_prob"
NORMALIZED_SIGNATURE = "normalized"
BAND_MODES = ("fixed", "any")
# serving_default inputs of an any-band model (CONTRACT.md), in this order.
ANY_INPUTS = ("before", "after", "valid", "band_code", "before_center", "before_scale",
              "after_center", "after_scale")
_REQUIRED = {"format": str, "model_id": str, "version": str, "kind": str, "bands": list,
             "chip_size": int, "threshold": (int, float)}


class ModelDirError(ValueError):
  """A model directory is missing, incomplete or not of this format."""


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """The validated metadata of a model directory.

  Attributes:
    path: the directory.
    model_id: a stable name, written into every output row.
    version: the model's version, written into every output row.
    kind: one of `KINDS`.
    bands: band names in the order the network reads them.
    chip_size: the side of the square chips it takes.
    threshold: probability above which a pixel counts as changed.
    raw: the whole metadata dictionary.
  """
  path: str
  model_id: str
  version: str
  kind: str
  bands: tuple[str, ...]
  chip_size: int
  threshold: float
  raw: dict

  @property
  def band_mode(self) -> str:
    """"any" for the any-band model, "fixed" for models that read `bands` in that order."""
    return str(self.raw.get("band_mode", "fixed"))

  @property
  def max_bands(self) -> int:
    return int(self.raw.get("max_bands", len(self.bands)))

  @property
  def saved_model_dir(self) -> str:
    return os.path.join(self.path, SAVED_MODEL_DIR)

  @property
  def transform_dir(self) -> str:
    return os.path.join(self.path, TRANSFORM_DIR)


def validate_metadata(meta: Any, where: str = "metadata.json") -> None:
  """Raises ModelDirError naming the first field that is missing or wrong."""
  if not isinstance(meta, dict):
    raise ModelDirError(f"{where}: expected a JSON object, got {type(meta).__name__}")
  for key, kind in _REQUIRED.items():
    if key not in meta:
      raise ModelDirError(f"{where}: missing field {key!r}")
    if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
      raise ModelDirError(f"{where}: field {key!r} has the wrong type ({meta[key]!r})")
  if meta["format"] != FORMAT:
    raise ModelDirError(f"{where}: format {meta['format']!r} is not {FORMAT!r}")
  if meta["kind"] not in KINDS:
    raise ModelDirError(f"{where}: kind {meta['kind']!r} is not one of {KINDS}")
  if not meta["bands"] or not all(isinstance(b, str) and b for b in meta["bands"]):
    raise ModelDirError(f"{where}: bands must be a non-empty list of band names")
  if not 8 <= meta["chip_size"] <= 4096:
    raise ModelDirError(f"{where}: chip_size {meta['chip_size']} is outside 8..4096")
  if not 0.0 <= float(meta["threshold"]) <= 1.0:
    raise ModelDirError(f"{where}: threshold {meta['threshold']} is outside 0..1")
  if meta.get("band_mode", "fixed") not in BAND_MODES:
    raise ModelDirError(f"{where}: band_mode {meta['band_mode']!r} is not one of {BAND_MODES}")
  if meta.get("band_mode") == "any":
    max_bands = meta.get("max_bands")
    if not isinstance(max_bands, int) or isinstance(max_bands, bool) or not 1 <= max_bands <= 64:
      raise ModelDirError(f"{where}: an any-band model needs an integer max_bands (1..64), "
                          f"got {max_bands!r}")


def read_model_info(path: str) -> ModelInfo:
  """Reads and validates a model directory's metadata without loading TensorFlow graphs.

  A remote `path` (gs://...) is read through Beam's FileSystems; TensorFlow and tf.Transform
  read the SavedModel and the statistics from there themselves.

  Raises:
    ModelDirError: the directory or one of its parts is missing, or the metadata is invalid.
  """
  if "://" in path:
    return _read_remote_model_info(path)
  if not os.path.isdir(path):
    raise ModelDirError(f"model directory {path!r} does not exist")
  meta_path = os.path.join(path, METADATA_FILE)
  try:
    with open(meta_path) as f:
      meta = json.load(f)
  except FileNotFoundError:
    raise ModelDirError(f"{path!r} is not a changesweep model: no {METADATA_FILE}") from None
  except json.JSONDecodeError as e:
    raise ModelDirError(f"{meta_path}: not valid JSON ({e})") from None
  validate_metadata(meta, meta_path)
  for part in (SAVED_MODEL_DIR, TRANSFORM_DIR):
    if not os.path.isdir(os.path.join(path, part)):
      raise ModelDirError(f"{path!r} is incomplete: no {part}/ directory")
  return ModelInfo(path=path, model_id=meta["model_id"], version=meta["version"],
                   kind=meta["kind"], bands=tuple(meta["bands"]), chip_size=meta["chip_size"],
                   threshold=float(meta["threshold"]), raw=meta)


def _read_remote_model_info(path: str) -> ModelInfo:
  """`read_model_info` for a bucket: object stores have no folders, only names under them."""
  from apache_beam.io.filesystem import CompressionTypes
  from apache_beam.io.filesystems import FileSystems

  path = path.rstrip("/")
  meta_path = f"{path}/{METADATA_FILE}"
  try:
    with FileSystems.open(meta_path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      meta = json.loads(f.read().decode())
  except json.JSONDecodeError as e:
    raise ModelDirError(f"{meta_path}: not valid JSON ({e})") from None
  except Exception as e:  # Beam raises BeamIOError/OSError for a missing object or bucket
    raise ModelDirError(f"{path!r} is not a changesweep model: cannot read {METADATA_FILE} "
                        f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})") from None
  validate_metadata(meta, meta_path)
  for part in (SAVED_MODEL_DIR, TRANSFORM_DIR):
    if not FileSystems.match([f"{path}/{part}/**"], limits=[1])[0].metadata_list:
      raise ModelDirError(f"{path!r} is incomplete: no {part}/ directory")
  return ModelInfo(path=path, model_id=meta["model_id"], version=meta["version"],
                   kind=meta["kind"], bands=tuple(meta["bands"]), chip_size=meta["chip_size"],
                   threshold=float(meta["threshold"]), raw=meta)

"""`changesweep train --init_from` in fixed mode: start a fixed-band network from another one.

A fixed-band model reads its bands in the order of its metadata (`bands`), and only its first
convolution (`stem_conv`, kernel `[3, 3, C, 64]`) depends on them. So a network for new bands
starts from a source model as follows: every weight whose path and shape agree is copied (the
encoder after the stem, the fusions, the decoder, the head, the BatchNorm statistics); the
stem's bias is copied; its kernel is mapped by band NAME (`transforms.bands.canonical`: "red"
and "B04" are one band): each input channel of a band the source reads gets the source's
kernel slice of that band, wherever the source had it (the RGB model reads red, green, blue;
a Sentinel-2 model blue, green, red, nir), and a band the source lacks gets zeros. The new
network then computes exactly what the source computes on the shared bands, whatever the new
bands hold, and training takes it from there.

The source is a model directory of the fixed format: its `network.keras` (the RGB model
ships one) or its `checkpoint.weights.h5` with the widths of its metadata.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

NETWORK_FILE = "network.keras"
CHECKPOINT_FILE = "checkpoint.weights.h5"
STEM_LAYER = "stem_conv"


def _canonical(band: str) -> str:
  from changesweep.transforms.bands import canonical
  return canonical(band)


def map_stem_kernel(kernel: np.ndarray, source_bands: Sequence[str],
                    bands: Sequence[str]) -> tuple[np.ndarray, list[str]]:
  """The stem kernel for `bands` from a kernel over `source_bands`, matched by band name.

  Args:
    kernel: `[kh, kw, len(source_bands), filters]` source stem kernel.
    source_bands: The source's band names in its input order.
    bands: The new network's band names in its input order.

  Returns:
    `(kernel [kh, kw, len(bands), filters], the new bands that got zeros)`.

  Raises:
    ValueError: the kernel's input channels do not match `source_bands`, a band list names
      one band twice, or no band is shared.
  """
  if kernel.shape[2] != len(source_bands):
    raise ValueError(f"source stem reads {kernel.shape[2]} bands, its metadata names "
                     f"{len(source_bands)}: {list(source_bands)}")
  src = [_canonical(b) for b in source_bands]
  dst = [_canonical(b) for b in bands]
  for names, what in ((src, "source bands"), (dst, "bands")):
    if len(set(names)) != len(names):
      raise ValueError(f"{what} {names} name one band twice")
  if not set(src) & set(dst):
    raise ValueError(f"bands {list(bands)} share no band with the source's "
                     f"{list(source_bands)}")
  out = np.zeros(kernel.shape[:2] + (len(bands),) + kernel.shape[3:], kernel.dtype)
  missing = []
  for c, name in enumerate(dst):
    if name in src:
      out[:, :, c, :] = kernel[:, :, src.index(name), :]
    else:
      missing.append(bands[c])
  return out, missing


def load_source(model_dir: str):
  """The source model directory's Keras network and band names.

  Raises:
    FileNotFoundError: the directory has neither `network.keras` nor
      `checkpoint.weights.h5` with a `metadata.json`.
    ValueError: the directory holds an any-band model (its stem is per band, not per input
      channel).
  """
  import keras
  from changesweep.model import network as net  # registers the custom layers
  meta_path = os.path.join(model_dir, "metadata.json")
  if not os.path.isfile(meta_path):
    raise FileNotFoundError(f"--init_from {model_dir}: no metadata.json (a model directory "
                            "is needed: its bands decide the stem's mapping)")
  with open(meta_path) as f:
    meta = json.load(f)
  if meta.get("band_mode") == "any":
    raise ValueError(f"--init_from {model_dir}: an any-band model cannot start a fixed-band "
                     "network")
  bands = list(meta["bands"])
  network_path = os.path.join(model_dir, NETWORK_FILE)
  if os.path.isfile(network_path):
    return keras.saving.load_model(network_path, compile=False), bands
  ckpt = os.path.join(model_dir, CHECKPOINT_FILE)
  if not os.path.isfile(ckpt):
    raise FileNotFoundError(f"--init_from {model_dir}: neither {NETWORK_FILE} nor "
                            f"{CHECKPOINT_FILE}")
  widths = tuple(meta.get("training", {}).get("widths") or net.DEFAULT_WIDTHS)
  model = net.build_network(len(bands), widths)
  model.load_weights(ckpt)
  return model, bands


def _layers_by_name(model) -> dict:
  """Every layer with weights, nested models (the shared encoder) walked into, by name.

  Layer names, not weight paths, are matched: the dense layers inside a fusion layer are
  named by a process-wide counter, so their paths differ between two builds.
  """
  import keras
  out = {}

  def walk(m):
    for layer in m.layers:
      if isinstance(layer, keras.Model):
        walk(layer)
      elif layer.weights:
        if layer.name in out:
          raise ValueError(f"layer name {layer.name!r} occurs twice in {model.name}")
        out[layer.name] = layer

  walk(model)
  return out


def init_from_source(model, bands: Sequence[str], source, source_bands: Sequence[str]
                     ) -> dict:
  """Copies `source`'s weights into `model` (module doc); returns what was done.

  Weights are matched by layer name and position within the layer.

  Args:
    model: The new fixed-band network (`network.build_network(len(bands), ...)`).
    bands: Its band names in input order.
    source: The source network.
    source_bands: The source's band names in input order.

  Returns:
    `{"copied": n, "skipped": [layer/index of weights left as initialised],
    "zero_bands": [new bands whose stem kernels are zero]}`.
  """
  src = _layers_by_name(source)
  copied, skipped, zero_bands = 0, [], []
  for name, layer in _layers_by_name(model).items():
    theirs = src[name].weights if name in src else []
    for i, var in enumerate(layer.weights):
      value = np.asarray(theirs[i].numpy()) if i < len(theirs) else None
      if value is not None and name == STEM_LAYER and i == 0:
        value, zero_bands = map_stem_kernel(value, source_bands, bands)
      if value is None or value.shape != tuple(var.shape):
        skipped.append(f"{name}/{i}")
        continue
      var.assign(value)
      copied += 1
  return {"copied": copied, "skipped": skipped, "zero_bands": zero_bands}


def init_from_model_dir(model, bands: Sequence[str], model_dir: str) -> dict:
  """`init_from_source` with the source read from a model directory (`load_source`)."""
  source, source_bands = load_source(model_dir)
  report = init_from_source(model, bands, source, source_bands)
  return {**report, "source_bands": list(source_bands)}

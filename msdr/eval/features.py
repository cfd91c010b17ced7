"""Feature networks for the Fréchet distance between two image sets.

A Fréchet distance is only defined relative to the network that embeds the
images, so every number carries the network's `name`, and numbers from
different names are not comparable. Two networks are registered:

  random_conv    `random_conv64-v1(seed=0)`, the default: needs no download.
                 Images are resized to 64x64 (bilinear, antialiased when
                 shrinking) and shifted to [-0.5, 0.5], then pass through four
                 3x3 stride-2 'SAME' convolutions (32, 32, 64, 128 channels,
                 no bias, ReLU) at 32, 16, 8 and 4 pixels; the feature is the
                 per-channel spatial mean and standard deviation after every
                 layer, concatenated: 2 x (32 + 32 + 64 + 128) = 512 numbers.
                 The kernels are He-normal (std sqrt(2 / fan_in)) and never
                 trained. Embeddings of randomly initialised networks are a
                 stand-in where ImageNet features are inappropriate or
                 unavailable (Naeem et al. 2020, "Reliable fidelity and
                 diversity metrics for generative models", evaluate a
                 randomly initialised VGG16 embedding for this purpose); they
                 measure low-level image statistics, not ImageNet semantics,
                 and their values are on their own scale, not FID's.
  inception_v3   `inception_v3_pool3(<file>, sha256:<12 hex>)`: the FID
                 variant of InceptionV3 (TF's 2015-12-05 graph, as
                 pytorch-fid's `FIDInceptionA/C/E_1/E_2` patch torchvision's
                 blocks), its 2048-d final average pool ("pool3"). Images are
                 resized to 299x299 bilinearly as `F.interpolate(...,
                 'bilinear', align_corners=False)` does (no antialiasing) and
                 scaled to [-1, 1]. The weights come from a user-supplied
                 `.npz` file (see below); with pytorch-fid's weights the
                 numbers are comparable with pytorch-fid's FIDs (which differ
                 slightly from TF's, whose resize differs).

Determinism. random_conv's kernels are drawn from SplitMix64 (Steele et al.
2014) counters with a Box-Muller transform in NumPy integer/float64
arithmetic, not from `jax.random` or `np.random`, whose streams may change
between library versions: the seed alone fixes the network, on every machine
and version ("v1" names this recipe). All convolutions run at
`Precision.HIGHEST`, so GPUs do not silently use TF32.

Batching. `FeatureNetwork.__call__` embeds `batch_size` images at a time
with one jitted function per (batch shape, image shape); the last, short
batch is padded with zeros and the padding's features dropped, so a set of
any size compiles once. Sets smaller than `batch_size` run as one batch of
their own size.

The InceptionV3 network, its weights file and its converter live in
`msdr.eval.inception`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from msdr.errors import UserInputError
from msdr.eval import quality

_HIGHEST = jax.lax.Precision.HIGHEST
DEFAULT_BATCH_SIZE = 200


# ----------------------------------------------------------------------------
# The common interface.


class FeatureNetwork:
  """A fixed image embedding: images [N, H, W, C] in [0, 1] -> [N, dim].

  Attributes:
    name: identifies the network and its weights exactly; report it next to
      every number computed from these features.
    dim: feature dimension.
  """

  def __init__(self, name: str, dim: int, apply_fn: Callable[..., jax.Array],
               params: Any):
    """Args: name, dim; apply_fn(params, images [B, H, W, C] float32) ->
    [B, dim], jitted; params its first argument."""
    self.name = name
    self.dim = dim
    self._apply_fn = apply_fn
    self._params = params

  def __repr__(self) -> str:
    return f'FeatureNetwork({self.name!r}, dim={self.dim})'

  def __call__(self, images, batch_size: int = DEFAULT_BATCH_SIZE
               ) -> np.ndarray:
    """Embeds images in batches.

    Args:
      images: [N, H, W, C] array in [0, 1], C = 1 (grey, repeated to RGB) or
        3; any numeric dtype (0/1 uint8 masks are fine, 0..255 is not).
      batch_size: images per jitted call; the last batch is zero-padded.

    Returns:
      float32 [N, dim] NumPy array.
    """
    images = _check_images(images)
    if isinstance(batch_size, bool) or not isinstance(
        batch_size, (int, np.integer)) or batch_size < 1:
      raise UserInputError(f'batch_size must be a positive int; got '
                           f'{batch_size!r}')
    n = images.shape[0]
    size = min(int(batch_size), n)
    out = np.empty((n, self.dim), np.float32)
    pending = []  # (start, count, device result): at most one batch queued
    for start in range(0, n, size):
      batch = _batch_in_range(images[start:start + size], start)
      count = batch.shape[0]
      if count < size:
        pad = np.zeros((size - count,) + batch.shape[1:], np.float32)
        batch = np.concatenate([batch, pad])
      pending.append((start, count, self._apply_fn(self._params, batch)))
      if len(pending) == 2:
        _collect(out, *pending.pop(0))
    for item in pending:
      _collect(out, *item)
    return out


def _collect(out: np.ndarray, start: int, count: int, result) -> None:
  out[start:start + count] = np.asarray(result)[:count]


def _check_images(images) -> np.ndarray:
  images = np.asarray(images)
  if images.dtype == object or not (
      np.issubdtype(images.dtype, np.number) or images.dtype == bool):
    raise UserInputError(f'images must be a numeric array; got dtype '
                         f'{images.dtype}')
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or min(
      images.shape) < 1:
    raise UserInputError('images must be [N >= 1, H, W, C] with C = 1 or 3; '
                         f'got shape {images.shape}')
  return images


def _batch_in_range(batch: np.ndarray, start: int) -> np.ndarray:
  batch = np.asarray(batch, np.float32)
  lo, hi = float(np.min(batch)), float(np.max(batch))
  if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-3 or hi > 1 + 1e-3:
    raise UserInputError(
        f'images must be floats in [0, 1]; images {start}..'
        f'{start + batch.shape[0] - 1} range over [{lo}, {hi}] (divide 8-bit '
        'images by 255)')
  return batch


def _to_rgb(x: jax.Array) -> jax.Array:
  return jnp.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def _resize(x: jax.Array, size: int, antialias: bool) -> jax.Array:
  if x.shape[1:3] == (size, size):
    return x
  return jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), 'bilinear',
                          antialias=antialias)


# ----------------------------------------------------------------------------
# random_conv: a fixed random convolutional network.

RANDOM_CONV_SIZE = 64
RANDOM_CONV_WIDTHS = (32, 32, 64, 128)
RANDOM_CONV_KERNEL = 3
_GOLDEN = 0x9E3779B97F4A7C15


def splitmix64(seed: int, count: int) -> np.ndarray:
  """The first `count` outputs of SplitMix64 started at state `seed`, uint64.

  Output i mixes state seed + (i + 1) * 0x9E3779B97F4A7C15 (mod 2^64) by
  z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB;
  z ^= z >> 31, exactly as the sequential generator does.
  """
  index = np.arange(1, count + 1, dtype=np.uint64)
  z = np.uint64(seed) + index * np.uint64(_GOLDEN)  # arrays wrap mod 2^64
  z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return z ^ (z >> np.uint64(31))


def _standard_normal(seed: int, count: int) -> np.ndarray:
  """Box-Muller normals from SplitMix64: output 2i and 2i + 1 give the 53-bit
  uniforms u, v in [0, 1) of normal i = sqrt(-2 log(1 - u)) cos(2 pi v)."""
  uniform = (splitmix64(seed, 2 * count) >> np.uint64(11)).astype(
      np.float64) * 2.0 ** -53
  u, v = uniform[0::2], uniform[1::2]
  return np.sqrt(-2.0 * np.log1p(-u)) * np.cos(2.0 * np.pi * v)


def random_conv_kernels(seed: int = 0) -> list[np.ndarray]:
  """random_conv's kernels, float32 [3, 3, C_in, C_out] (HWIO), in layer order.

  One stream of `_standard_normal(seed, total)` fills the layers in order,
  each in C order of its HWIO shape, scaled by He's sqrt(2 / (9 C_in)).
  """
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not (
      0 <= seed < 2 ** 64):
    raise UserInputError(f'seed must be an int in [0, 2^64); got {seed!r}')
  k = RANDOM_CONV_KERNEL
  shapes, c_in = [], 3
  for width in RANDOM_CONV_WIDTHS:
    shapes.append((k, k, c_in, width))
    c_in = width
  normals = _standard_normal(int(seed), sum(int(np.prod(s)) for s in shapes))
  kernels, offset = [], 0
  for shape in shapes:
    size = int(np.prod(shape))
    std = np.sqrt(2.0 / (shape[0] * shape[1] * shape[2]))
    kernels.append((normals[offset:offset + size].reshape(shape) * std
                    ).astype(np.float32))
    offset += size
  return kernels


@jax.jit
def _random_conv_apply(kernels, images):
  x = _resize(_to_rgb(images), RANDOM_CONV_SIZE, antialias=True) - 0.5
  features = []
  for kernel in kernels:
    x = jax.lax.conv_general_dilated(
        x, kernel, (2, 2), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        precision=_HIGHEST)
    x = jax.nn.relu(x)
    features += [jnp.mean(x, axis=(1, 2)), jnp.std(x, axis=(1, 2))]
  return jnp.concatenate(features, axis=-1)


def random_conv_network(seed: int = 0) -> FeatureNetwork:
  """The default, download-free network `random_conv64-v1(seed=<seed>)`."""
  kernels = [jnp.asarray(k) for k in random_conv_kernels(seed)]
  return FeatureNetwork(f'random_conv64-v1(seed={int(seed)})',
                        2 * sum(RANDOM_CONV_WIDTHS), _random_conv_apply,
                        kernels)


# ----------------------------------------------------------------------------
# Registry and the high-level Fréchet distance.

FEATURE_NETWORKS = ('random_conv', 'inception_v3')


def get_feature_network(name: str = 'random_conv',
                        weights_path: str | None = None, *,
                        seed: int = 0) -> FeatureNetwork:
  """A feature network by registry name.

  Args:
    name: 'random_conv' (default; no weights) or 'inception_v3' (needs
      `weights_path`).
    weights_path: the inception_v3 `.npz` (see the module doc).
    seed: random_conv's seed (0 is the standard network).

  Returns:
    The FeatureNetwork; its `.name` identifies it exactly.
  """
  if name == 'random_conv':
    if weights_path is not None:
      raise UserInputError('random_conv takes no weights file; got '
                           f'weights_path={weights_path!r}')
    return random_conv_network(seed)
  if name == 'inception_v3':
    if weights_path is None:
      raise UserInputError(
          'inception_v3 needs weights_path: an .npz of pytorch-fid\'s FID '
          'Inception weights (msdr.eval.inception.save_inception_npz_from_'
          'torch); without one, use the default random_conv')
    from msdr.eval import inception  # pylint: disable=g-import-not-at-top
    return inception.inception_network(weights_path)
  raise UserInputError(f'unknown feature network {name!r}; choose one of '
                       f'{list(FEATURE_NETWORKS)}')


def frechet_distance_of_images(images_a, images_b,
                               network: FeatureNetwork | str = 'random_conv',
                               batch_size: int = DEFAULT_BATCH_SIZE
                               ) -> dict[str, Any]:
  """Fréchet distance between the feature Gaussians of two image sets.

  Args:
    images_a, images_b: [N, H, W, C] in [0, 1], N >= 2 each (sizes may
      differ; the estimate is biased upwards for small N).
    network: a FeatureNetwork or a registry name without weights.
    batch_size: images per jitted call.

  Returns:
    {'value': float, 'network': the network's name, 'num_a': N_a,
     'num_b': N_b}.
  """
  if isinstance(network, str):
    network = get_feature_network(network)
  mu_a, cov_a = quality.feature_statistics(network(images_a, batch_size))
  mu_b, cov_b = quality.feature_statistics(network(images_b, batch_size))
  return {'value': quality.frechet_distance(mu_a, cov_a, mu_b, cov_b),
          'network': network.name,
          'num_a': int(np.shape(images_a)[0]),
          'num_b': int(np.shape(images_b)[0])}

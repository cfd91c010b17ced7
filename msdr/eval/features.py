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

The InceptionV3 weights file. An `.npz` whose keys and array shapes are those
of pytorch-fid's `fid_inception_v3()` state_dict (torch layouts: conv weights
[out, in, kh, kw]), float32, one key per tensor, e.g.

  Conv2d_1a_3x3.conv.weight        (32, 3, 3, 3)
  Conv2d_1a_3x3.bn.weight          (32,)       gamma
  Conv2d_1a_3x3.bn.bias            (32,)       beta
  Conv2d_1a_3x3.bn.running_mean    (32,)
  Conv2d_1a_3x3.bn.running_var     (32,)
  Mixed_5b.branch5x5_2.conv.weight (64, 48, 5, 5)
  ...
  Mixed_7c.branch_pool.bn.running_var (192,)

470 tensors: 5 for each of the 94 conv + batch-norm (eps 1e-3) + ReLU units;
`inception_npz_spec()` lists them all with their shapes. Other keys (`fc.*`,
`*.num_batches_tracked`) are ignored. `save_inception_npz_from_torch` writes
this file from a loaded state_dict, e.g. pytorch-fid's
`pt_inception-2015-12-05-6726825d.pth`:

  sd = torch.load('pt_inception-2015-12-05-6726825d.pth')
  features.save_inception_npz_from_torch(sd, 'pt_inception.npz')
  net = features.get_feature_network('inception_v3', 'pt_inception.npz')
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Any, Callable

from flax import linen as nn
from flax import traverse_util
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
# inception_v3: the FID InceptionV3, its pool3 features.

INCEPTION_SIZE = 299
INCEPTION_DIM = 2048


class BasicConv2d(nn.Module):
  """torchvision's BasicConv2d: conv (no bias), batch norm (eps 1e-3,
  running statistics), ReLU. `padding` is symmetric (rows, columns)."""
  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    (ph, pw), s = self.padding, self.strides
    x = nn.Conv(self.features, self.kernel_size, (s, s), ((ph, ph), (pw, pw)),
                use_bias=False, precision=_HIGHEST, name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name='bn')(x)
    return nn.relu(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  # TF's average pool: the zero padding is not counted in the mean.
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3(x: jax.Array, stride: int, pad: int) -> jax.Array:
  return nn.max_pool(x, (3, 3), (stride, stride), ((pad, pad), (pad, pad)))


class InceptionA(nn.Module):
  """Mixed_5b/c/d (FIDInceptionA): 64 + 64 + 96 + pool_features channels."""
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(64, (1, 1), name='branch1x1')(x)
    b5 = BasicConv2d(48, (1, 1), name='branch5x5_1')(x)
    b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name='branch5x5_2')(b5)
    b3 = BasicConv2d(64, (1, 1), name='branch3x3dbl_1')(x)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(b3)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(b3)
    bp = BasicConv2d(self.pool_features, (1, 1),
                     name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a: stride-2 reduction, 384 + 96 + C_in channels."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(384, (3, 3), strides=2, name='branch3x3')(x)
    bd = BasicConv2d(64, (1, 1), name='branch3x3dbl_1')(x)
    bd = BasicConv2d(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = BasicConv2d(96, (3, 3), strides=2, name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3(x, 2, 0)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b/c/d/e (FIDInceptionC): factorised 7x7, 4 x 192 channels."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = BasicConv2d(192, (1, 1), name='branch1x1')(x)
    b7 = BasicConv2d(c7, (1, 1), name='branch7x7_1')(x)
    b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name='branch7x7_2')(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7)
    bd = BasicConv2d(c7, (1, 1), name='branch7x7dbl_1')(x)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(bd)
    bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(bd)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(bd)
    bd = BasicConv2d(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(bd)
    bp = BasicConv2d(192, (1, 1), name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a: stride-2 reduction, 320 + 192 + C_in channels."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(192, (1, 1), name='branch3x3_1')(x)
    b3 = BasicConv2d(320, (3, 3), strides=2, name='branch3x3_2')(b3)
    b7 = BasicConv2d(192, (1, 1), name='branch7x7x3_1')(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = BasicConv2d(192, (3, 3), strides=2, name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2, 0)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b (FIDInceptionE_1, average pool) and Mixed_7c (FIDInceptionE_2,
  max pool, as TF's graph has it): 320 + 768 + 768 + 192 = 2048 channels."""
  pool: str  # 'avg' or 'max'

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(320, (1, 1), name='branch1x1')(x)
    b3 = BasicConv2d(384, (1, 1), name='branch3x3_1')(x)
    b3 = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3),
        BasicConv2d(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3),
    ], axis=-1)
    bd = BasicConv2d(448, (1, 1), name='branch3x3dbl_1')(x)
    bd = BasicConv2d(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(bd),
        BasicConv2d(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(bd),
    ], axis=-1)
    pooled = (_avg_pool_3x3(x) if self.pool == 'avg'
              else _max_pool_3x3(x, 1, 1))
    bp = BasicConv2d(192, (1, 1), name='branch_pool')(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3Pool3(nn.Module):
  """FID InceptionV3 up to its final average pool.

  x [N, H, W, 3] already scaled to [-1, 1], H, W >= 75 -> [N, 2048]. The
  submodules are named as pytorch-fid's attributes, so variable paths map
  one-to-one to its state_dict keys (`_TORCH_LEAF`).
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = BasicConv2d(32, (3, 3), strides=2, name='Conv2d_1a_3x3')(x)
    x = BasicConv2d(32, (3, 3), name='Conv2d_2a_3x3')(x)
    x = BasicConv2d(64, (3, 3), padding=(1, 1), name='Conv2d_2b_3x3')(x)
    x = _max_pool_3x3(x, 2, 0)
    x = BasicConv2d(80, (1, 1), name='Conv2d_3b_1x1')(x)
    x = BasicConv2d(192, (3, 3), name='Conv2d_4a_3x3')(x)
    x = _max_pool_3x3(x, 2, 0)
    x = InceptionA(32, name='Mixed_5b')(x)
    x = InceptionA(64, name='Mixed_5c')(x)
    x = InceptionA(64, name='Mixed_5d')(x)
    x = InceptionB(name='Mixed_6a')(x)
    x = InceptionC(128, name='Mixed_6b')(x)
    x = InceptionC(160, name='Mixed_6c')(x)
    x = InceptionC(160, name='Mixed_6d')(x)
    x = InceptionC(192, name='Mixed_6e')(x)
    x = InceptionD(name='Mixed_7a')(x)
    x = InceptionE('avg', name='Mixed_7b')(x)
    x = InceptionE('max', name='Mixed_7c')(x)
    return jnp.mean(x, axis=(1, 2))


# Flax variable leaf -> (collection, torch state_dict suffix).
_TORCH_LEAF = {
    ('conv', 'kernel'): ('params', 'conv.weight'),
    ('bn', 'scale'): ('params', 'bn.weight'),
    ('bn', 'bias'): ('params', 'bn.bias'),
    ('bn', 'mean'): ('batch_stats', 'bn.running_mean'),
    ('bn', 'var'): ('batch_stats', 'bn.running_var'),
}


@functools.lru_cache(maxsize=1)
def _inception_layout() -> tuple[tuple[str, tuple[str, ...], tuple[int, ...]],
                                 ...]:
  """(torch key, flax path incl. collection, torch shape) for every tensor."""
  shapes = jax.eval_shape(
      InceptionV3Pool3().init, jax.random.key(0),
      jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32))
  layout = []
  for path, leaf in traverse_util.flatten_dict(shapes).items():
    collection, suffix = _TORCH_LEAF[path[-2:]]
    assert collection == path[0], path
    shape = leaf.shape
    if path[-1] == 'kernel':  # HWIO -> OIHW
      shape = (shape[3], shape[2], shape[0], shape[1])
    layout.append(('.'.join(path[1:-2] + (suffix,)), path, shape))
  return tuple(sorted(layout))


def inception_npz_spec() -> dict[str, tuple[int, ...]]:
  """The inception_v3 weights file's keys and shapes (pytorch-fid's names,
  torch layouts), in sorted order."""
  return {key: shape for key, _, shape in _inception_layout()}


def _to_numpy(value) -> np.ndarray:
  if hasattr(value, 'detach'):  # a torch.Tensor; torch is not imported here
    value = value.detach().cpu().numpy()
  return np.asarray(value)


def _check_inception_arrays(arrays, source: str) -> dict[str, np.ndarray]:
  """Picks the spec's keys out of `arrays` (a mapping), float32, checking
  presence and shapes; raises UserInputError naming what is wrong."""
  spec = inception_npz_spec()
  missing = [key for key in spec if key not in arrays]
  if missing:
    raise UserInputError(
        f'{source} lacks {len(missing)} of the {len(spec)} InceptionV3 '
        f'tensors, e.g. {missing[:3]}; expected pytorch-fid FID-Inception '
        'state_dict names (msdr.eval.features.inception_npz_spec())')
  out, bad = {}, []
  for key, shape in spec.items():
    value = _to_numpy(arrays[key])
    if value.shape != shape:
      bad.append(f'{key}: {value.shape}, expected {shape}')
    elif not np.issubdtype(value.dtype, np.floating):
      bad.append(f'{key}: dtype {value.dtype}, expected floats')
    else:
      out[key] = value.astype(np.float32)
  if bad:
    raise UserInputError(f'{source} has {len(bad)} mismatched InceptionV3 '
                         f'tensors: ' + '; '.join(bad[:3]))
  return out


def save_inception_npz_from_torch(state_dict, path: str) -> str:
  """Writes the inception_v3 weights file from a loaded state_dict.

  Args:
    state_dict: mapping from pytorch-fid's FID-Inception names to tensors or
      arrays (e.g. `torch.load('pt_inception-2015-12-05-6726825d.pth')`);
      torch is not needed to call this with NumPy arrays. Keys the network
      does not use (`fc.*`, `*.num_batches_tracked`) are dropped.
    path: where to write the `.npz` (NumPy appends `.npz` if missing).

  Returns:
    The path written.
  """
  arrays = _check_inception_arrays(state_dict, 'the state_dict')
  if not str(path).endswith('.npz'):
    path = f'{path}.npz'
  np.savez(path, **arrays)
  return str(path)


def inception_variables(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
  """Flax variables of `InceptionV3Pool3` from checked torch-named arrays
  (conv weights OIHW -> HWIO)."""
  flat = {}
  for key, path, _ in _inception_layout():
    value = arrays[key]
    if path[-1] == 'kernel':
      value = value.transpose(2, 3, 1, 0)
    flat[path] = jnp.asarray(value)
  return traverse_util.unflatten_dict(flat)


def _file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      digest.update(block)
  return digest.hexdigest()


def load_inception_npz(path: str) -> dict[str, np.ndarray]:
  """Reads and checks an inception_v3 weights file (see the module doc)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise UserInputError(
        f'InceptionV3 weights file not found: {path!r}; convert pytorch-fid\'s '
        'pt_inception-2015-12-05-6726825d.pth with msdr.eval.features.'
        'save_inception_npz_from_torch, or use the default random_conv')
  try:
    data = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    raise UserInputError(f'cannot read {path!r} as an .npz of InceptionV3 '
                         f'weights: {e}') from e
  if not isinstance(data, np.lib.npyio.NpzFile):
    raise UserInputError(f'{path!r} holds one array, not an .npz archive of '
                         'InceptionV3 weights')
  with data:
    arrays = {key: data[key] for key in data.files}
  return _check_inception_arrays(arrays, repr(path))


@jax.jit
def _inception_apply(variables, images):
  x = _resize(_to_rgb(images), INCEPTION_SIZE, antialias=False)
  return InceptionV3Pool3().apply(variables, 2.0 * x - 1.0)


def inception_network(weights_path: str) -> FeatureNetwork:
  """`inception_v3_pool3(<file name>, sha256:<first 12 hex>)` from an npz."""
  arrays = load_inception_npz(weights_path)
  name = (f'inception_v3_pool3({os.path.basename(os.fspath(weights_path))}, '
          f'sha256:{_file_sha256(weights_path)[:12]})')
  return FeatureNetwork(name, INCEPTION_DIM, _inception_apply,
                        inception_variables(arrays))


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
          'Inception weights (msdr.eval.features.save_inception_npz_from_'
          'torch); without one, use the default random_conv')
    return inception_network(weights_path)
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

"""The FID InceptionV3 (pool3, 2048-d) for `msdr.eval.features`, with
weights from a user's file (nothing is downloaded): the architecture as
pytorch-fid builds it, average pools that do not count the padding and a max
pool in Mixed_7c, every convolution at `Precision.HIGHEST`.

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
  inception.save_inception_npz_from_torch(sd, 'pt_inception.npz')
  net = features.get_feature_network('inception_v3', 'pt_inception.npz')
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Any

from flax import linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from msdr.errors import UserInputError
from msdr.eval.features import FeatureNetwork
from msdr.eval.features import _HIGHEST
from msdr.eval.features import _resize
from msdr.eval.features import _to_rgb

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

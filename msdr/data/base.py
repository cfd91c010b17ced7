"""The ground-truth dataset contract shared by training and the metrics.

A ground-truth dataset is a grid of discrete factors of variation and a way to
turn factor indices into images. Procedural datasets render on the device in
pure JAX (`jittable = True`); datasets read from tensorflow-datasets look images
up on the host (`jittable = False`). Both expose the same names:

  factor_names, factor_sizes, factor_values, observation_shape,
  sample_factors(key, n), observations_from_factors(factors, key=None),
  sample(key, n).

Factors are always integer indices into each factor's grid of values;
`factor_values[i][k]` is the physical value (a scale, an angle, a hue...) of
index `k` of factor `i`.
"""

from __future__ import annotations

import abc
import functools
import math
import jax
import jax.numpy as jnp
import numpy as np

from msdr.errors import UserInputError


def _is_traced(x) -> bool:
  return isinstance(x, jax.core.Tracer)


class GroundTruthDataset(abc.ABC):
  """A dataset with a full grid of discrete ground-truth factors.

  Subclasses set `name`, `factor_names`, `factor_values`, `observation_shape`
  and implement `_render(factors, key)`.
  """

  name: str
  factor_names: tuple[str, ...]
  factor_values: tuple[np.ndarray, ...]
  observation_shape: tuple[int, int, int]
  # True when observations_from_factors is pure JAX and may run inside jit.
  jittable: bool = True
  # True when an image holds detail that no factor names (drawn from `key`).
  has_nuisance: bool = False
  # Names of the values of categorical factors, e.g. {'shape': ('square', ...)}.
  value_names: dict[str, tuple[str, ...]] = {}

  @property
  def factor_sizes(self) -> tuple[int, ...]:
    return tuple(len(v) for v in self.factor_values)

  @property
  def num_factors(self) -> int:
    return len(self.factor_values)

  @property
  def num_combinations(self) -> int:
    """Number of points of the factor grid."""
    return math.prod(self.factor_sizes)

  # -- factors ---------------------------------------------------------------

  def sample_factors(self, key: jax.Array, n: int) -> jax.Array:
    """Draws `n` factor vectors uniformly over the grid.

    Args:
      key: a PRNG key.
      n: how many (a non-negative Python int).

    Returns:
      int32 [n, F] factor indices.
    """
    return uniform_indices(key, _check_count(n, self.name), self.factor_sizes)

  def check_factors(self, factors) -> jax.Array:
    """Validates factor indices and returns them as an int32 array.

    Shapes are checked always. Values are checked when they are concrete (a
    NumPy array or a JAX array outside `jit`; the check reads them on the host).
    Under `jit` the values cannot be inspected and are clipped into the grid.

    Raises:
      UserInputError: wrong rank, wrong number of factors, non-integer dtype or
        an index outside its factor's grid.
    """
    shape = tuple(np.shape(factors))
    names = ', '.join(self.factor_names)
    if len(shape) != 2 or shape[1] != self.num_factors:
      raise UserInputError(
          f'{self.name}: factors must have shape [n, {self.num_factors}] '
          f'({names}); got shape {shape}.')
    dtype = np.dtype(factors.dtype) if hasattr(factors, 'dtype') else (
        np.asarray(factors).dtype)
    if not np.issubdtype(dtype, np.integer):
      raise UserInputError(
          f'{self.name}: factors must be integer indices into the factor grid; '
          f'got dtype {dtype}.')
    sizes = np.asarray(self.factor_sizes)
    if _is_traced(factors):
      return jnp.clip(factors.astype(jnp.int32), 0, sizes - 1)
    host = np.asarray(factors)
    if host.size:
      low, high = host.min(axis=0), host.max(axis=0)
      for i, name in enumerate(self.factor_names):
        if low[i] < 0 or high[i] >= sizes[i]:
          raise UserInputError(
              f'{self.name}: factor {name!r} takes indices 0..{sizes[i] - 1}; '
              f'got values from {low[i]} to {high[i]}.')
    return jnp.asarray(host, jnp.int32)

  def factors_to_index(self, factors) -> np.ndarray | jax.Array:
    """Flat (row-major) index of each factor vector in the grid."""
    xp = jnp if isinstance(factors, jax.Array) else np
    strides = np.cumprod((1,) + self.factor_sizes[:0:-1])[::-1]
    return (xp.asarray(factors) * xp.asarray(strides)).sum(-1)

  def index_to_factors(self, index) -> np.ndarray:
    """Inverse of `factors_to_index`, on the host."""
    return np.stack(np.unravel_index(np.asarray(index), self.factor_sizes), -1)

  # -- observations ----------------------------------------------------------

  def observations_from_factors(self, factors, key: jax.Array | None = None):
    """Renders (or looks up) the images of the given factor indices.

    Args:
      factors: int [n, F] factor indices.
      key: PRNG key for the nuisance detail of datasets that have it (one key
        for the whole batch; each image gets its own draw). With `None`, each
        grid point gets a fixed detail of its own, so the dataset is a finite
        set of images. Ignored by datasets without nuisance.

    Returns:
      float32 [n, H, W, C] in [0, 1].
    """
    factors = self.check_factors(factors)
    if self.jittable:
      return self._compiled['render'](factors, key)
    return self._render(factors, key)

  def sample(self, key: jax.Array, n: int):
    """Draws `n` factor vectors and their images.

    Returns:
      (observations float32 [n, H, W, C], factors int32 [n, F]).
    """
    n = _check_count(n, self.name)
    if self.jittable:
      return self._compiled['sample'](key, n)
    return self._sample(key, n)

  def _sample(self, key: jax.Array, n: int):
    factor_key, nuisance_key = jax.random.split(key)
    factors = self.sample_factors(factor_key, n)
    return self._render(factors, nuisance_key), factors

  @functools.cached_property
  def _compiled(self) -> dict:
    # Called eagerly, the renderers would dispatch op by op; inside an outer
    # jit these inline.
    return {'render': jax.jit(self._render),
            'sample': jax.jit(self._sample, static_argnums=1)}

  @abc.abstractmethod
  def _render(self, factors: jax.Array, key: jax.Array | None):
    """Images of already validated int32 factors."""

  # -- description -----------------------------------------------------------

  def summary(self) -> str:
    """A few human-readable lines describing the dataset."""
    lines = [
        f'dataset {self.name}: observations {self.observation_shape}, '
        f'{self.num_combinations:,} factor combinations'
        + (', with nuisance detail' if self.has_nuisance else ''),
    ]
    for name, values in zip(self.factor_names, self.factor_values):
      values = np.asarray(values)
      if name in self.value_names:
        span = ', '.join(self.value_names[name])
      elif np.issubdtype(values.dtype, np.number):
        span = f'{values.min():.4g} .. {values.max():.4g}'
      else:
        span = ', '.join(map(str, values))
      lines.append(f'  {name:<14} {len(values):>3} values  {span}')
    return '\n'.join(lines)

  def __repr__(self) -> str:
    return f'<{type(self).__name__} {self.name!r} {self.observation_shape}>'


def _check_count(n, name: str) -> int:
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
    raise UserInputError(
        f'{name}: the number of samples must be a non-negative int; got {n!r}.')
  return int(n)


# Largest size drawn by multiply-shift in 32-bit halves (`uniform_indices`).
_MULTIPLY_SHIFT_MAX = 2**16


def _multiply_shift(words: jax.Array, size: int) -> jax.Array:
  """floor(words * size / 2^32) as int32, exact for size <= 2^16: the
  product of each 16-bit half of the words with size fits in 32 bits."""
  s = jnp.uint32(size)
  high = (words >> 16) * s + (((words & 0xFFFF) * s) >> 16)
  return (high >> 16).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _uniform_indices(key: jax.Array, n: int, sizes: tuple[int, ...]
                     ) -> jax.Array:
  columns = []
  for column_key, size in zip(jax.random.split(key, len(sizes)), sizes):
    if size > _MULTIPLY_SHIFT_MAX:
      columns.append(jax.random.randint(column_key, (n,), 0, size, jnp.int32))
      continue
    columns.append(_multiply_shift(
        jax.random.bits(column_key, (n,), jnp.uint32), size))
  if not columns:
    return jnp.zeros((n, 0), jnp.int32)
  return jnp.stack(columns, axis=1)


def uniform_indices(key: jax.Array, n: int, sizes) -> jax.Array:
  """int32 [n, len(sizes)]: column j uniform over 0..sizes[j] - 1.

  Each index is floor(u s / 2^32) of one random 32-bit word u (Lemire's
  multiply-shift, computed exactly from u's two 16-bit halves), so every
  index gets floor(2^32 / s) or ceil(2^32 / s) of the words: a relative bias
  below s / 2^32 (1e-8 for s = 40); jax.random.randint draws two words per
  index. Each column draws its own [n] words: on the CPU one draw of
  [n, F] words is several times slower per word (640,000 x 5 indices:
  9 ms here, 51 ms by randint of [n, F]). A size above 2^16 (where the
  halves' products could overflow) goes to jax.random.randint.
  """
  return _uniform_indices(key, int(n), tuple(int(s) for s in sizes))


def _mix32(x: jax.Array) -> jax.Array:
  """A 32-bit integer finaliser (lowbias32): every input bit moves ~half the
  output bits."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def hash_uniform(words: jax.Array, rows: jax.Array, num: int) -> jax.Array:
  """Deterministic uniforms float32 [len(rows), num] in [0, 1).

  A counter-based hash of (words, row, column): cheap to compile and run,
  which matters for nuisance detail drawn per image inside every batch
  (a threefry draw costs about a second of XLA compile time on a small CPU).
  Statistically adequate for textures, not for cryptography.

  Args:
    words: uint32 [k] seed words (e.g. `jax.random.key_data(key)`).
    rows: int [n] one id per row (an image's index or grid point).
    num: uniforms per row.
  """
  seed = jnp.uint32(0x9E3779B9)
  for w in jnp.asarray(words, jnp.uint32).reshape(-1):
    seed = _mix32(seed ^ w)
  row = _mix32(seed + jnp.asarray(rows).astype(jnp.uint32)[:, None]
               * jnp.uint32(0x85EBCA6B))
  bits = _mix32(row ^ (jnp.arange(num, dtype=jnp.uint32)[None, :]
                       * jnp.uint32(0xC2B2AE35) + jnp.uint32(1)))
  return (bits >> 8).astype(jnp.float32) * (1.0 / (1 << 24))


def linspace_values(start: float, stop: float, num: int,
                    endpoint: bool = True) -> np.ndarray:
  return np.linspace(start, stop, num, endpoint=endpoint).astype(np.float32)

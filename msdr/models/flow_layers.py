"""The invertible pieces of MS-Flow (`msdr.models.ms_flow`): squeezes, the
dequantisation and logit pre-transform, and one flow step's actnorm,
invertible 1x1 convolution and affine coupling whose conditioner sees y.
Every transform returns its output and the log|det| of its Jacobian per
example, and takes `reverse` for its inverse.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from msdr.models import small_linalg

Params = Any

# -- shape plumbing ------------------------------------------------------------


def squeeze(x: jax.Array) -> jax.Array:
  """[B, 2H, 2W, C] -> [B, H, W, 4C], channels ordered (row, column, c)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze(x: jax.Array) -> jax.Array:
  """The inverse of `squeeze`: [B, H, W, 4C] -> [B, 2H, 2W, C]."""
  b, h, w, c4 = x.shape
  c = c4 // 4
  x = x.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, 2 * h, 2 * w, c)


def level_shapes(image_shape: tuple[int, int, int],
                 levels: int) -> list[tuple[int, int, int]]:
  """The [h, w, c] each level's steps act on (after its squeeze)."""
  h, w, c = image_shape
  shapes = []
  for _ in range(levels):
    h, w, c = h // 2, w // 2, 4 * c
    shapes.append((h, w, c))
    c //= 2  # half factored out before the next level
  return shapes


# -- the pre-transform ---------------------------------------------------------


def _sum_per_example(a: jax.Array) -> jax.Array:
  return jnp.sum(a.reshape(a.shape[0], -1), axis=-1)


def logit_forward(x: jax.Array, num_bits: int,
                  alpha: float) -> tuple[jax.Array, jax.Array]:
  """x -> v = logit(alpha + (1 - 2 alpha) (x (n - 1) + 1/2) / n), log-det."""
  n = 2.0 ** num_bits
  a = (1 - 2 * alpha) * (n - 1) / n  # ds/dx
  s = alpha + (1 - 2 * alpha) * (x * (n - 1) + 0.5) / n
  v = jnp.log(s) - jnp.log1p(-s)
  log_det = _sum_per_example(math.log(a) - jnp.log(s) - jnp.log1p(-s))
  return v, log_det


def logit_inverse(v: jax.Array, num_bits: int,
                  alpha: float) -> tuple[jax.Array, jax.Array]:
  """The inverse of `logit_forward` and its log-det (ds/dv = s (1 - s))."""
  n = 2.0 ** num_bits
  a = (1 - 2 * alpha) * (n - 1) / n
  s = jax.nn.sigmoid(v)
  x = ((s - alpha) / (1 - 2 * alpha) * n - 0.5) / (n - 1)
  log_det = _sum_per_example(
      -jax.nn.softplus(-v) - jax.nn.softplus(v) - math.log(a))
  return x, log_det


def dequantize(key: jax.Array, x: jax.Array, num_bits: int) -> jax.Array:
  """x snapped to its bin k / (n - 1), plus uniform noise over the bin."""
  m = 2.0 ** num_bits - 1
  noise = jax.random.uniform(key, x.shape, x.dtype)
  return (jnp.round(x * m) + noise - 0.5) / m


# -- one flow step -------------------------------------------------------------


class Conditioner(nn.Module):
  """(shift, raw log-scale) for `channels` channels from (a, y): conv 3x3,
  ReLU, conv 1x1, ReLU, zero-initialised conv 3x3 (so both start at 0)."""
  hidden: int
  channels: int

  @nn.compact
  def __call__(self, a: jax.Array, y: jax.Array):
    h = jnp.concatenate([a, y], axis=-1)
    h = nn.relu(nn.Conv(self.hidden, (3, 3))(h))
    h = nn.relu(nn.Conv(self.hidden, (1, 1))(h))
    out = nn.Conv(2 * self.channels, (3, 3), kernel_init=nn.initializers.zeros,
                  name='out')(h)
    return out[..., :self.channels], out[..., self.channels:]


def _pixels(h: jax.Array) -> int:
  return h.shape[1] * h.shape[2]


def actnorm(p: Params, h: jax.Array, reverse: bool):
  """(h + b) exp(g) per channel (or its inverse) and the log-det."""
  log_det = _pixels(h) * jnp.sum(p['log_scale'])
  if reverse:
    return h * jnp.exp(-p['log_scale']) - p['bias'], -log_det
  return (h + p['bias']) * jnp.exp(p['log_scale']), log_det


def invconv_matrix(p: Params) -> tuple[jax.Array, jax.Array]:
  """(W, W^-1) of the 1x1 conv W = L (U + diag(exp(d)))."""
  c = p['log_diag'].shape[0]
  eye = jnp.eye(c, dtype=p['lu'].dtype)
  lower = jnp.tril(p['lu'], -1) + eye
  upper = jnp.triu(p['lu'], 1) + jnp.diag(jnp.exp(p['log_diag']))
  inv_lower = small_linalg.solve_lower(lower, eye, unit_diagonal=True)
  inv = small_linalg.solve_upper(upper, inv_lower)
  return lower @ upper, inv


def invconv(p: Params, h: jax.Array, reverse: bool):
  """h -> W h at every pixel (or W^-1 h) and the log-det H W sum(d)."""
  w, w_inv = invconv_matrix(p)
  log_det = _pixels(h) * jnp.sum(p['log_diag'])
  if reverse:
    return h @ w_inv.T, -log_det
  return h @ w.T, log_det


def coupling(net: Conditioner, p: Params, h: jax.Array, y: jax.Array,
             parity: int, bound: float, reverse: bool):
  """Affine coupling of one channel half given the other half and y.

  Args:
    net: the conditioner; p its parameters.
    h: [B, h, w, c], c even.
    y: [B, h, w, c_y], y at this level.
    parity: 0 transforms the second half given the first, 1 the reverse.
    bound: the log-scale is bound * tanh(raw / bound).
    reverse: apply the inverse.

  Returns:
    The output and its log-det [B] (of the inverse when `reverse`).
  """
  half = h.shape[-1] // 2
  first, second = h[..., :half], h[..., half:]
  a, t = (first, second) if parity == 0 else (second, first)
  shift, raw = net.apply({'params': p}, a, y)
  log_scale = bound * jnp.tanh(raw / bound)
  if reverse:
    t = (t - shift) * jnp.exp(-log_scale)
  else:
    t = t * jnp.exp(log_scale) + shift
  log_det = _sum_per_example(log_scale)
  out = (a, t) if parity == 0 else (t, a)
  return jnp.concatenate(out, axis=-1), -log_det if reverse else log_det

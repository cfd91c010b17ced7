"""disentanglement_lib's 64x64 convolutional encoder and decoder.

  encoder: conv 32 k4 s2, conv 32 k4 s2, conv 64 k2 s2, conv 64 k2 s2 (ReLU),
           flatten, dense 256 (ReLU), dense 2D -> (mean, logvar) of c
  decoder: dense 256, dense 1024 (ReLU), reshape 4x4x64, conv-transpose
           64, 32, 32 k4 s2 (ReLU), conv-transpose C k4 s2 -> logits

Convolutions pad 'SAME' as in TensorFlow, so every stride halves (or doubles)
the side: 64 -> 32 -> 16 -> 8 -> 4 and back. Kernels and dense weights start
from tf.layers' defaults (Glorot uniform, zero biases).

The layers hold exactly the parameters of `nn.Conv` / `nn.ConvTranspose` and
compute exactly their functions, but reorder the arithmetic into matrix
products, because XLA differentiates strided and transposed convolutions
slowly (ENVIRONMENT.md: ~90% of the step on a GPU; measured here on the 2-core
CPU, the whole beta-TCVAE step at batch 64 goes from 1.3 to 3.2 steps/s):

* a stride-2 convolution becomes space-to-depth (stride 1 over 2x2 pixel
  blocks) and one matmul of 2x2-block patches (`conv_s2`);
* a 4x4 stride-2 transposed convolution writes output pixel 2m + r (per axis)
  from input pixels m - 1 and m (phase r = 0, kernel taps 0 and 2) or m and
  m + 1 (phase r = 1, taps 1 and 3), so each of the four output phases is a
  matmul of 2x2 input patches with four of the sixteen taps, and the phases
  interleave by depth-to-space (sub-pixel convolution, `conv_transpose_s2`).

`tests/test_networks.py` checks both against XLA's convolutions.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

# Phase r of an output axis reads input offsets (-1, 0) through kernel taps
# (0, 2) when r = 0, and offsets (0, 1) through taps (1, 3) when r = 1: the
# taps are kernel[r::2].
_PHASE_OFFSETS = ((-1, 0), (0, 1))
_DIMS = ('NHWC', 'HWIO', 'NHWC')


def space_to_depth(x: jax.Array) -> jax.Array:
  """[B, 2H, 2W, C] -> [B, H, W, 4C], channels ordered (row, column, c)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // 2, w // 2, 4 * c)


def conv_s2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-2 'SAME' convolution with a 2x2 or 4x4 kernel, as one matmul.

  With an even input side, TF's 'SAME' pads a 4x4 kernel by one pixel on
  each side and a 2x2 kernel not at all. After space-to-depth the stride-2
  window becomes a stride-1 window of 2x2 (4x4 kernel) or 1x1 (2x2 kernel)
  blocks, whose patches are contiguous slices: im2col without strided reads.

  Args:
    x: [B, H, W, C_in], H and W even.
    kernel: [k, k, C_in, C_out], k in (2, 4), laid out as `nn.Conv`'s.

  Returns:
    [B, H/2, W/2, C_out], equal to `lax.conv_general_dilated(x, kernel,
    (2, 2), 'SAME')`.
  """
  size, _, c_in, c_out = kernel.shape
  if size == 2:
    return space_to_depth(x) @ kernel.reshape(4 * c_in, c_out)
  if size != 4:
    raise ValueError(f'conv_s2 takes 2x2 or 4x4 kernels, got {size}x{size}')
  blocks = space_to_depth(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))))
  h, w = blocks.shape[1] - 1, blocks.shape[2] - 1
  patches = jnp.concatenate([blocks[:, a:a + h, b:b + w]
                             for a in (0, 1) for b in (0, 1)], axis=-1)
  # Patch channel (a, b, row, column, c) meets kernel tap (2a + row, 2b + col).
  kernel = kernel.reshape(2, 2, 2, 2, c_in, c_out).transpose(0, 2, 1, 3, 4, 5)
  return patches @ kernel.reshape(16 * c_in, c_out)


def conv_transpose_s2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Sub-pixel form of a 4x4 stride-2 'SAME' transposed convolution.

  Each of the four output phases (ry, rx) is one matmul of 2x2 input patches
  with four of the sixteen taps; the phases interleave by depth-to-space.

  Args:
    x: [B, H, W, C_in] input.
    kernel: [4, 4, C_in, C_out], laid out as `flax.linen.ConvTranspose`'s
      (no kernel flip, `transpose_kernel=False`).

  Returns:
    [B, 2H, 2W, C_out], equal to `jax.lax.conv_transpose(x, kernel, (2, 2),
    'SAME')`.
  """
  if kernel.shape[:2] != (4, 4):
    raise ValueError(f'conv_transpose_s2 takes a 4x4 kernel, got '
                     f'{kernel.shape[0]}x{kernel.shape[1]}')
  b, h, w, c_in = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  rows = []
  for ry in (0, 1):
    cols = []
    for rx in (0, 1):
      patches = jnp.concatenate(
          [padded[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
           for dy in _PHASE_OFFSETS[ry] for dx in _PHASE_OFFSETS[rx]], -1)
      taps = kernel[ry::2, rx::2]
      cols.append(patches @ taps.reshape(4 * c_in, -1))
    rows.append(jnp.stack(cols, axis=3))  # [B, H, W, rx, C]
  out = jnp.stack(rows, axis=2)  # [B, H, ry, W, rx, C]
  return out.reshape(b, 2 * h, 2 * w, kernel.shape[-1])


def _conv_transpose_xla(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return jax.lax.conv_transpose(x, kernel, (2, 2), 'SAME',
                                dimension_numbers=_DIMS)


# tf.layers' default initialisers, as disentanglement_lib trains with.
KERNEL_INIT = nn.initializers.xavier_uniform()


class ConvS2(nn.Module):
  """`nn.Conv(features, (size, size), (2, 2), 'SAME')`: the same parameters
  and function, computed by `conv_s2`."""
  features: int
  size: int
  kernel_init: Callable = KERNEL_INIT

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', self.kernel_init,
                        (self.size, self.size, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    return conv_s2(x, kernel.astype(x.dtype)) + bias


class ConvTransposeS2(nn.Module):
  """`nn.ConvTranspose(features, (4, 4), (2, 2), 'SAME')`: the same
  parameters and function, computed by `conv_transpose_s2`.

  Few output channels (the image layer) make the sub-pixel patches cost more
  than they save on a CPU; there XLA's own transposed convolution is used
  (chosen at lowering time, so one jitted function serves every platform).
  """
  features: int
  kernel_init: Callable = KERNEL_INIT

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', self.kernel_init,
                        (4, 4, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    kernel = kernel.astype(x.dtype)
    if self.features < 8:
      y = jax.lax.platform_dependent(x, kernel, cpu=_conv_transpose_xla,
                                     default=conv_transpose_s2)
    else:
      y = conv_transpose_s2(x, kernel)
    return y + bias


class Encoder(nn.Module):
  """x [B, 64, 64, C] in [0, 1] -> (mean, logvar), each [B, latent_dim]."""
  latent_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    for features, size in ((32, 4), (32, 4), (64, 2), (64, 2)):
      x = nn.relu(ConvS2(features, size)(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(256, kernel_init=KERNEL_INIT)(x))
    mean = nn.Dense(self.latent_dim, kernel_init=KERNEL_INIT, name='mean')(x)
    logvar = nn.Dense(self.latent_dim, kernel_init=KERNEL_INIT,
                      name='logvar')(x)
    return mean, logvar


class Decoder(nn.Module):
  """c [B, latent_dim] -> logits [B, 64, 64, channels]."""
  channels: int

  @nn.compact
  def __call__(self, c: jax.Array) -> jax.Array:
    x = nn.relu(nn.Dense(256, kernel_init=KERNEL_INIT)(c))
    x = nn.relu(nn.Dense(1024, kernel_init=KERNEL_INIT)(x))
    x = x.reshape(x.shape[0], 4, 4, 64)
    for features in (64, 32, 32):
      x = nn.relu(ConvTransposeS2(features)(x))
    return ConvTransposeS2(self.channels)(x)

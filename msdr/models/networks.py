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
slowly (the whole beta-TCVAE step with XLA's convolutions against these
forms: 1.3 against 10.7 steps/s at batch 64 on the 2-core CPU; 34,900
against 392,000 images/s at batch 1024 on one H200, `benchmarks/forms.py`):

* a stride-2 convolution becomes space-to-depth (stride 1 over 2x2 pixel
  blocks); a 2x2 kernel is then one matmul, and a 4x4 kernel either one
  matmul of 2x2-block patches or (when 4 C_in > C_out, fewer values) one
  matmul of the blocks with the taps of all four block offsets followed by a
  sum of four shifted slices, whose backward pass is written out
  (`conv_s2`);
* a 4x4 stride-2 transposed convolution is the input gradient (adjoint) of
  a 4x4 stride-2 convolution with the kernel flipped and its channels
  swapped, so it runs as that convolution's shifted form backwards, with
  the convolution's forward pass as its backward pass; with few output
  channels (the image layer) it is instead one matmul of the input with all
  sixteen taps and per output phase a sum of four shifted slices
  (`conv_transpose_s2`; the sub-pixel form, one matmul of 2x2 input patches
  per output phase, is kept as method='phases').
On the 2-core CPU these written-out backward passes took the stage-1 step
at batch 64 from about 440 to 650-720 images/s in alternating runs (README,
"Stage-1 train step").

`tests/test_networks.py` checks every form against XLA's convolutions and
float64 NumPy.
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


def space_to_depth(x: jax.Array) -> jax.Array:
  """[B, 2H, 2W, C] -> [B, H, W, 4C], channels ordered (row, column, c)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // 2, w // 2, 4 * c)


def depth_to_space(x: jax.Array) -> jax.Array:
  """[B, H, W, 4C] -> [B, 2H, 2W, C]: the inverse of `space_to_depth`."""
  b, h, w, c4 = x.shape
  x = x.reshape(b, h, w, 2, 2, c4 // 4).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, 2 * h, 2 * w, c4 // 4)


def _pad1(x: jax.Array) -> jax.Array:
  """One zero pixel on each side of [B, H, W, C] (TF 'SAME' for a 4x4
  stride-2 window on an even side)."""
  return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))


def _crop1(x: jax.Array) -> jax.Array:
  """The adjoint of `_pad1`: the border pixel cut."""
  return x[:, 1:-1, 1:-1]


def _padded_blocks(x: jax.Array) -> jax.Array:
  """`_pad1`, then space-to-depth: [B, 2H, 2W, C] -> [B, H + 1, W + 1, 4C]."""
  return space_to_depth(_pad1(x))


def _block_kernel(kernel: jax.Array) -> jax.Array:
  """[4, 4, C_in, C_out] -> [(row, column, c_in), (a, b, c_out)]: tap
  (2a + row, 2b + column) of the 4x4 kernel, for block offset (a, b)."""
  c_in, c_out = kernel.shape[2:]
  kernel = kernel.reshape(2, 2, 2, 2, c_in, c_out)  # (a, row, b, column, ...)
  return kernel.transpose(1, 3, 4, 0, 2, 5).reshape(4 * c_in, 4 * c_out)


def _shift_sum(p: jax.Array) -> jax.Array:
  """y[i, j] = sum over (a, b) of p[i + a, j + b, (a, b)]:
  [B, H + 1, W + 1, 4 C] -> [B, H, W, C]."""
  b, h, w = p.shape[0], p.shape[1] - 1, p.shape[2] - 1
  p = p.reshape(b, h + 1, w + 1, 2, 2, p.shape[3] // 4)
  return sum(p[:, a:a + h, c:c + w, a, c] for a in (0, 1) for c in (0, 1))


def _shift_sum_adjoint(dy: jax.Array) -> jax.Array:
  """The adjoint of `_shift_sum`: [B, H, W, C] -> [B, H + 1, W + 1, 4C]."""
  return jnp.concatenate(
      [jnp.pad(dy, ((0, 0), (a, 1 - a), (c, 1 - c), (0, 0)))
       for a in (0, 1) for c in (0, 1)], axis=-1)


def _product_form(inputs, inputs_adjoint, outputs, outputs_adjoint,
                  kernel_matrix):
  """A linear layer y = outputs(inputs(x) @ kernel_matrix(kernel)), and its
  adjoint in x, x = inputs_adjoint(outputs_adjoint(y) @ kernel_matrix.T),
  each a `jax.custom_vjp` with the backward pass written out from the
  adjoints of the two linear reshufflings (`inputs`, `outputs`), rather
  than differentiated through their slices and concatenations.

  Returns:
    (layer, adjoint_layer), functions of (x, kernel).
  """

  def weight_gradient(kernel, a, dq):
    d_matrix = jnp.einsum('bhwi,bhwo->io', a, dq)
    return jax.vjp(kernel_matrix, kernel)[1](d_matrix)[0]

  @jax.custom_vjp
  def layer(x, kernel):
    return layer_fwd(x, kernel)[0]

  def layer_fwd(x, kernel):
    a = inputs(x)
    return outputs(a @ kernel_matrix(kernel)), (a, kernel)

  def layer_bwd(residuals, dy):
    a, kernel = residuals
    dq = outputs_adjoint(dy)
    dx = inputs_adjoint(dq @ kernel_matrix(kernel).T)
    return dx, weight_gradient(kernel, a, dq)

  @jax.custom_vjp
  def adjoint(x, kernel):
    return adjoint_fwd(x, kernel)[0]

  def adjoint_fwd(x, kernel):
    q = outputs_adjoint(x)
    return inputs_adjoint(q @ kernel_matrix(kernel).T), (q, kernel)

  def adjoint_bwd(residuals, dy):
    q, kernel = residuals
    a = inputs(dy)
    return outputs(a @ kernel_matrix(kernel)), weight_gradient(kernel, a, q)

  layer.defvjp(layer_fwd, layer_bwd)
  adjoint.defvjp(adjoint_fwd, adjoint_bwd)
  return layer, adjoint


def _crop_blocks(d_blocks: jax.Array) -> jax.Array:
  """The adjoint of `_padded_blocks`: depth-to-space, then the padding cut."""
  return _crop1(depth_to_space(d_blocks))


# The 4x4 stride-2 convolution as one product of the input's 2x2 blocks with
# all four block offsets' taps, then a sum of four shifted slices of it (the
# adjoint of that sum is one concatenation).
_conv4_shifted, _ = _product_form(_padded_blocks, _crop_blocks, _shift_sum,
                                  _shift_sum_adjoint, _block_kernel)


def _conv4_patches(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """4x4 stride-2 'SAME' convolution as one product of 2x2-block patches."""
  c_in, c_out = kernel.shape[2:]
  blocks = _padded_blocks(x)
  h, w = blocks.shape[1] - 1, blocks.shape[2] - 1
  patches = jnp.concatenate([blocks[:, a:a + h, b:b + w]
                             for a in (0, 1) for b in (0, 1)], axis=-1)
  # Patch channel (a, b, row, column, c) meets kernel tap (2a + row, 2b + col).
  kernel = kernel.reshape(2, 2, 2, 2, c_in, c_out).transpose(0, 2, 1, 3, 4, 5)
  return patches @ kernel.reshape(16 * c_in, c_out)


def _form(layer: str, forms: dict, method: str):
  """forms[method], or a ValueError naming the layer's methods."""
  if method not in forms:
    names = ', '.join(repr(name) for name in forms)
    raise ValueError(f"{layer}'s method is None or one of {names}, got "
                     f'{method!r}')
  return forms[method]


def conv_s2(x: jax.Array, kernel: jax.Array,
            method: str | None = None) -> jax.Array:
  """Stride-2 'SAME' convolution with a 2x2 or 4x4 kernel, as matmuls.

  With an even input side, TF's 'SAME' pads a 4x4 kernel by one pixel on
  each side and a 2x2 kernel not at all. After space-to-depth the stride-2
  window becomes a stride-1 window of 2x2 (4x4 kernel) or 1x1 (2x2 kernel)
  blocks. A 4x4 kernel is then computed one of two ways:
    * 'patches': one matmul of the 2x2-block patches (im2col without
      strided reads; 16 C_in values per output pixel);
    * 'shifted': one matmul of the blocks with the taps of all four block
      offsets (4 C_out values per block), then the sum of four shifted
      slices of it, with a written-out backward pass.
  The default (None) takes the one moving fewer values: 'shifted' when
  4 C_in > C_out. On the 2-core CPU the 32x32x32 -> 32 encoder layer at batch
  64 took 14.6 ms forward + backward as 'shifted' against 53.5 ms as
  'patches' (`benchmarks/layers.py`, README "Stage-1 train step").

  Args:
    x: [B, H, W, C_in], H and W even.
    kernel: [k, k, C_in, C_out], k in (2, 4), laid out as `nn.Conv`'s.
    method: None, 'patches' or 'shifted' (4x4 kernels only).

  Returns:
    [B, H/2, W/2, C_out], equal to `lax.conv_general_dilated(x, kernel,
    (2, 2), 'SAME')`.
  """
  size, _, c_in, c_out = kernel.shape
  if size == 2:
    return space_to_depth(x) @ kernel.reshape(4 * c_in, c_out)
  if size != 4:
    raise ValueError(f'conv_s2 takes 2x2 or 4x4 kernels, got {size}x{size}')
  if method is None:
    method = 'shifted' if 4 * c_in > c_out else 'patches'
  return _form('conv_s2', {'shifted': _conv4_shifted,
                           'patches': _conv4_patches}, method)(x, kernel)


def _conv_transpose_phases(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Sub-pixel form: each of the four output phases (ry, rx) is one matmul
  of 2x2 input patches with four of the sixteen taps; the phases interleave
  by depth-to-space."""
  b, h, w, c_in = x.shape
  padded = _pad1(x)
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


def _adjoint_block_kernel(kernel: jax.Array) -> jax.Array:
  """`_block_kernel` of the stride-2 convolution whose adjoint (input
  gradient) is the transposed convolution with `kernel`: the taps flipped
  (W[3 - t] per axis) and the channel axes swapped. [4 C_out, 4 C_in]."""
  return _block_kernel(jnp.swapaxes(kernel[::-1, ::-1], 2, 3))


# The transposed convolution is the adjoint (input gradient) of the 4x4
# stride-2 convolution with `_adjoint_block_kernel`: the adjoint of the shifted
# sum, one matmul, depth-to-space; its backward pass is that convolution's
# forward pass.
_, _conv_transpose_adjoint = _product_form(
    _padded_blocks, _crop_blocks, _shift_sum, _shift_sum_adjoint,
    _adjoint_block_kernel)


def _taps_kernel(kernel: jax.Array) -> jax.Array:
  """[4, 4, C_in, C_out] -> [C_in, (ty, tx, C_out)]: all sixteen taps."""
  c_in = kernel.shape[2]
  return kernel.transpose(2, 0, 1, 3).reshape(c_in, -1)


def _tap_slot(t: int) -> tuple[int, int]:
  """(phase r, row offset into the padded input) that tap t feeds, per axis:
  phase r reads input offsets _PHASE_OFFSETS[r] through taps r and r + 2."""
  r = t % 2
  return r, 1 + _PHASE_OFFSETS[r][t // 2]


def _taps_sum(q: jax.Array) -> jax.Array:
  """Output phase (ry, rx) at (m, n) sums q[m + oy, n + ox, tap] over its
  four taps: [B, H + 2, W + 2, 16 C] -> [B, 2H, 2W, C]."""
  b, h, w = q.shape[0], q.shape[1] - 2, q.shape[2] - 2
  c_out = q.shape[3] // 16
  q = q.reshape(b, h + 2, w + 2, 4, 4, c_out)
  phases = [[0, 0], [0, 0]]
  for ty in range(4):
    for tx in range(4):
      (ry, oy), (rx, ox) = _tap_slot(ty), _tap_slot(tx)
      phases[ry][rx] = phases[ry][rx] + q[:, oy:oy + h, ox:ox + w, ty, tx]
  out = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)
  return out.reshape(b, 2 * h, 2 * w, c_out)  # from [B, H, ry, W, rx, C]


def _taps_sum_adjoint(dy: jax.Array) -> jax.Array:
  """The adjoint of `_taps_sum`: [B, 2H, 2W, C] -> [B, H + 2, W + 2, 16C]."""
  b, h, w, c = dy.shape[0], dy.shape[1] // 2, dy.shape[2] // 2, dy.shape[3]
  dy = dy.reshape(b, h, 2, w, 2, c)
  parts = []
  for ty in range(4):
    for tx in range(4):
      (ry, oy), (rx, ox) = _tap_slot(ty), _tap_slot(tx)
      parts.append(jnp.pad(dy[:, :, ry, :, rx],
                           ((0, 0), (oy, 2 - oy), (ox, 2 - ox), (0, 0))))
  return jnp.concatenate(parts, axis=-1)


def _identity(x: jax.Array) -> jax.Array:
  return x


# The transposed convolution as one product of the input with all sixteen
# taps (16 C_out values per input pixel: few for a 1- or 3-channel image
# layer), padded by one pixel (the product, which has fewer channels than the
# input here), then per output phase a sum of four shifted slices.
_conv_transpose_taps, _ = _product_form(
    _identity, _identity, lambda q: _taps_sum(_pad1(q)),
    lambda dy: _crop1(_taps_sum_adjoint(dy)), _taps_kernel)


def conv_transpose_s2(x: jax.Array, kernel: jax.Array,
                      method: str | None = None) -> jax.Array:
  """4x4 stride-2 'SAME' transposed convolution as matmuls.

  Three equal formulations:
    * 'adjoint': the transposed convolution is the input gradient of a 4x4
      stride-2 convolution with the kernel flipped and its channel axes
      swapped, computed as the adjoint of `conv_s2`'s 'shifted' form (one
      matmul, 4 C_in values per input pixel), with that convolution's
      forward pass as its backward pass;
    * 'taps': one matmul of the input with all sixteen taps (16 C_out values
      per input pixel), padded by one pixel, then per output phase a sum of
      four shifted slices, with a written-out backward pass;
    * 'phases': sub-pixel convolution, one matmul of 2x2 input patches per
      output phase (16 C_in values per input pixel), differentiated by JAX.
  The default (None) moves the fewest values: 'taps' when 4 C_out < C_in
  (the image layer), else 'adjoint'. On the 2-core CPU at batch 64, forward
  + backward: the 16x16x32 -> 32 decoder layer took 10.7 ms as 'adjoint',
  35.5 ms as 'phases'; the 32x32x32 -> 1 image layer 3.3 ms as 'taps', 6.4
  as XLA's own, 52.7 as 'adjoint'. 'taps' alone is as fast as 'adjoint' or
  faster for the other layers too, but made the whole stage-1 step slower
  (`benchmarks/layers.py`, README
  "Stage-1 train step").

  Args:
    x: [B, H, W, C_in] input.
    kernel: [4, 4, C_in, C_out], laid out as `flax.linen.ConvTranspose`'s
      (no kernel flip, `transpose_kernel=False`).
    method: None, 'adjoint', 'taps' or 'phases'.

  Returns:
    [B, 2H, 2W, C_out], equal to `jax.lax.conv_transpose(x, kernel, (2, 2),
    'SAME')`.
  """
  if kernel.shape[:2] != (4, 4):
    raise ValueError(f'conv_transpose_s2 takes a 4x4 kernel, got '
                     f'{kernel.shape[0]}x{kernel.shape[1]}')
  if method is None:
    method = 'taps' if 4 * kernel.shape[3] < kernel.shape[2] else 'adjoint'
  return _form('conv_transpose_s2', {'adjoint': _conv_transpose_adjoint,
                                     'taps': _conv_transpose_taps,
                                     'phases': _conv_transpose_phases},
               method)(x, kernel)


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
  parameters and function, computed by `conv_transpose_s2` (its default
  form for the channel counts)."""
  features: int
  kernel_init: Callable = KERNEL_INIT

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', self.kernel_init,
                        (4, 4, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    kernel = kernel.astype(x.dtype)
    return conv_transpose_s2(x, kernel) + bias


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

"""Stage 2's networks: an encoder of the residual and a z-modulated image net.

The authors' design (METHOD.md, Stage 2), shared by MS-VAE and MS-GAN:

  ResidualEncoder  x - y -> (mean, logvar) of z: stride-2 4x4 convs (width,
                   2 width, 4 width, 8 width at 64x64) with instance norm and
                   LeakyReLU(0.2), then linear heads for the mean and a
                   softplus variance.
  ModulatedNet     (y, z) -> logits of x: an encoder-decoder over y (down path
                   of stride-2 convs, a dense bottleneck, up path of stride-2
                   transposed convs back to the image) where z enters at every
                   layer by adaptive instance normalisation,
                     h = LeakyReLU((1 + s_l(z)) * InstanceNorm(h) + b_l(z)),
                   with s_l, b_l linear in z. 'spatial' modulation (the
                   authors') maps z to full H x W x C maps; 'channel'
                   modulation (AdaIN) to one scale and shift per channel, far
                   cheaper. `skips=True` adds U-Net skip connections from the
                   down path to the up path (msdr's option; it lets y's
                   structure through at full resolution, so z only has to
                   carry what y lacks). `residual=True` (msdr's option, the
                   default) adds logit(y) to the output and starts the last
                   layer at zero: the net starts as y, i.e. as stage 1's
                   reconstruction, and learns the detail to add, so stage 2
                   never starts worse than stage 1 and keeps its factors.

The scale is 1 + s_l(z) rather than s_l(z) so that the net starts as a plain
instance-normalised network (s_l(z) is ~0 under the 0.02 init) instead of
multiplying every activation by ~0. Weights start as the authors': conv
kernels truncated normal (std 0.02), linear maps N(0, 0.02), zero biases.

The number of stride-2 layers is log2(side / 4), so 64x64 images go down to
4x4 in four layers and 128x128 (the high-resolution variant) in five;
channels double per layer from `width`, capped at 8 x `width`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from msdr.models import networks

CONV_INIT = nn.initializers.truncated_normal(0.02)
DENSE_INIT = nn.initializers.normal(0.02)
MODULATIONS = ('spatial', 'channel')
BOTTOM_SIDE = 4


def num_levels(side: int) -> int:
  """Stride-2 layers from `side` down to 4 (or to 1 for sides below 4)."""
  bottom = min(side, BOTTOM_SIDE)
  return int(round(math.log2(side / bottom)))


def level_features(width: int, levels: int) -> list[int]:
  """Channels of each down layer: width, 2 width, ... capped at 8 width."""
  return [width * min(2 ** i, 8) for i in range(levels)]


def instance_norm(h: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Normalises each example's channels over their H x W positions."""
  mean = jnp.mean(h, axis=(1, 2), keepdims=True)
  var = jnp.mean(jnp.square(h - mean), axis=(1, 2), keepdims=True)
  return (h - mean) * jax.lax.rsqrt(var + eps)


def leaky_relu(h: jax.Array) -> jax.Array:
  return nn.leaky_relu(h, 0.2)


class Modulation(nn.Module):
  """(1 + s(z)) * InstanceNorm(h) + b(z), s and b linear in z."""
  mode: str = 'spatial'

  @nn.compact
  def __call__(self, h: jax.Array, z: jax.Array) -> jax.Array:
    b, height, width, channels = h.shape
    shape = ((height, width, channels) if self.mode == 'spatial'
             else (1, 1, channels))
    size = math.prod(shape)
    scale_shift = nn.Dense(2 * size, kernel_init=DENSE_INIT)(z)
    scale, shift = jnp.split(scale_shift.reshape(b, 2, *shape), 2, axis=1)
    return (1.0 + scale[:, 0]) * instance_norm(h) + shift[:, 0]


class ResidualEncoder(nn.Module):
  """r = x - y [B, H, W, C] -> (mean, logvar), each [B, z_dim]."""
  z_dim: int
  width: int = 64

  @nn.compact
  def __call__(self, r: jax.Array) -> tuple[jax.Array, jax.Array]:
    levels = num_levels(r.shape[1])
    h = r
    for features in level_features(self.width, levels):
      h = networks.ConvS2(features, 4, kernel_init=CONV_INIT)(h)
      h = leaky_relu(instance_norm(h))
    h = h.reshape(h.shape[0], -1)
    mean = nn.Dense(self.z_dim, kernel_init=DENSE_INIT, name='mean')(h)
    raw = nn.Dense(self.z_dim, kernel_init=DENSE_INIT, name='variance')(h)
    variance = jax.nn.softplus(raw) + 1e-6
    return mean, jnp.log(variance)


class ModulatedNet(nn.Module):
  """(y [B, H, W, C] in [0, 1], z [B, z_dim]) -> logits [B, H, W, channels]."""
  channels: int
  width: int = 64
  modulation: str = 'spatial'
  skips: bool = True
  residual: bool = True
  bottleneck: int = 512

  @nn.compact
  def __call__(self, y: jax.Array, z: jax.Array) -> jax.Array:
    levels = num_levels(y.shape[1])
    features = level_features(self.width, levels)
    h = 2.0 * y - 1.0
    down = []
    for f in features:
      h = networks.ConvS2(f, 4, kernel_init=CONV_INIT)(h)
      h = leaky_relu(Modulation(self.modulation)(h, z))
      down.append(h)
    shape = h.shape[1:]
    h = h.reshape(h.shape[0], -1)
    h = leaky_relu(nn.Dense(self.bottleneck, kernel_init=DENSE_INIT)(h))
    h = nn.Dense(math.prod(shape), kernel_init=DENSE_INIT)(h)
    h = leaky_relu(Modulation(self.modulation)(h.reshape(-1, *shape), z))
    for i in reversed(range(levels)):
      if self.skips:
        h = jnp.concatenate([h, down[i]], axis=-1)
      if i == 0:
        break
      h = networks.ConvTransposeS2(features[i - 1], kernel_init=CONV_INIT)(h)
      h = leaky_relu(Modulation(self.modulation)(h, z))
    out_init = nn.initializers.zeros if self.residual else CONV_INIT
    if levels == 0:
      out = nn.Conv(self.channels, (3, 3), kernel_init=out_init)(h)
    else:
      out = networks.ConvTransposeS2(self.channels, kernel_init=out_init)(h)
    if self.residual:
      out = out + y_logits(y)
    return out


def y_logits(y: jax.Array, eps: float = 1e-3) -> jax.Array:
  """logit(y), y clipped to [eps, 1 - eps] so the logits stay finite."""
  y = jnp.clip(y, eps, 1.0 - eps)
  return jnp.log(y) - jnp.log1p(-y)

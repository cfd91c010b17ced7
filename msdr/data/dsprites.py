"""Procedural dSprites: the factor grid of DeepMind's dSprites, rendered in JAX.

Factors (as in the original, 737,280 combinations):
  shape        3   square, ellipse, heart
  scale        6   0.5 .. 1
  orientation 40   0 .. 2pi (2pi*k/40; the original's last value is 2pi itself)
  position_x  32   0 .. 1
  position_y  32   0 .. 1

Geometry (pixel units of the 64x64 frame, y pointing down):
  * a shape of scale s is drawn in its own frame (u, v) = rotation of the pixel
    offset from the shape's centre, divided by 10 s; a square is |u|,|v| <= 1
    (20 px wide at scale 1), an ellipse has semi-axes 1.2 and 0.6, a heart is
    the classic sextic (x^2 + y^2 - 1)^3 <= x^2 y^3, about 21 px wide at scale 1;
  * the centre sits on a pixel corner, 16 + 31 * position px from the top-left,
    so each position step moves the shape by exactly one pixel (its area is
    unchanged) and the largest rotated square stays 2 px inside the frame;
  * a pixel is on when its centre is inside the shape: binary images.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from msdr.data import base

SIZE = 64
_UNIT = 10.0          # pixels per shape unit at scale 1
_FIRST_CENTRE = 16.0  # pixel coordinate of the centre at position 0
_ELLIPSE_AXES = (1.2, 0.6)
_HEART_ZOOM = 1.1     # heart curve units per shape unit
_HEART_SHIFT = 0.1    # moves the heart's bounding box onto the centre


class DSprites(base.GroundTruthDataset):
  """2D sprites on a black 64x64 canvas; see the module docstring."""

  name = 'dsprites'
  factor_names = ('shape', 'scale', 'orientation', 'position_x', 'position_y')
  factor_values = (
      np.arange(3, dtype=np.float32),
      base.linspace_values(0.5, 1.0, 6),
      base.linspace_values(0.0, 2 * np.pi, 40, endpoint=False),
      base.linspace_values(0.0, 1.0, 32),
      base.linspace_values(0.0, 1.0, 32),
  )
  value_names = {'shape': ('square', 'ellipse', 'heart')}
  observation_shape = (SIZE, SIZE, 1)

  def _render(self, factors: jax.Array, key: jax.Array | None) -> jax.Array:
    del key  # dSprites has no nuisance detail.
    return render(factors)


def render(factors: jax.Array) -> jax.Array:
  """Binary images float32 [n, 64, 64, 1] of int32 factors [n, 5]."""
  shape, scale, orientation, pos_x, pos_y = (
      factors[:, i, None, None] for i in range(5))
  s = 0.5 + scale.astype(jnp.float32) * (0.5 / 5)
  theta = orientation.astype(jnp.float32) * (2 * np.pi / 40)
  # Offsets of pixel centres from the shape's centre (on a pixel corner).
  coords = jnp.arange(SIZE, dtype=jnp.float32) + 0.5
  dx = coords[None, None, :] - (_FIRST_CENTRE + pos_x.astype(jnp.float32))
  dy = coords[None, :, None] - (_FIRST_CENTRE + pos_y.astype(jnp.float32))
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  inv = 1.0 / (_UNIT * s)
  u = (cos * dx + sin * dy) * inv
  v = (cos * dy - sin * dx) * inv

  square = jnp.maximum(jnp.abs(u), jnp.abs(v)) <= 1.0
  ellipse = (u / _ELLIPSE_AXES[0])**2 + (v / _ELLIPSE_AXES[1])**2 <= 1.0
  # The heart curve has y up; image rows go down.
  hx = u * _HEART_ZOOM
  hy = _HEART_SHIFT - v * _HEART_ZOOM
  q = hx * hx + hy * hy - 1.0
  heart = q * q * q <= hx * hx * hy * hy * hy

  on = jnp.where(shape == 0, square, jnp.where(shape == 1, ellipse, heart))
  return on.astype(jnp.float32)[..., None]

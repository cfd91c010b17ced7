"""Procedural 3D shapes: the factor grid of DeepMind's 3dshapes, ray cast in JAX.

Factors (as in the original, 480,000 combinations):
  floor_hue    10   0 .. 0.9
  wall_hue     10   0 .. 0.9
  object_hue   10   0 .. 0.9
  scale         8   0.75 .. 1.25
  shape         4   cube, cylinder, sphere, capsule
  orientation  15   -30 .. 30 degrees (the camera orbits the object)

`scene.py` casts the geometry of the 480 (shape, scale, orientation) cases once
(surface, Lambertian shading and depth of each pixel); this module looks it up
and colours it. A surface's colour is the HSV colour (hue, saturation
0.75, value 1) of its factor times the shading, so each hue factor changes only
the pixels of its own surface, and scale, shape and orientation change only
geometry.

`shapes3d_detail` multiplies the brightness of every surface by a pattern that
no factor names, drawn per image and per surface (floor, walls, object) from
the nuisance key: stripes, checks, or wave noise (a sum of three waves), with
random frequency, direction, phase, contrast and sharpness. Patterns are solid
textures of the world position, so they stick to their surface when the camera
turns. The same (factors, key) always renders the same image.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from msdr.data import base
from msdr.data import scene
from msdr import xla_utils

_SATURATION = 0.75
STRIPES, CHECKS, WAVE_NOISE = 0, 1, 2
_NUISANCE_SEED = 20201026  # fixed detail of each grid point when key is None


class Shapes3D(base.GroundTruthDataset):
  """A shaded object in the corner of a room; see the module docstring."""

  name = 'shapes3d'
  factor_names = ('floor_hue', 'wall_hue', 'object_hue', 'scale', 'shape',
                  'orientation')
  factor_values = (
      base.linspace_values(0.0, 0.9, 10),
      base.linspace_values(0.0, 0.9, 10),
      base.linspace_values(0.0, 0.9, 10),
      base.linspace_values(0.75, 1.25, 8),
      np.arange(4, dtype=np.float32),
      base.linspace_values(-30.0, 30.0, 15),
  )
  value_names = {'shape': ('cube', 'cylinder', 'sphere', 'capsule')}
  observation_shape = (scene.SIZE, scene.SIZE, 3)

  def _render(self, factors: jax.Array, key: jax.Array | None) -> jax.Array:
    del key
    return render(factors)


class Shapes3DDetail(Shapes3D):
  """Shapes3D with per-image surface patterns drawn from the nuisance key."""

  name = 'shapes3d_detail'
  has_nuisance = True

  def _render(self, factors: jax.Array, key: jax.Array | None) -> jax.Array:
    u = pattern_uniforms(key, self.factors_to_index(factors))
    return render(factors, draw_patterns(u))


_VALUES = Shapes3D.factor_values


def geometry(factors: jax.Array) -> jax.Array:
  """Packed per-pixel geometry int32 [n, H, W] (see scene.pack)."""
  table = scene.geometry_table(tuple(_VALUES[3].tolist()),
                               tuple(_VALUES[5].tolist()))
  flat = (factors[:, 4] * table.shape[1] + factors[:, 3]) * table.shape[2]
  return jnp.asarray(table.reshape(-1, scene.SIZE, scene.SIZE))[
      flat + factors[:, 5]]


def hsv_to_rgb(hue: jax.Array, saturation: float = _SATURATION) -> jax.Array:
  """RGB [..., 3] of hues in [0, 1) at value 1."""
  k = (jnp.asarray([5.0, 3.0, 1.0]) + hue[..., None] * 6.0) % 6.0
  return 1.0 - saturation * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


def render(factors: jax.Array, patterns: dict | None = None) -> jax.Array:
  """Images float32 [n, 64, 64, 3] of int32 factors [n, 6].

  Args:
    factors: validated factor indices.
    patterns: per-image surface patterns from `draw_patterns` (vmapped), or
      None for plain surfaces.
  """
  hues = factors[:, :3].astype(jnp.float32) * 0.1     # floor, wall, object
  region, shade, t = scene.unpack(geometry(factors))
  colours = hsv_to_rgb(hues)                          # [n, 3 surfaces, 3]
  surface = jnp.where(region == scene.FLOOR, 0,
                      jnp.where(region == scene.OBJECT, 2, 1))
  brightness = shade
  if patterns is not None:
    orientation = jnp.asarray(_VALUES[5])[factors[:, 5]]
    position = scene.positions(orientation, t)
    brightness = brightness * _pattern(patterns, surface, position)
    brightness, surface = xla_utils.materialize(brightness, surface)
  rgb = [
      _select(surface, colours[:, 0, c], colours[:, 1, c], colours[:, 2, c])
      for c in range(3)
  ]
  return jnp.clip(jnp.stack(rgb, -1) * brightness[..., None], 0.0, 1.0)


def _select(surface, floor, wall, obj):
  """Per-pixel choice among per-image values [n] of the three surfaces."""
  b = lambda v: v[:, None, None]
  return jnp.where(surface == 0, b(floor), jnp.where(surface == 1, b(wall),
                                                     b(obj)))


# -- nuisance patterns ---------------------------------------------------------


_PATTERN_PARAMS = 13  # uniforms per surface


def draw_patterns(u: jax.Array) -> dict:
  """Pattern parameters from uniforms [..., 3 surfaces, 13].


  Returns:
    dict of float32 arrays [..., 3 surfaces (floor, wall, object), ...].
  """
  kind = jnp.floor(u[..., 0] * 3.0)
  # Three directions uniform on the sphere (z and azimuth from uniforms).
  z = 2.0 * u[..., 6:9] - 1.0
  phi = 2.0 * np.pi * u[..., 9:12]
  r = jnp.sqrt(jnp.maximum(1.0 - z * z, 0.0))
  dirs = jnp.stack([r * jnp.cos(phi), r * jnp.sin(phi), z], -1)
  # Checks need a second direction orthogonal to the first.
  first, second = dirs[..., 0, :], dirs[..., 1, :]
  second = second - jnp.sum(second * first, -1, keepdims=True) * first
  second = second / jnp.maximum(
      jnp.linalg.norm(second, axis=-1, keepdims=True), 1e-6)
  dirs = jnp.stack([first, second, dirs[..., 2, :]], -2)
  return {
      'kind': kind,
      'frequency': 1.0 + 3.0 * u[..., 1],             # cycles per world unit
      'phase': u[..., 2:5],                           # one per wave
      'contrast': 0.2 + 0.3 * u[..., 5],
      'sharpness': 1.0 + 5.0 * u[..., 12],            # 1 = triangle wave
      'direction': dirs,                              # [..., 3 waves, 3]
  }


def pattern_uniforms(key: jax.Array | None, flat_index: jax.Array) -> jax.Array:
  """Uniforms [n, 3, 13] of the nuisance patterns of a batch.

  With a key, image i of the batch draws from (key, i); without one, from the
  grid point's flat index and a fixed seed, so the same factors always get the
  same detail.
  """
  if key is None:
    words, rows = jnp.asarray([_NUISANCE_SEED], jnp.uint32), flat_index
  else:
    words = jax.random.key_data(key).reshape(-1)
    rows = jnp.arange(flat_index.shape[0])
  u = base.hash_uniform(words, rows, 3 * _PATTERN_PARAMS)
  return u.reshape(-1, 3, _PATTERN_PARAMS)


def _triangle(x):
  """Triangle wave with period 1, in [0, 1]."""
  return jnp.abs(2.0 * (x - jnp.floor(x)) - 1.0)


def _pattern(patterns: dict, surface: jax.Array, position) -> jax.Array:
  """Brightness multiplier per pixel, 1 +- contrast."""
  pick = lambda v: _select(surface, v[:, 0], v[:, 1], v[:, 2])
  frequency = pick(patterns['frequency'])
  waves = []
  for w, stretch in enumerate((1.0, 1.0, 1.618)):
    d = [pick(patterns['direction'][:, :, w, i]) for i in range(3)]
    coord = scene.dot(d, position) * frequency * stretch
    waves.append(_triangle(coord + pick(patterns['phase'][:, :, w])))
  sharp = pick(patterns['sharpness'])
  stripes = jnp.clip((waves[0] - 0.5) * sharp + 0.5, 0.0, 1.0)
  checks = jnp.where((waves[0] > 0.5) == (waves[1] > 0.5), 1.0, 0.0)
  noise = (waves[0] + waves[1] + waves[2]) * (1.0 / 3.0)
  kind = pick(patterns['kind'])
  value = jnp.where(kind == STRIPES, stripes,
                    jnp.where(kind == CHECKS, checks, noise))
  return 1.0 + pick(patterns['contrast']) * (2.0 * value - 1.0)

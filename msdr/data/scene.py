"""Analytic ray casting of the 3D-shapes scene: geometry only, no colour.

The scene, in world units (y up): a floor (y = 0) and the corner of a room, two
walls at x = 3 and z = 3, and one object standing on the floor at the origin.
The camera orbits the origin: it sits 4.2 units away at height 1.7, looks at
(0, 0.6, 0), sees 40 degrees vertically, and its azimuth is 45 degrees (looking
into the corner) plus the orientation factor (-30 .. 30 degrees). The light is
directional and fixed in the world, so turning the camera changes which faces of
the object are lit and moves the wall corner across the image.

Objects of scale s (0.75 .. 1.25), with a = s / 2:
  cube      [-a, a] x [0, 2a] x [-a, a]
  cylinder  upright, radius a, height 2a
  sphere    centre (0, a, 0), radius a
  capsule   lying along x: the points within 0.6a of the segment from
            (-a, 0.6a, 0) to (a, 0.6a, 0)

Every intersection is in closed form, evaluated per pixel with selects only
(gathers are slow in XLA on the CPU).

Output per pixel: the region (FLOOR, WALL_X, WALL_Z, OBJECT), the Lambertian
shading in [0, 1] and the distance along the ray to the visible point, from
which its world position follows (for textures).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

SIZE = 64
FLOOR, WALL_X, WALL_Z, OBJECT = 0, 1, 2, 3
CUBE, CYLINDER, SPHERE, CAPSULE = 0, 1, 2, 3

ROOM = 3.0
_EYE = np.array([0.0, 1.7, -4.2])
_TARGET = np.array([0.0, 0.6, 0.0])
_FOV_DEG = 40.0
_BASE_AZIMUTH_DEG = 45.0
_LIGHT = np.array([-0.5, 1.0, -0.7]) / np.linalg.norm([-0.5, 1.0, -0.7])
_AMBIENT = 0.35
_CAPSULE_RADIUS = 0.6

_FAR = 1e4
_EPS = 1e-6


def _camera_rays() -> tuple[np.ndarray, np.ndarray]:
  """Eye position [3] and unit ray directions [3, H, W] at azimuth zero."""
  forward = _TARGET - _EYE
  forward /= np.linalg.norm(forward)
  right = np.cross([0.0, 1.0, 0.0], forward)
  right /= np.linalg.norm(right)
  up = np.cross(forward, right)
  focal = 1.0 / np.tan(np.deg2rad(_FOV_DEG / 2))
  px = (np.arange(SIZE) + 0.5) / SIZE * 2 - 1
  py = 1 - (np.arange(SIZE) + 0.5) / SIZE * 2
  d = (forward[:, None, None] * focal + right[:, None, None] * px[None, None, :]
       + up[:, None, None] * py[None, :, None])
  d /= np.linalg.norm(d, axis=0, keepdims=True)
  return _EYE.astype(np.float32), d.astype(np.float32)


_EYE0, _DIRS0 = _camera_rays()


def _rotate_y(v, cos, sin):
  x, y, z = v
  return (cos * x + sin * z, y, cos * z - sin * x)


def dot(a, b):
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def rays(orientation_deg: jax.Array):
  """World-space ray origins and directions for each image.

  Args:
    orientation_deg: float [n] camera orbit angle in degrees.

  Returns:
    origin: 3-tuple of [n, 1, 1]; direction: 3-tuple of [n, H, W].
  """
  azimuth = jnp.deg2rad(orientation_deg + _BASE_AZIMUTH_DEG)[:, None, None]
  cos, sin = jnp.cos(azimuth), jnp.sin(azimuth)
  dirs = _DIRS0
  origin = _rotate_y(tuple(float(e) for e in _EYE0), cos, sin)
  direction = _rotate_y(tuple(jnp.asarray(d)[None] for d in dirs), cos, sin)
  return origin, direction


def _safe(x):
  return jnp.where(jnp.abs(x) < _EPS, _EPS, x)


def _background(origin, direction):
  """Nearest of floor and the two walls: (t, region)."""
  t_floor = jnp.where(direction[1] < 0, -origin[1] / _safe(direction[1]), _FAR)
  t_wx = jnp.where(direction[0] > 0, (ROOM - origin[0]) / _safe(direction[0]),
                   _FAR)
  t_wz = jnp.where(direction[2] > 0, (ROOM - origin[2]) / _safe(direction[2]),
                   _FAR)
  t_wall = jnp.minimum(t_wx, t_wz)
  region = jnp.where(t_floor <= t_wall, FLOOR,
                     jnp.where(t_wx <= t_wz, WALL_X, WALL_Z))
  return jnp.minimum(t_floor, t_wall), region


def _sphere(o, d, centre, radius):
  """Nearest hit t (or _FAR) of a ray with a sphere; d is a unit vector."""
  oc = (o[0] - centre[0], o[1] - centre[1], o[2] - centre[2])
  b = dot(oc, d)
  disc = b * b - (dot(oc, oc) - radius * radius)
  t = -b - jnp.sqrt(jnp.maximum(disc, 0.0))
  return jnp.where((disc > 0) & (t > 0), t, _FAR)


def _cube(o, d, a):
  """Slab test for [-a, a] x [0, 2a] x [-a, a]: (t, normal)."""
  lo, hi = (-a, 0.0 * a, -a), (a, 2 * a, a)
  t_near, t_far, axis = -_FAR, _FAR, 0
  for i in range(3):
    inv = 1.0 / _safe(d[i])
    t1, t2 = (lo[i] - o[i]) * inv, (hi[i] - o[i]) * inv
    near = jnp.minimum(t1, t2)
    axis = jnp.where(near > t_near, i, axis)
    t_near = jnp.maximum(t_near, near)
    t_far = jnp.minimum(t_far, jnp.maximum(t1, t2))
  t = jnp.where((t_far >= t_near) & (t_near > 0), t_near, _FAR)
  normal = tuple(jnp.where(axis == i, -jnp.sign(d[i]), 0.0) for i in range(3))
  return t, normal


def _cylinder(o, d, a):
  """Upright cylinder of radius a and height 2a: (t, normal)."""
  qa = d[0] * d[0] + d[2] * d[2]
  qb = o[0] * d[0] + o[2] * d[2]
  qc = o[0] * o[0] + o[2] * o[2] - a * a
  disc = qb * qb - qa * qc
  t_side = (-qb - jnp.sqrt(jnp.maximum(disc, 0.0))) / _safe(qa)
  y_side = o[1] + t_side * d[1]
  side_ok = (disc > 0) & (t_side > 0) & (y_side >= 0) & (y_side <= 2 * a)
  t_cap = (2 * a - o[1]) / _safe(d[1])
  cx, cz = o[0] + t_cap * d[0], o[2] + t_cap * d[2]
  cap_ok = (t_cap > 0) & (cx * cx + cz * cz <= a * a)
  t_side = jnp.where(side_ok, t_side, _FAR)
  t_cap = jnp.where(cap_ok, t_cap, _FAR)
  on_cap = t_cap < t_side
  t = jnp.minimum(t_side, t_cap)
  inv_a = 1.0 / a
  normal = (jnp.where(on_cap, 0.0, (o[0] + t * d[0]) * inv_a),
            jnp.where(on_cap, 1.0, 0.0),
            jnp.where(on_cap, 0.0, (o[2] + t * d[2]) * inv_a))
  return t, normal


def _capsule(o, d, a):
  """Capsule along x, radius r = 0.6a, segment x in [-a, a] at height r."""
  r = _CAPSULE_RADIUS * a
  # Infinite cylinder around the line y = r, z = 0.
  oy = o[1] - r
  qa = d[1] * d[1] + d[2] * d[2]
  qb = oy * d[1] + o[2] * d[2]
  qc = oy * oy + o[2] * o[2] - r * r
  disc = qb * qb - qa * qc
  t_side = (-qb - jnp.sqrt(jnp.maximum(disc, 0.0))) / _safe(qa)
  x_side = o[0] + t_side * d[0]
  t_side = jnp.where((disc > 0) & (t_side > 0) & (jnp.abs(x_side) <= a),
                     t_side, _FAR)
  t = jnp.minimum(t_side, jnp.minimum(_sphere(o, d, (-a, r, 0.0), r),
                                      _sphere(o, d, (a, r, 0.0), r)))
  p = tuple(o[i] + t * d[i] for i in range(3))
  inv_r = 1.0 / r
  normal = ((p[0] - jnp.clip(p[0], -a, a)) * inv_r, (p[1] - r) * inv_r,
            p[2] * inv_r)
  return t, normal


def _object(o, d, shape, a):
  """Hit distance and normal of the selected object shape."""
  t_cube, n_cube = _cube(o, d, a)
  t_cyl, n_cyl = _cylinder(o, d, a)
  t_sph = _sphere(o, d, (0.0, a, 0.0), a)
  p = tuple(o[i] + t_sph * d[i] for i in range(3))
  inv_a = 1.0 / a
  n_sph = (p[0] * inv_a, (p[1] - a) * inv_a, p[2] * inv_a)
  t_cap, n_cap = _capsule(o, d, a)

  def pick(cube, cyl, sph, cap):
    return jnp.where(shape == CUBE, cube, jnp.where(
        shape == CYLINDER, cyl, jnp.where(shape == SPHERE, sph, cap)))

  t = pick(t_cube, t_cyl, t_sph, t_cap)
  normal = tuple(pick(*ns) for ns in zip(n_cube, n_cyl, n_sph, n_cap))
  return t, normal


def _lambert(normal) -> jax.Array:
  diffuse = jnp.maximum(dot(normal, tuple(float(c) for c in _LIGHT)), 0.0)
  return _AMBIENT + (1 - _AMBIENT) * diffuse


_PLANE_SHADE = tuple(
    _AMBIENT + (1 - _AMBIENT) * max(float(c), 0.0)
    for c in (_LIGHT[1], -_LIGHT[0], -_LIGHT[2]))  # floor, wall x, wall z


def gbuffer(shape: jax.Array, scale: jax.Array, orientation_deg: jax.Array):
  """Geometry of each pixel, cast analytically.

  Args:
    shape: int [n] in {CUBE, CYLINDER, SPHERE, CAPSULE}.
    scale: float [n] object scale.
    orientation_deg: float [n] camera orbit angle.

  Returns:
    region int32 [n, H, W], shade float32 [n, H, W] and the ray distance t
    float32 [n, H, W] of the visible point (its position is origin + t * ray).
  """
  origin, direction = rays(orientation_deg)
  t, region = _background(origin, direction)
  shade = jnp.where(region == FLOOR, _PLANE_SHADE[0], jnp.where(
      region == WALL_X, _PLANE_SHADE[1], _PLANE_SHADE[2]))
  half = (0.5 * scale)[:, None, None]
  t_obj, normal = _object(origin, direction, shape[:, None, None], half)
  hit = t_obj < _FAR
  region = jnp.where(hit, OBJECT, region).astype(jnp.int32)
  shade = jnp.where(hit, _lambert(normal), shade)
  return region, shade, jnp.where(hit, t_obj, t)


def positions(orientation_deg: jax.Array, t: jax.Array):
  """World positions (3 x [n, H, W]) of the points at ray distance t."""
  origin, direction = rays(orientation_deg)
  return tuple(origin[i] + t * direction[i] for i in range(3))


# -- the geometry table --------------------------------------------------------
# Geometry depends on (shape, scale, orientation) alone: 4 * 8 * 15 = 480 cases.
# Casting them once and looking them up is ~10x faster on the CPU than casting
# per image (XLA materialises dozens of per-pixel temporaries for the
# intersections), and leaves colour and texture as the per-image work. Each
# pixel packs into one int32: region (2 bits), shade (10 bits), t (20 bits).

_SHADE_BITS, _T_BITS = 10, 20
_T_MAX = 16.0  # farther than any visible point of the room


def pack(region, shade, t) -> jax.Array:
  q_shade = jnp.round(shade * (2**_SHADE_BITS - 1)).astype(jnp.int32)
  q_t = jnp.round(jnp.clip(t, 0, _T_MAX) * ((2**_T_BITS - 1) / _T_MAX))
  return ((region << (_SHADE_BITS + _T_BITS)) | (q_shade << _T_BITS)
          | q_t.astype(jnp.int32))


def unpack(code: jax.Array):
  """Inverse of `pack`: (region int32, shade float32, t float32)."""
  region = (code >> (_SHADE_BITS + _T_BITS)) & 3  # the sign bit is region's
  q_shade = (code >> _T_BITS) & (2**_SHADE_BITS - 1)
  q_t = code & (2**_T_BITS - 1)
  return (region, q_shade.astype(jnp.float32) * (1.0 / (2**_SHADE_BITS - 1)),
          q_t.astype(jnp.float32) * (_T_MAX / (2**_T_BITS - 1)))


@functools.cache
def geometry_table(scales: tuple[float, ...],
                   orientations: tuple[float, ...]) -> np.ndarray:
  """Packed geometry int32 [4 shapes, len(scales), len(orientations), H, W]."""
  grid = np.stack(np.meshgrid(np.arange(4), scales, orientations,
                              indexing='ij'), -1).reshape(-1, 3)
  cast = jax.jit(lambda g: pack(*gbuffer(g[:, 0].astype(jnp.int32), g[:, 1],
                                         g[:, 2])))
  # The first call may come while an outer function is being traced.
  with jax.ensure_compile_time_eval():
    table = np.asarray(cast(jnp.asarray(grid, jnp.float32)))
  return table.reshape(4, len(scales), len(orientations), SIZE, SIZE)

"""Procedural 3D shapes (plain and with detail): grid, factor aspects, nuisance."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from msdr import data
from msdr.data import scene
from msdr.data import shapes3d

PLAIN = data.get_dataset('shapes3d')
DETAIL = data.get_dataset('shapes3d_detail')
BASE = [2, 5, 8, 4, 0, 7]  # floor, wall, object hue, scale, shape, orientation


def vary(factor, values, base=BASE):
  rows = np.array([base] * len(values))
  rows[:, factor] = values
  return rows


def regions(factors):
  region, _, _ = scene.unpack(shapes3d.geometry(np.asarray(factors)))
  return np.asarray(region)


def render(factors, key=None, ds=PLAIN):
  return np.asarray(ds.observations_from_factors(np.asarray(factors), key))


class Shapes3DTest(parameterized.TestCase):

  def test_factor_grid_matches_the_original(self):
    for ds in (PLAIN, DETAIL):
      self.assertEqual(ds.factor_names, ('floor_hue', 'wall_hue', 'object_hue',
                                         'scale', 'shape', 'orientation'))
      self.assertEqual(ds.factor_sizes, (10, 10, 10, 8, 4, 15))
      self.assertEqual(ds.num_combinations, 480_000)
      self.assertEqual(ds.observation_shape, (64, 64, 3))
    np.testing.assert_allclose(PLAIN.factor_values[3],
                               np.linspace(0.75, 1.25, 8), rtol=1e-6)
    np.testing.assert_allclose(PLAIN.factor_values[5],
                               np.linspace(-30, 30, 15), rtol=1e-6)
    self.assertFalse(PLAIN.has_nuisance)
    self.assertTrue(DETAIL.has_nuisance)

  def test_images_are_float32_in_unit_range(self):
    for ds in (PLAIN, DETAIL):
      images, factors = ds.sample(jax.random.key(0), 8)
      self.assertEqual(images.shape, (8, 64, 64, 3))
      self.assertEqual(images.dtype, np.float32)
      self.assertEqual(factors.shape, (8, 6))
      self.assertBetween(float(images.min()), 0.0, 1.0)
      self.assertBetween(float(images.max()), 0.0, 1.0)

  @parameterized.named_parameters(
      ('floor', 0, (scene.FLOOR,)),
      ('wall', 1, (scene.WALL_X, scene.WALL_Z)),
      ('object', 2, (scene.OBJECT,)))
  def test_a_hue_changes_exactly_its_own_surface(self, factor, surfaces):
    for shape in range(4):
      base = list(BASE)
      base[4] = shape
      rows = vary(factor, [1, 6], base)
      a, b = render(rows)
      changed = np.abs(a - b).max(-1) > 1e-3
      own = np.isin(regions(rows[:1])[0], surfaces)
      self.assertTrue(own.any())
      np.testing.assert_array_equal(changed, own)

  @parameterized.parameters(range(4))
  def test_scale_grows_the_object_and_nothing_else(self, shape):
    base = list(BASE)
    base[4] = shape
    rows = vary(3, range(8), base)
    masks = regions(rows) == scene.OBJECT
    areas = masks.sum((1, 2))
    self.assertTrue(np.all(np.diff(areas) > 0), areas)
    images = render(rows)
    # Pixels that are background in both images keep their colour.
    for i in range(7):
      both = ~masks[i] & ~masks[i + 1]
      np.testing.assert_allclose(images[i][both], images[i + 1][both],
                                 atol=1e-6)

  def test_shape_changes_the_silhouette_not_the_place(self):
    masks = regions(vary(4, range(4))) == scene.OBJECT
    for i in range(4):
      for j in range(i + 1, 4):
        self.assertGreater((masks[i] != masks[j]).sum(), 30)
    # Every shape stands at the same place: the same horizontal centre.
    centres = [np.nonzero(m)[1].mean() for m in masks]
    self.assertLess(np.ptp(centres), 1.5)

  def test_orientation_moves_the_wall_corner_monotonically(self):
    top = regions(vary(5, range(15)))[:, 0, :]  # the top row: walls only
    self.assertTrue(np.isin(top, (scene.WALL_X, scene.WALL_Z)).all())
    corner = (top == scene.WALL_Z).sum(1)  # columns left of the corner
    self.assertTrue(np.all(np.diff(corner) < 0), corner)

  def test_orientation_turns_the_cube_but_not_the_sphere_silhouette(self):
    cube = regions(vary(5, [0, 14], vary(4, [0])[0])) == scene.OBJECT
    sphere = regions(vary(5, [0, 14], vary(4, [2])[0])) == scene.OBJECT
    self.assertGreater((cube[0] != cube[1]).sum(), 10)
    self.assertLessEqual((sphere[0] != sphere[1]).sum(), 2)

  def test_geometry_table_matches_direct_ray_casting(self):
    factors = PLAIN.sample_factors(jax.random.key(5), 64)
    f = np.asarray(factors)
    region, shade, t = scene.gbuffer(
        factors[:, 4], PLAIN.factor_values[3][f[:, 3]],
        PLAIN.factor_values[5][f[:, 5]])
    region2, shade2, t2 = scene.unpack(shapes3d.geometry(factors))
    np.testing.assert_array_equal(region, region2)
    np.testing.assert_allclose(shade, shade2, atol=1e-3)
    np.testing.assert_allclose(t, t2, atol=5e-4)  # float32 ray maths

  def test_sphere_shading_is_lambertian(self):
    # At the sphere's brightest pixel the normal points nearly at the light.
    f = vary(4, [2])
    _, shade, _ = scene.unpack(shapes3d.geometry(f))
    obj = regions(f)[0] == scene.OBJECT
    brightest = float(np.asarray(shade)[0][obj].max())
    self.assertGreater(brightest, 0.97)
    self.assertGreaterEqual(float(np.asarray(shade)[0][obj].min()), 0.35 - 1e-3)

  def test_hsv_to_rgb_matches_colorsys(self):
    import colorsys  # pylint: disable=g-import-not-at-top
    hues = np.linspace(0, 0.9, 10)
    ours = np.asarray(shapes3d.hsv_to_rgb(hues))
    ref = np.array([colorsys.hsv_to_rgb(h, 0.75, 1.0) for h in hues])
    np.testing.assert_allclose(ours, ref, atol=1e-6)


class Shapes3DDetailTest(parameterized.TestCase):

  def test_same_factors_and_key_give_the_same_image(self):
    f = vary(0, [0, 3, 9])
    key = jax.random.key(7)
    np.testing.assert_array_equal(render(f, key, DETAIL),
                                  render(f, key, DETAIL))
    np.testing.assert_array_equal(render(f, None, DETAIL),
                                  render(f, None, DETAIL))

  def test_a_new_key_draws_new_detail_for_the_same_factors(self):
    f = vary(0, [3, 3, 3, 3])
    images = render(f, jax.random.key(1), DETAIL)
    for i in range(4):
      for j in range(i + 1, 4):
        self.assertGreater(np.abs(images[i] - images[j]).mean(), 0.01)
    other = render(f, jax.random.key(2), DETAIL)
    self.assertGreater(np.abs(images - other).mean(), 0.01)

  def test_without_a_key_each_grid_point_has_its_own_fixed_detail(self):
    f = vary(0, [3, 3])
    a, b = render(f, None, DETAIL)
    np.testing.assert_array_equal(a, b)
    c = render(vary(1, [0]), None, DETAIL)[0]
    d = render(vary(1, [0]), None, DETAIL)[0]
    np.testing.assert_array_equal(c, d)

  def test_detail_modulates_brightness_and_keeps_geometry_and_hue(self):
    f = PLAIN.sample_factors(jax.random.key(3), 16)
    plain = render(f)
    detail = render(f, jax.random.key(4), DETAIL)
    self.assertGreater(np.abs(plain - detail).mean(), 0.02)
    # Brightness factor per pixel: the same for all channels (hue kept),
    # within the pattern's contrast range.
    ok = (plain.max(-1) > 0.1) & (detail.max(-1) < 0.999)
    ratio = detail / np.maximum(plain, 1e-6)
    bright = plain > 0.1
    spread = np.where(bright, ratio, np.nan)
    channel_range = np.nanmax(spread, -1) - np.nanmin(spread, -1)
    self.assertLess(float(np.nanmax(channel_range[ok])), 1e-3)
    factor = np.nanmax(spread, -1)[ok]
    self.assertBetween(float(factor.min()), 0.5 - 1e-3, 1.0)
    self.assertBetween(float(factor.max()), 1.0, 1.5 + 1e-3)

  def test_each_surface_gets_its_own_pattern(self):
    f = vary(0, [3])
    image = render(f, jax.random.key(11), DETAIL)[0]
    plain = render(f)[0]
    region = regions(f)[0]
    for surfaces in ((scene.FLOOR,), (scene.WALL_X, scene.WALL_Z),
                     (scene.OBJECT,)):
      mask = np.isin(region, surfaces)
      ratio = image[mask].mean(-1) / plain[mask].mean(-1)
      self.assertGreater(ratio.std(), 0.02)  # textured, not flat


if __name__ == '__main__':
  absltest.main()

"""Procedural dSprites: grid, geometry of each factor, determinism."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from msdr import data

DS = data.get_dataset('dsprites')
SQUARE, ELLIPSE, HEART = 0, 1, 2


def render(*rows):
  return np.asarray(DS.observations_from_factors(np.array(rows)))[..., 0]


def centroid(image):
  ys, xs = np.nonzero(image)
  return xs.mean(), ys.mean()


class DSpritesTest(parameterized.TestCase):

  def test_factor_grid_matches_the_original(self):
    self.assertEqual(DS.factor_names, ('shape', 'scale', 'orientation',
                                       'position_x', 'position_y'))
    self.assertEqual(DS.factor_sizes, (3, 6, 40, 32, 32))
    self.assertEqual(DS.num_combinations, 737_280)
    self.assertEqual(DS.observation_shape, (64, 64, 1))
    np.testing.assert_allclose(DS.factor_values[1], np.linspace(0.5, 1, 6),
                               rtol=1e-6)
    np.testing.assert_allclose(DS.factor_values[2],
                               2 * np.pi * np.arange(40) / 40, rtol=1e-6)
    np.testing.assert_allclose(DS.factor_values[3], np.linspace(0, 1, 32),
                               atol=1e-7)

  def test_images_are_binary_float32(self):
    images, factors = DS.sample(jax.random.key(0), 16)
    self.assertEqual(images.shape, (16, 64, 64, 1))
    self.assertEqual(images.dtype, jnp.float32)
    self.assertEqual(factors.dtype, jnp.int32)
    self.assertTrue(set(np.unique(images)) <= {0.0, 1.0})
    self.assertTrue(np.all(np.asarray(images).sum((1, 2, 3)) > 0))

  @parameterized.parameters(SQUARE, ELLIPSE, HEART)
  def test_position_x_moves_one_pixel_per_step_and_keeps_area(self, shape):
    images = render(*[[shape, 3, 5, x, 10] for x in range(32)])
    areas = images.sum((1, 2))
    self.assertEqual(len(set(areas.tolist())), 1)
    xs = np.array([centroid(im)[0] for im in images])
    ys = np.array([centroid(im)[1] for im in images])
    np.testing.assert_allclose(np.diff(xs), 1.0, atol=1e-6)
    np.testing.assert_allclose(ys, ys[0], atol=1e-6)

  @parameterized.parameters(SQUARE, ELLIPSE, HEART)
  def test_position_y_moves_one_pixel_per_step_and_keeps_area(self, shape):
    images = render(*[[shape, 3, 5, 20, y] for y in range(32)])
    self.assertEqual(len(set(images.sum((1, 2)).tolist())), 1)
    ys = np.array([centroid(im)[1] for im in images])
    np.testing.assert_allclose(np.diff(ys), 1.0, atol=1e-6)

  @parameterized.parameters(SQUARE, ELLIPSE, HEART)
  def test_scale_grows_the_area_about_a_fixed_centre(self, shape):
    images = render(*[[shape, s, 0, 15, 15] for s in range(6)])
    areas = images.sum((1, 2))
    self.assertTrue(np.all(np.diff(areas) > 0), areas)
    # Area grows with the square of the scale (pixel sampling aside).
    ratio = areas[-1] / areas[0]
    self.assertBetween(ratio, 3.5, 4.5)

  def test_square_area_matches_its_side(self):
    image = render([SQUARE, 5, 0, 15, 15])[0]
    self.assertEqual(image.sum(), 20 * 20)  # side 20 px at scale 1

  @parameterized.parameters(SQUARE, ELLIPSE)
  def test_rotation_keeps_centre_and_area_of_symmetric_shapes(self, shape):
    images = render(*[[shape, 5, o, 16, 16] for o in range(40)])
    areas = images.sum((1, 2))
    np.testing.assert_allclose(areas / areas[0], 1.0, atol=0.06)
    for image in images:  # centre on the corner at 32: pixel index 31.5
      np.testing.assert_allclose(centroid(image), (31.5, 31.5), atol=0.35)

  def test_rotation_by_a_quarter_turn_is_exact_for_the_square(self):
    a, b = render([SQUARE, 4, 3, 15, 15], [SQUARE, 4, 13, 15, 15])
    np.testing.assert_array_equal(a, b)  # 10 steps of 9 degrees

  def test_shape_changes_the_silhouette_not_the_position(self):
    images = render(*[[s, 5, 0, 12, 20] for s in range(3)])
    for i in range(3):
      for j in range(i + 1, 3):
        self.assertGreater(np.abs(images[i] - images[j]).sum(), 20)
    # Bounding-box centres agree within a pixel.
    for image in images:
      ys, xs = np.nonzero(image)
      self.assertLess(abs((xs.min() + xs.max() + 1) / 2 - 28.0), 1.01)
      self.assertLess(abs((ys.min() + ys.max() + 1) / 2 - 36.0), 1.01)

  def test_heart_is_a_heart(self):
    heart = render([HEART, 5, 0, 16, 16])[0]
    # Mirror-symmetric about the vertical through its centre (x = 32).
    np.testing.assert_array_equal(heart[:, :32], heart[:, 32:][:, ::-1])
    # Two lobes: the top row of the heart has a notch at the centre column.
    top = np.nonzero(heart.any(1))[0][0]
    self.assertEqual(heart[top, 31] + heart[top, 32], 0)
    self.assertGreater(heart[top].sum(), 0)
    # A point at the bottom: the lowest row is much narrower than the widest.
    bottom = np.nonzero(heart.any(1))[0][-1]
    self.assertLess(heart[bottom].sum(), heart.sum(1).max() / 4)

  def test_shapes_stay_inside_the_frame(self):
    rows = [[s, 5, o, x, y] for s in range(3) for o in range(40)
            for x in (0, 31) for y in (0, 31)]
    images = render(*rows)
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0],
                             images[:, :, -1]], 1)
    self.assertEqual(border.sum(), 0)

  def test_rendering_is_deterministic_and_jittable(self):
    factors = DS.sample_factors(jax.random.key(3), 32)
    eager = DS.observations_from_factors(factors)
    jitted = jax.jit(DS.observations_from_factors)(factors)
    np.testing.assert_array_equal(eager, jitted)
    np.testing.assert_array_equal(eager, DS.observations_from_factors(factors))

  def test_sample_factors_covers_each_factor_uniformly(self):
    factors = np.asarray(DS.sample_factors(jax.random.key(1), 20_000))
    for i, size in enumerate(DS.factor_sizes):
      counts = np.bincount(factors[:, i], minlength=size)
      self.assertLen(counts, size)
      expected = 20_000 / size
      self.assertLess(np.abs(counts - expected).max(), 6 * np.sqrt(expected))


if __name__ == '__main__':
  absltest.main()

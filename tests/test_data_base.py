"""The dataset contract: registry and the errors for bad input."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from msdr import data
from msdr.data import base
from msdr.errors import UserInputError

DS = data.get_dataset('dsprites')


class RegistryTest(absltest.TestCase):

  def test_names(self):
    names = data.list_datasets()
    for name in ('dsprites', 'shapes3d', 'shapes3d_detail', 'tfds:dsprites',
                 'tfds:shapes3d', 'tfds:smallnorb', 'tfds:celeb_a'):
      self.assertIn(name, names)

  def test_unknown_name_lists_valid_names(self):
    with self.assertRaisesRegex(ValueError,
                                "unknown dataset 'dsprite'.*dsprites, shapes3d"):
      data.get_dataset('dsprite')
    with self.assertRaisesRegex(UserInputError, 'must be a string'):
      data.get_dataset(None)
    with self.assertRaisesRegex(UserInputError, 'takes no options'):
      data.get_dataset('dsprites', data_dir='/x')


class FactorCheckTest(parameterized.TestCase):

  @parameterized.parameters(((5,),), ((3, 4),), ((2, 5, 1),))
  def test_wrong_shape(self, shape):
    with self.assertRaisesRegex(UserInputError,
                                r'shape \[n, 5\] \(shape, scale.*got shape'):
      DS.observations_from_factors(np.zeros(shape, np.int32))

  def test_float_factors(self):
    with self.assertRaisesRegex(UserInputError, 'integer indices'):
      DS.observations_from_factors(np.zeros((2, 5), np.float32))

  @parameterized.parameters((0, -1), (2, 40), (3, 32))
  def test_out_of_range(self, factor, value):
    f = np.zeros((3, 5), np.int32)
    f[1, factor] = value
    name = DS.factor_names[factor]
    with self.assertRaisesRegex(UserInputError,
                                f"factor '{name}' takes indices 0..{DS.factor_sizes[factor] - 1}"):
      DS.observations_from_factors(f)

  def test_out_of_range_in_a_jax_array(self):
    with self.assertRaisesRegex(UserInputError, "factor 'scale'"):
      DS.observations_from_factors(jnp.array([[0, 6, 0, 0, 0]]))

  def test_under_jit_values_are_clipped_not_checked(self):
    f = jnp.array([[0, 9, 0, 0, 0]])
    clipped = jax.jit(DS.observations_from_factors)(f)
    np.testing.assert_array_equal(
        clipped, DS.observations_from_factors(np.array([[0, 5, 0, 0, 0]])))

  def test_bad_sample_count(self):
    for n in (-1, 2.5, '3'):
      with self.assertRaisesRegex(UserInputError, 'non-negative int'):
        DS.sample(jax.random.key(0), n)

  def test_empty_batch(self):
    images = DS.observations_from_factors(np.zeros((0, 5), np.int32))
    self.assertEqual(images.shape, (0, 64, 64, 1))

  def test_flat_index_round_trip(self):
    f = np.asarray(DS.sample_factors(jax.random.key(0), 50))
    flat = DS.factors_to_index(f)
    self.assertTrue(np.all((flat >= 0) & (flat < DS.num_combinations)))
    np.testing.assert_array_equal(DS.index_to_factors(flat), f)
    # Row-major: the last factor varies fastest.
    np.testing.assert_array_equal(DS.factors_to_index(np.array([[0, 0, 0, 0, 1],
                                                                [0, 0, 0, 1, 0]])),
                                  [1, 32])


class UniformIndicesTest(absltest.TestCase):

  def test_multiply_shift_is_exact(self):
    words = np.array([0, 1, 2**16 - 1, 2**16, 2**31, 2**32 - 1, 123456789,
                      3141592653], np.uint64)
    words = np.concatenate([words, np.random.default_rng(0).integers(
        2**32, size=1000, dtype=np.uint64)])
    for size in (1, 2, 3, 40, 1000, 2**16):
      want = (words * size) >> 32  # exact in uint64
      got = base._multiply_shift(jnp.asarray(words, jnp.uint32), size)
      np.testing.assert_array_equal(got, want, err_msg=f'size {size}')

  def test_every_value_equally_often(self):
    sizes = (3, 40, 2**16 + 1)  # the last by jax.random.randint
    f = np.asarray(base.uniform_indices(jax.random.key(1), 200_000, sizes))
    self.assertEqual(f.shape, (200_000, 3))
    self.assertEqual(f.dtype, np.int32)
    for j, size in enumerate(sizes):
      self.assertEqual(f[:, j].min(), 0)
      self.assertLess(f[:, j].max(), size)
      if size <= 40:  # chi-square, size - 1 dof: exceeded with p < 1e-4
        counts = np.bincount(f[:, j], minlength=size)
        expected = len(f) / size
        chi2 = np.sum((counts - expected)**2 / expected)
        self.assertLess(chi2, size - 1 + 10 * np.sqrt(2 * (size - 1)))
    # Columns independent: joint counts of the first two are uniform too.
    joint = np.bincount(f[:, 0] * 40 + f[:, 1], minlength=120)
    self.assertLess(np.abs(joint / (len(f) / 120) - 1).max(), 0.1)

  def test_same_key_same_draw_under_jit(self):
    key = jax.random.key(2)
    np.testing.assert_array_equal(
        DS.sample_factors(key, 100),
        jax.jit(DS.sample_factors, static_argnums=1)(key, 100))
    self.assertEqual(DS.sample_factors(key, 0).shape, (0, DS.num_factors))


class HashUniformTest(absltest.TestCase):

  def test_uniform_and_decorrelated(self):
    u = np.asarray(base.hash_uniform(jnp.array([1, 2], jnp.uint32),
                                     jnp.arange(4000), 16))
    self.assertTrue(np.all((u >= 0) & (u < 1)))
    self.assertAlmostEqual(u.mean(), 0.5, delta=0.01)
    self.assertAlmostEqual(u.var(), 1 / 12, delta=0.005)
    c = np.corrcoef(u.T)
    self.assertLess(np.abs(c - np.eye(16)).max(), 0.06)
    other = np.asarray(base.hash_uniform(jnp.array([1, 3], jnp.uint32),
                                         jnp.arange(4000), 16))
    self.assertLess(abs(np.corrcoef(u.ravel(), other.ravel())[0, 1]), 0.02)


if __name__ == '__main__':
  absltest.main()

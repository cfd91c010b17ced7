"""Real datasets through tensorflow-datasets, tested offline with mock data."""

import time

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np
import tensorflow_datasets as tfds

from msdr import data
from msdr.data import pipeline
from msdr.errors import UserInputError


class TfdsSourceTest(parameterized.TestCase):

  @parameterized.parameters(
      ('dsprites', (64, 64, 1), 5), ('shapes3d', (64, 64, 3), 6),
      ('smallnorb', (64, 64, 1), 4), ('celeb_a', (64, 64, 3), 40))
  def test_mock_dataset_reads_as_a_ground_truth_dataset(self, name, shape,
                                                        num_factors):
    with tfds.testing.mock_data(num_examples=6):
      ds = data.get_dataset('tfds:' + name)
      self.assertEqual(ds.name, 'tfds:' + name)
      self.assertFalse(ds.jittable)
      self.assertEqual(ds.observation_shape, shape)
      self.assertEqual(ds.num_factors, num_factors)
      images, factors = ds.sample(jax.random.key(0), 3)
    self.assertEqual(images.shape, (3,) + shape)
    self.assertEqual(images.dtype, np.float32)
    self.assertBetween(float(images.min()), 0.0, 1.0)
    self.assertBetween(float(images.max()), 0.0, 1.0)
    self.assertEqual(factors.shape, (3, num_factors))
    self.assertTrue(np.all(factors < np.array(ds.factor_sizes)))

  def test_dsprites_factor_grid_matches_the_procedural_one(self):
    with tfds.testing.mock_data(num_examples=4):
      ds = data.get_dataset('tfds:dsprites')
    self.assertEqual(ds.factor_sizes, data.get_dataset('dsprites').factor_sizes)

  def test_observations_from_factors_finds_the_record(self):
    with tfds.testing.mock_data(num_examples=8):
      ds = data.get_dataset('tfds:shapes3d')
      images, factors = ds.get_examples(np.arange(8))
      found = ds.observations_from_factors(factors[2:5])
      np.testing.assert_array_equal(found.shape, (3, 64, 64, 3))
      for i, row in enumerate(factors[2:5]):
        same = np.flatnonzero((factors == row).all(1))
        self.assertTrue(any(np.array_equal(found[i], images[j]) for j in same))

  def test_missing_factor_combination_is_a_clear_error(self):
    with tfds.testing.mock_data(num_examples=3):
      ds = data.get_dataset('tfds:dsprites')
      _, factors = ds.get_examples(np.arange(3))
      wanted = np.array([[0, 0, 0, 0, 0], [2, 5, 39, 31, 31]])
      present = {tuple(r) for r in factors.tolist()}
      wanted = np.array([r for r in wanted.tolist() if tuple(r) not in present])
      with self.assertRaisesRegex(UserInputError, 'no record with factors'):
        ds.observations_from_factors(wanted)

  def test_celeb_a_has_no_factor_grid(self):
    with tfds.testing.mock_data(num_examples=3):
      ds = data.get_dataset('tfds:celeb_a')
      with self.assertRaisesRegex(UserInputError, 'no full factor grid'):
        ds.observations_from_factors(np.zeros((1, 40), np.int32))
      with self.assertRaisesRegex(UserInputError, 'no full factor grid'):
        ds.sample_factors(jax.random.key(0), 2)

  def test_host_pipeline_over_mock_tfds(self):
    with tfds.testing.mock_data(num_examples=10):
      ds = data.get_dataset('tfds:dsprites')
      batch = pipeline.Pipeline(ds, 4, seed=0).batch(1)
    self.assertEqual(batch['image'].shape, (4, 64, 64, 1))
    self.assertEqual(batch['factors'].shape, (4, 5))

  def test_missing_dataset_fails_fast_naming_the_prepare_command(self):
    empty = self.create_tempdir().full_path
    start = time.perf_counter()
    with self.assertRaisesRegex(UserInputError,
                                r'tfds:shapes3d.*not prepared.*tfds build '
                                r'shapes3d --data_dir=.*array_record'):
      data.get_dataset('tfds:shapes3d', data_dir=empty)
    self.assertLess(time.perf_counter() - start, 30)  # never a download

  def test_unknown_tfds_name_lists_the_valid_ones(self):
    with self.assertRaisesRegex(UserInputError, 'tfds:dsprites'):
      data.get_dataset('tfds:mnist')


if __name__ == '__main__':
  absltest.main()

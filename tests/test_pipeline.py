"""The sharded input pipeline: determinism, resumption, sharding."""

import threading

from absl.testing import absltest
import jax
import numpy as np

from msdr import data
from msdr import sharding
from msdr.data import base
from msdr.data import pipeline
from msdr.errors import UserInputError
from tests import conftest

DSPRITES = data.get_dataset('dsprites')


class HostDataset(base.GroundTruthDataset):
  """A tiny host-side dataset: record i is an image filled with i / 100."""
  name = 'host'
  factor_names = ('id',)
  factor_values = (np.arange(10, dtype=np.float32),)
  observation_shape = (2, 2, 1)
  jittable = False
  num_examples = 10

  def get_examples(self, indices):
    indices = np.asarray(indices)
    images = np.broadcast_to(indices[:, None, None, None] / 100.0,
                             (len(indices), 2, 2, 1)).astype(np.float32)
    return images, indices[:, None].astype(np.int32)

  def _render(self, factors, key):
    return self.get_examples(np.asarray(factors)[:, 0])[0]


class PipelineTest(absltest.TestCase):

  def test_batches_are_sharded_over_all_devices(self):
    self.assertEqual(jax.device_count(), conftest.NUM_DEVICES)
    pipe = pipeline.Pipeline(DSPRITES, 8, seed=0)
    batch = pipe.batch(0)
    self.assertEqual(batch['image'].shape, (8, 64, 64, 1))
    self.assertEqual(batch['factors'].shape, (8, 5))
    for array in batch.values():
      self.assertEqual(array.sharding.spec, jax.sharding.PartitionSpec('data'))
      shards = array.addressable_shards
      self.assertLen(shards, conftest.NUM_DEVICES)
      self.assertEqual({s.data.shape[0] for s in shards}, {2})

  def test_same_seed_same_batches_other_seed_other_batches(self):
    a = pipeline.Pipeline(DSPRITES, 8, seed=1)
    b = pipeline.Pipeline(DSPRITES, 8, seed=1)
    c = pipeline.Pipeline(DSPRITES, 8, seed=2)
    for step in (0, 5):
      np.testing.assert_array_equal(a.batch(step)['factors'],
                                    b.batch(step)['factors'])
    self.assertFalse(np.array_equal(a.batch(0)['factors'],
                                    c.batch(0)['factors']))
    self.assertFalse(np.array_equal(a.batch(0)['factors'],
                                    a.batch(1)['factors']))

  def test_resuming_at_step_k_gives_the_batches_of_step_k(self):
    pipe = pipeline.Pipeline(DSPRITES, 8, seed=3)
    stream = pipe.iterate(0)
    uninterrupted = [next(stream) for _ in range(6)]
    resumed = pipeline.Pipeline(DSPRITES, 8, seed=3).iterate(4)
    for step in (4, 5):
      batch = next(resumed)
      np.testing.assert_array_equal(batch['image'],
                                    uninterrupted[step]['image'])
      np.testing.assert_array_equal(batch['factors'],
                                    uninterrupted[step]['factors'])

  def test_one_device_and_all_devices_give_the_same_batch(self):
    one = pipeline.Pipeline(DSPRITES, 8, 4, sharding.make_mesh(1)).batch(2)
    many = pipeline.Pipeline(DSPRITES, 8, 4, sharding.make_mesh()).batch(2)
    np.testing.assert_array_equal(one['image'], many['image'])
    np.testing.assert_array_equal(one['factors'], many['factors'])

  def test_batch_fn_is_pure_and_matches_batch(self):
    pipe = pipeline.Pipeline(DSPRITES, 8, seed=5)
    direct = jax.jit(pipe.batch_fn)(pipe.key, 3)
    np.testing.assert_array_equal(direct['factors'], pipe.batch(3)['factors'])

  def test_batch_size_must_split_over_devices(self):
    with self.assertRaisesRegex(UserInputError, 'does not split over 4'):
      pipeline.Pipeline(DSPRITES, 6, seed=0)
    with self.assertRaisesRegex(UserInputError, 'positive int'):
      pipeline.Pipeline(DSPRITES, 0, seed=0)
    with self.assertRaisesRegex(UserInputError, 'devices'):
      sharding.make_mesh(99)


class HostPipelineTest(absltest.TestCase):

  def test_each_epoch_visits_every_record_once(self):
    pipe = pipeline.Pipeline(HostDataset(), 4, seed=0)
    ids = np.concatenate([pipe.record_indices(s) for s in range(5)])  # 2 epochs
    self.assertCountEqual(ids[:10], range(10))
    self.assertCountEqual(ids[10:20], range(10))
    self.assertFalse(np.array_equal(ids[:10], ids[10:20]))

  def test_host_batches_are_sharded_resumable_and_match_records(self):
    pipe = pipeline.Pipeline(HostDataset(), 4, seed=1)
    stream = pipe.iterate(0)
    batches = [next(stream) for _ in range(4)]
    resumed = next(pipeline.Pipeline(HostDataset(), 4, seed=1).iterate(3))
    np.testing.assert_array_equal(resumed['factors'], batches[3]['factors'])
    batch = batches[2]
    self.assertLen(batch['image'].addressable_shards, conftest.NUM_DEVICES)
    ids = np.asarray(batch['factors'])[:, 0]
    np.testing.assert_array_equal(ids, pipe.record_indices(2))
    np.testing.assert_allclose(np.asarray(batch['image'])[:, 0, 0, 0],
                               ids / 100.0, rtol=1e-6)

  def test_batch_reads_the_next_step_in_the_background(self):
    reads = []

    class CountingDataset(HostDataset):

      def get_examples(self, indices):
        reads.append(threading.current_thread().name)
        return super().get_examples(indices)

    pipe = pipeline.Pipeline(CountingDataset(), 4, seed=2,
                             mesh=sharding.make_mesh(1))
    direct = pipeline.Pipeline(HostDataset(), 4, seed=2,
                               mesh=sharding.make_mesh(1))
    for step in (0, 1, 2, 7, 8):  # consecutive, then a jump
      np.testing.assert_array_equal(pipe.batch(step)['factors'],
                                    direct.batch(step)['factors'])
    pipe._ahead[1].result()  # pylint: disable=protected-access
    # Steps 0 and 7 are read in the caller's thread (nothing was ahead);
    # 1, 2, 3, 8 and 9 were read ahead.
    self.assertEqual(sum(n.startswith('msdr-prefetch') for n in reads), 5)
    self.assertLen(reads, 7)


if __name__ == '__main__':
  absltest.main()

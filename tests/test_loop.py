"""The shared train loop on a toy stage (compiles in well under a second):
PRNG and data threading, the NaN guard, preemption, checkpoints and logs."""

import json
import os
import signal
import struct

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import optax

from msdr import sharding
from msdr.errors import Preempted, TrainingError
from msdr.train import checkpoint
from msdr.train import logger
from msdr.train import loop

BATCH = 4


def toy_stage(steps: int, mesh, nan_at: int | None = None,
              on_batch=None) -> loop.Stage:
  """Linear regression with a noisy target: the loss uses the key and step,
  so resumed keys and batches must match exactly for equal results."""
  data_sharding = sharding.data_sharding(mesh)

  def batches(step):
    if on_batch is not None:
      on_batch(step)
    rng = np.random.default_rng(step)
    return {'image': jax.device_put(
        rng.normal(size=(BATCH, 3)).astype(np.float32), data_sharding)}

  def loss(params, batch, key, step):
    noise = jax.random.normal(key, (BATCH,))
    err = batch['image'] @ params['w'] - 1.0 - 0.1 * noise
    value = jnp.mean(jnp.square(err))
    if nan_at is not None:
      value = jnp.where(step == nan_at, jnp.nan, value)
    return value, {'loss': value, 'mse': jnp.mean(jnp.square(err))}

  return loop.Stage(name='stage1', init=lambda key: {
      'w': jax.random.normal(key, (3,))}, loss=loss,
                    optimizer=optax.adam(0.1), batches=batches, steps=steps,
                    batch_size=BATCH)


def read_jsonl(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


class LoopTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.mesh = sharding.make_mesh(2)

  def train(self, stage, workdir, **kwargs):
    options = dict(workdir=workdir, seed=3, mesh=self.mesh,
                   checkpoint_every=2, log_every=1)
    options.update(kwargs)
    return loop.train(stage, **options)

  def test_step_keys_fold_in_stage_then_step(self):
    init_key, train_key = loop.stage_keys(7, 'stage1')
    expected = jax.random.split(jax.random.fold_in(jax.random.key(7), 1))
    np.testing.assert_array_equal(jax.random.key_data(init_key),
                                  jax.random.key_data(expected[0]))
    np.testing.assert_array_equal(jax.random.key_data(train_key),
                                  jax.random.key_data(expected[1]))
    other = loop.stage_keys(7, 'stage2')[1]
    self.assertFalse(np.array_equal(jax.random.key_data(train_key),
                                    jax.random.key_data(other)))

  def test_resume_gives_the_uninterrupted_result(self):
    straight = self.train(toy_stage(5, self.mesh),
                          self.create_tempdir().full_path)
    workdir = self.create_tempdir().full_path
    self.train(toy_stage(3, self.mesh), workdir)
    resumed = self.train(toy_stage(5, self.mesh), workdir)
    self.assertEqual(int(resumed['step']), 5)
    np.testing.assert_array_equal(resumed['params']['w'],
                                  straight['params']['w'])
    steps = [r['step'] for r in read_jsonl(workdir)]
    self.assertEqual(steps, [1, 2, 3, 4, 5])

  def test_finished_run_is_not_trained_again(self):
    workdir = self.create_tempdir().full_path
    first = self.train(toy_stage(2, self.mesh), workdir)
    again = self.train(toy_stage(2, self.mesh), workdir)
    np.testing.assert_array_equal(first['params']['w'], again['params']['w'])
    self.assertLen(read_jsonl(workdir), 2)

  def test_nonfinite_loss_names_step_and_term_and_keeps_last_good(self):
    workdir = self.create_tempdir().full_path
    # Step index 4 is the fifth step; logging every 3 steps means the NaN is
    # found in a batch of pending metrics, not at the step it happened.
    with self.assertRaisesRegex(
        TrainingError, r'non-finite loss at step 5 \(loss=nan, objective=nan'
        r'\).*last good checkpoint, step 4'):
      self.train(toy_stage(9, self.mesh, nan_at=4), workdir, log_every=3)
    ckpt = checkpoint.Checkpointer(
        os.path.join(workdir, 'checkpoints', 'stage1'))
    self.assertEqual(ckpt.steps, [2, 4])
    ckpt.close()

  def test_sigterm_saves_a_checkpoint_then_stops(self):
    workdir = self.create_tempdir().full_path

    def kill_at_three(step):
      if step == 3:
        os.kill(os.getpid(), signal.SIGTERM)

    with self.assertRaisesRegex(Preempted, 'SIGTERM at step 4'):
      self.train(toy_stage(50, self.mesh, on_batch=kill_at_three), workdir,
                 checkpoint_every=100)
    ckpt = checkpoint.Checkpointer(
        os.path.join(workdir, 'checkpoints', 'stage1'))
    self.assertEqual(ckpt.steps, [4])
    ckpt.close()
    # The handler is gone again, and the run resumes to the same result.
    self.assertEqual(signal.getsignal(signal.SIGTERM), signal.SIG_DFL)
    resumed = self.train(toy_stage(6, self.mesh), workdir)
    straight = self.train(toy_stage(6, self.mesh),
                          self.create_tempdir().full_path)
    np.testing.assert_array_equal(resumed['params']['w'],
                                  straight['params']['w'])

  def test_metrics_jsonl_and_tensorboard_events(self):
    workdir = self.create_tempdir().full_path
    self.train(toy_stage(4, self.mesh), workdir, log_every=2)
    records = read_jsonl(workdir)
    self.assertEqual([r['step'] for r in records], [2, 4])
    for key in ('stage', 'loss', 'mse', 'objective', 'grad_norm',
                'param_norm', 'steps_per_second', 'images_per_second'):
      self.assertIn(key, records[0])
    logdir = os.path.join(workdir, 'tensorboard', 'stage1')
    (name,) = os.listdir(logdir)
    self.assertTrue(name.startswith('events.out.tfevents.'))
    with open(os.path.join(logdir, name), 'rb') as f:
      data = f.read()
    # TFRecord framing: length, masked CRC of the length, payload, masked
    # CRC of the payload; one file-version record plus one per log step.
    events, offset = [], 0
    while offset < len(data):
      (length,) = struct.unpack('<Q', data[offset:offset + 8])
      self.assertEqual(struct.unpack('<I', data[offset + 8:offset + 12])[0],
                       logger._masked_crc(data[offset:offset + 8]))
      payload = data[offset + 12:offset + 12 + length]
      crc = data[offset + 12 + length:offset + 16 + length]
      self.assertEqual(struct.unpack('<I', crc)[0],
                       logger._masked_crc(payload))
      events.append(payload)
      offset += 16 + length
    self.assertLen(events, 3)
    self.assertIn(b'brain.Event:2', events[0])
    self.assertIn(b'stage1/loss', events[1])


class TensorBoardEncodingTest(absltest.TestCase):

  def test_crc32c_known_values(self):
    # RFC 3720 (iSCSI) test vectors for CRC-32C.
    self.assertEqual(logger.crc32c(b''), 0)
    self.assertEqual(logger.crc32c(b'123456789'), 0xE3069283)
    self.assertEqual(logger.crc32c(bytes(32)), 0x8A9136AA)

  def test_scalar_event_bytes(self):
    event = logger.encode_event(1.5, step=300, scalars={'a': 2.0})
    expected = (b'\x09' + struct.pack('<d', 1.5) + b'\x10\xac\x02'
                # summary (field 5, 10 bytes) > value (field 1, 8 bytes) >
                # tag (field 1) 'a', simple_value (field 2, fixed32) 2.0
                + b'\x2a\x0a' + b'\x0a\x08' + b'\x0a\x01a'
                + b'\x15' + struct.pack('<f', 2.0))
    self.assertEqual(event, expected)

  def test_image_event_bytes(self):
    event = logger.encode_event(1.5, step=2, images={'b': (b'PNG', 4, 5, 3)})
    image = (b'\x08\x04' + b'\x10\x05' + b'\x18\x03'  # height, width, colors
             + b'\x22\x03PNG')  # encoded_image_string (field 4)
    value = b'\x0a\x01b' + b'\x22' + bytes([len(image)]) + image
    expected = (b'\x09' + struct.pack('<d', 1.5) + b'\x10\x02'
                + b'\x2a' + bytes([len(value) + 2])
                + b'\x0a' + bytes([len(value)]) + value)
    self.assertEqual(event, expected)


class CheckpointerTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.mesh = sharding.make_mesh(2)
    replicated = sharding.replicated(self.mesh)
    self.abstract = {'w': jax.ShapeDtypeStruct((3,), jnp.float32,
                                               sharding=replicated),
                     'step': jax.ShapeDtypeStruct((), jnp.int32,
                                                  sharding=replicated)}

  def state(self, value):
    return {'w': jnp.full((3,), value, jnp.float32),
            'step': jnp.asarray(value, jnp.int32)}

  def test_round_trip_keeps_last_k_and_sharding(self):
    directory = self.create_tempdir().full_path
    ckpt = checkpoint.Checkpointer(directory, keep=2)
    for step in (1, 2, 3):
      ckpt.save(step, self.state(step))
    ckpt.wait()
    self.assertEqual(ckpt.steps, [2, 3])
    state, step = ckpt.restore(self.abstract)
    self.assertEqual(step, 3)
    np.testing.assert_array_equal(state['w'], [3.0, 3.0, 3.0])
    self.assertEqual(state['w'].sharding, sharding.replicated(self.mesh))
    ckpt.close()

  def test_empty_directory_restores_nothing(self):
    ckpt = checkpoint.Checkpointer(self.create_tempdir().full_path)
    self.assertIsNone(ckpt.restore(self.abstract))
    self.assertIsNone(ckpt.latest_step())
    ckpt.close()

  def test_corrupt_latest_falls_back_to_previous(self):
    directory = self.create_tempdir().full_path
    ckpt = checkpoint.Checkpointer(directory, keep=3)
    ckpt.save(1, self.state(1))
    ckpt.save(2, self.state(2))
    ckpt.close()
    # Damage every file of checkpoint 2 (a disk that filled up mid-copy).
    for root, _, files in os.walk(os.path.join(directory, '2')):
      for name in files:
        with open(os.path.join(root, name), 'wb') as f:
          f.write(b'\x00garbage')
    ckpt = checkpoint.Checkpointer(directory, keep=3)
    state, step = ckpt.restore(self.abstract)
    self.assertEqual(step, 1)
    np.testing.assert_array_equal(state['w'], [1.0, 1.0, 1.0])
    self.assertEqual(ckpt.steps, [1])
    self.assertTrue(os.listdir(directory + '-corrupt'))
    # Training can go on and save step 2 again.
    ckpt.save(2, self.state(5))
    ckpt.wait()
    self.assertEqual(ckpt.restore(self.abstract)[1], 2)
    ckpt.close()

  def test_unfinished_save_is_ignored(self):
    directory = self.create_tempdir().full_path
    ckpt = checkpoint.Checkpointer(directory)
    ckpt.save(1, self.state(1))
    ckpt.close()
    # What a kill during a save leaves behind: orbax's temporary directory.
    os.makedirs(os.path.join(directory, '2.orbax-checkpoint-tmp-123'))
    ckpt = checkpoint.Checkpointer(directory)
    self.assertEqual(ckpt.restore(self.abstract)[1], 1)
    ckpt.close()


if __name__ == '__main__':
  absltest.main()

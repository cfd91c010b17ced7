"""Stage 1 trained end to end on procedural dSprites: every method by name,
1 vs 2 devices, interrupt-and-resume, the loss going down, and the command
line (artifacts, SIGTERM, resume)."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from configs import common
from msdr import sharding
from msdr.models import stage1 as stage1_lib
from msdr.train import stage1
from tests.test_main import cli_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 40
LOSS_DROP = 50.0  # nats per image, at Adam 1e-4 and batch 8


def smoke_config(method='beta_tcvae', steps=2, **stage1_overrides):
  """The smoke config (batch 8) that every test here shares, so the train
  step compiles once per device count (see conftest's XLA cache)."""
  config = common.base_config('dsprites', method, 'smoke')
  config.stage1.steps = steps
  config.stage1.update(stage1_overrides)
  config.log_every = 1
  return config


def flat_params(state):
  return np.concatenate([np.ravel(x) for x in
                         jax.tree.leaves(jax.device_get(state['params']))])


class Stage1TrainTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.straight_dir = tempfile.mkdtemp(prefix='msdr-straight-')
    # The reference: uninterrupted steps on one device.
    _, cls.straight = stage1.train_stage1(
        smoke_config(steps=STEPS), cls.straight_dir, sharding.make_mesh(1))

  def test_two_devices_give_the_one_device_parameters(self):
    # A few steps only: Adam divides by the gradient's running RMS, so the
    # float rounding of a different reduction order grows over many steps
    # on parameters whose gradients are ~0.
    states = [stage1.train_stage1(smoke_config(steps=4),
                                  self.create_tempdir().full_path,
                                  sharding.make_mesh(n))[1] for n in (1, 2)]
    np.testing.assert_allclose(flat_params(states[1]), flat_params(states[0]),
                               rtol=1e-4, atol=1e-6)

  def test_interrupt_then_resume_gives_the_uninterrupted_parameters(self):
    workdir = self.create_tempdir().full_path
    mesh = sharding.make_mesh(1)
    stage1.train_stage1(smoke_config(steps=STEPS // 2), workdir, mesh)
    _, state = stage1.train_stage1(smoke_config(steps=STEPS), workdir, mesh)
    self.assertEqual(int(state['step']), STEPS)
    np.testing.assert_array_equal(flat_params(state),
                                  flat_params(self.straight))

  @parameterized.parameters(*stage1_lib.METHODS)
  def test_each_method_trains_by_name(self, method):
    model, state = stage1.train_stage1(
        smoke_config(method, steps=1), self.create_tempdir().full_path,
        sharding.make_mesh(1))
    self.assertEqual(model.method, method)
    self.assertEqual(int(state['step']), 1)
    self.assertTrue(np.all(np.isfinite(flat_params(state))))
    self.assertEqual('discriminator' in state['params'],
                     method == 'factor_vae')

  def test_a_short_run_lowers_the_loss(self):
    with open(os.path.join(self.straight_dir, 'metrics.jsonl')) as f:
      losses = [json.loads(line)['loss'] for line in f]
    self.assertLen(losses, STEPS)
    self.assertLess(np.mean(losses[-5:]), np.mean(losses[:5]) - LOSS_DROP)

  def test_bad_values_are_rejected_before_building(self):
    mesh = sharding.make_mesh(4)
    cases = {
        'unknown stage-1 method': dict(method='vae'),
        'stage1.beta must be >= 0': dict(beta=-1.0),
        'does not split over 4 devices': dict(batch_size=6),
        'stage1.steps must be a positive int': dict(steps=0),
        "unknown reconstruction loss 'l1'": dict(reconstruction='l1'),
        'stage1.latent_dim must be a positive int': dict(latent_dim=0),
    }
    for message, overrides in cases.items():
      config = smoke_config()
      config.stage1.update(overrides)
      with self.assertRaisesRegex(ValueError, message):
        stage1.build(config, mesh)


def cli(*args, **kwargs):
  env = cli_env()
  return subprocess.Popen([sys.executable, '-m', 'msdr.main', *args],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **kwargs)


class CommandLineTest(absltest.TestCase):

  def test_train_writes_the_documented_artifacts(self):
    workdir = self.create_tempdir().full_path
    proc = cli('--config', 'configs/dsprites_beta_tcvae.py:smoke',
               '--workdir', workdir)
    out, err = proc.communicate(timeout=300)
    self.assertEqual(proc.returncode, 0, err[-3000:])
    self.assertIn('stage1 step 20', out)
    with open(os.path.join(workdir, 'config.json')) as f:
      self.assertEqual(json.load(f)['stage1']['method'], 'beta_tcvae')
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      records = [json.loads(line) for line in f]
    self.assertEqual([r['step'] for r in records], [5, 10, 15, 20])
    for key in ('reconstruction', 'kl', 'mi', 'tc', 'dwkl', 'loss',
                'grad_norm', 'steps_per_second'):
      self.assertIn(key, records[-1])
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'checkpoints',
                                                    'stage1'))),
                     ['10', '20'])
    self.assertTrue(os.listdir(os.path.join(workdir, 'tensorboard',
                                            'stage1')))
    # A stage-1-only run's report: the stage-1 figures, no multi-stage ones.
    self.assertIn(f'report: {workdir}/report.html', out)
    written = os.listdir(workdir)
    for name in ('traversals_stage1.png', 'traversals_stage1.gif',
                 'reconstructions.png', 'samples.png', 'mi_matrix.png',
                 'kl_per_dim.png', 'training_curves.png', 'report.md'):
      self.assertIn(name, written)
    self.assertNotIn('traversals_multistage.png', written)

  def test_sigterm_leaves_a_checkpoint_that_resumes(self):
    workdir = self.create_tempdir().full_path
    args = ('--config', 'configs/dsprites_beta_tcvae.py:smoke',
            '--workdir', workdir, '--config.log_every=1',
            '--config.checkpoint_every=100000',
            '--config.report.after_training=False')
    proc = cli(*args, '--config.stage1.steps=100000')
    metrics = os.path.join(workdir, 'metrics.jsonl')
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
      if os.path.exists(metrics) and os.path.getsize(metrics) > 0:
        break
      time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    self.assertEqual(proc.returncode, 128 + signal.SIGTERM, err[-3000:])
    self.assertIn('Rerun the same command to resume', err)
    saved = os.listdir(os.path.join(workdir, 'checkpoints', 'stage1'))
    self.assertLen(saved, 1)
    step = int(saved[0])
    proc = cli(*args, f'--config.stage1.steps={step + 2}')
    out, err = proc.communicate(timeout=300)
    self.assertEqual(proc.returncode, 0, err[-3000:])
    self.assertIn(f'resumed from checkpoint {step}', out)
    self.assertIn(f'stage1 step {step + 2}', out)


if __name__ == '__main__':
  absltest.main()

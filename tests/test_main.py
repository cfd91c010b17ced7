"""The command line: a smoke run, and one clear error line for bad input."""

import json
import os
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized

from configs import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ('dsprites_beta_tcvae', 'shapes3d_beta_tcvae',
           'shapes3d_detail_beta_tcvae')


def cli_env(devices: int = 1) -> dict:
  """The environment of a CLI subprocess: CPU with `devices` devices, set
  as conftest sets them (jax_num_cpu_devices, not XLA_FLAGS). The device
  count and XLA_FLAGS are part of the persistent compilation cache's key:
  with conftest.NUM_DEVICES a subprocess reuses what the session compiled
  (an eval CLI call: 20 s instead of 38 s), while a 1-device train step
  compiles faster than a sharded one."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_NUM_CPU_DEVICES=str(devices))
  env.pop('XLA_FLAGS', None)
  return env


def run_cli(*args, devices: int = 1):
  env = cli_env(devices)
  return subprocess.run([sys.executable, '-m', 'msdr.main', *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)


class ConfigTest(parameterized.TestCase):

  @parameterized.parameters(*CONFIGS)
  def test_configs_load_in_both_modes(self, name):
    import importlib  # pylint: disable=g-import-not-at-top
    module = importlib.import_module(f'configs.{name}')
    full, smoke = module.get_config(), module.get_config('smoke')
    self.assertEqual(full.stage1.batch_size, 64)
    self.assertEqual(full.stage1.method, 'beta_tcvae')
    self.assertEqual(full.stage1.beta, 6.0)
    self.assertLess(smoke.stage1.steps, 100)
    self.assertEqual(full.data.name, name.rsplit('_beta_tcvae', 1)[0])

  def test_every_config_file_loads_and_validates_in_every_mode(self):
    import glob  # pylint: disable=g-import-not-at-top
    import importlib  # pylint: disable=g-import-not-at-top
    from msdr.models import stage1  # pylint: disable=g-import-not-at-top
    from msdr.train import stage1 as stage1_job  # pylint: disable=g-import-not-at-top
    names = sorted(os.path.basename(p)[:-3] for p in
                   glob.glob(os.path.join(ROOT, 'configs', '[a-z]*_*.py')))
    methods = set()
    from msdr.models import stage2  # pylint: disable=g-import-not-at-top
    models = set()
    for name in names:
      module = importlib.import_module(f'configs.{name}')
      for mode in common.MODES:
        config = module.get_config(mode or None)
        stage1.check_config(config.stage1)
        stage1_job.check_run_config(config)
        methods.add(config.stage1.method)
        if config.stage2.model is None:
          self.assertTrue(name.endswith(config.stage1.method), name)
          continue
        self.assertTrue(name.endswith(config.stage2.model), name)
        self.assertTrue(config.eval.after_training)
        models.add(config.stage2.model)
        side = config.stage2.image_size
        stage2.from_config(config.stage2, (side, side, 3))
    # Each stage-2 model on each dataset, and CelebA at 128x128.
    for model in stage2.MODELS:
      for dataset in ('dsprites', 'shapes3d', 'shapes3d_detail', 'celeba'):
        self.assertIn(f'{dataset}_{model}', names)
    self.assertIn('celeba_128_ms_vae', names)
    self.assertEqual(models, set(stage2.MODELS))
    # One config per stage-1 method on dsprites, at least.
    self.assertEqual(methods, set(stage1.METHODS))
    for method in stage1.METHODS:
      self.assertIn(f'dsprites_{method}', names)

  def test_unknown_mode(self):
    with self.assertRaisesRegex(ValueError, 'unknown config mode'):
      common.base_config('dsprites', 'beta_tcvae', 'fast')


class MainTest(absltest.TestCase):

  def test_data_mode_prints_summary_and_writes_artifacts(self):
    workdir = self.create_tempdir().full_path
    result = run_cli('--config', 'configs/dsprites_beta_tcvae.py:smoke',
                     '--workdir', workdir, '--mode=data')
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn('dataset dsprites', result.stdout)
    self.assertIn('737,280 factor combinations', result.stdout)
    self.assertIn('images/s', result.stdout)
    self.assertTrue(os.path.exists(os.path.join(workdir, 'data_samples.png')))
    with open(os.path.join(workdir, 'config.json')) as f:
      self.assertEqual(json.load(f)['data']['name'], 'dsprites')

  def test_override_of_a_config_field(self):
    workdir = self.create_tempdir().full_path
    result = run_cli('--config', 'configs/dsprites_beta_tcvae.py:smoke',
                     '--workdir', workdir, '--config.data.name=shapes3d',
                     '--mode=data')
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn('dataset shapes3d', result.stdout)

  def test_bad_inputs_exit_nonzero_with_one_line_and_no_traceback(self):
    workdir = self.create_tempdir().full_path
    cases = {
        '--config.data.name=nope': "unknown dataset 'nope'",
        '--config.data.name=tfds:dsprites': 'tfds build dsprites',
        '--config.stage1.batch_size=0': 'must be a positive int',
        '--config.num_devices=99': 'asked for 99 devices',
        '--config.stage1.beta=-1': 'stage1.beta must be >= 0',
        '--config.stage1.method=vae': "unknown stage-1 method 'vae'",
        '--config.stage1.estimator=exact': "unknown stage1.estimator 'exact'",
        '--config.stage1.batch_size=6': 'does not split over 4 devices',
        '--config.stage1.steps=0': 'stage1.steps must be a positive int',
        '--config.checkpoint_every=-5': 'checkpoint_every must be a positive',
    }
    for override, message in cases.items():
      result = run_cli('--config', 'configs/dsprites_beta_tcvae.py:smoke',
                       '--workdir', workdir, override,
                       '--config.data.tfds_data_dir=' + workdir, devices=4)
      env_note = f'{override}: {result.stderr[-2000:]}'
      self.assertEqual(result.returncode, 2, env_note)
      self.assertIn('error: ', result.stderr, env_note)
      self.assertIn(message, result.stderr, env_note)
      self.assertNotIn('Traceback', result.stderr, env_note)
      # Rejected before anything was built or compiled.
      self.assertFalse(os.path.exists(os.path.join(workdir, 'checkpoints')),
                       env_note)


if __name__ == '__main__':
  absltest.main()

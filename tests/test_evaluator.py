"""The workdir evaluator: a smoke-trained stage 1 scored from Python and the
command line, eval.json written, and clear errors for untrained workdirs."""

import json
import os

from absl.testing import absltest

from configs import common
from msdr import sharding
from msdr.errors import UserInputError
from msdr.eval import evaluator
from msdr.train import stage1
from tests import conftest
from tests.test_main import run_cli

KEYS = tuple(f'disentanglement.{k}' for k in (
    'mig', 'sap', 'modularity', 'explicitness_train', 'explicitness_test',
    'irs', 'factor_vae_eval_accuracy', 'beta_vae_eval_accuracy',
    'dci_disentanglement', 'dci_completeness', 'dci_informativeness_train',
    'dci_informativeness_test')) + tuple(
        f'reconstruction.stage1.{k}' for k in ('mse', 'psnr', 'ssim', 'bce')
    ) + ('samples.stage1.frechet',)


class EvaluatorTest(absltest.TestCase):

  def test_scores_a_trained_workdir_from_python_and_the_cli(self):
    workdir = self.create_tempdir().full_path
    config = common.base_config('dsprites', 'beta_tcvae', 'smoke')
    config.stage1.steps = 2
    stage1.train_stage1(config, workdir, sharding.make_mesh(1))
    # config.json was written by the CLI in real runs; here by hand.
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json())
    scores = evaluator.evaluate(workdir)
    self.assertEqual(scores['step.stage1'], 2)
    for key in KEYS:
      self.assertIn(key, scores)
    self.assertNotIn('reconstruction.multistage.mse', scores)  # no stage 2
    self.assertBetween(scores['disentanglement.mig'], 0.0, 1.0)
    self.assertBetween(scores['reconstruction.stage1.ssim'], -1.0, 1.0)
    self.assertStartsWith(scores['samples.feature_network'], 'random_conv')
    with open(os.path.join(workdir, 'eval.json')) as f:
      self.assertEqual(json.load(f), scores)

    result = run_cli('--config', 'configs/dsprites_beta_tcvae.py:smoke',
                     '--workdir', workdir, '--mode=eval',
                     devices=conftest.NUM_DEVICES)  # reuses the compiles
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn('| disentanglement.mig |', result.stdout)

  def test_untrained_workdirs_are_clear_errors(self):
    workdir = self.create_tempdir().full_path
    with self.assertRaisesRegex(UserInputError, 'no config.json'):
      evaluator.evaluate(workdir)
    config = common.base_config('dsprites', 'beta_tcvae', 'smoke')
    with self.assertRaisesRegex(UserInputError, 'no stage-1 checkpoint'):
      evaluator.evaluate(workdir, config)


if __name__ == '__main__':
  absltest.main()

"""Defaults shared by every study config; each config file overrides a few.

Values follow disentanglement_lib's study (batch 64, Adam 1e-4, 300k steps,
10 latent dims) unless a config says otherwise. Each stage-1 method reads its
own hyperparameters from `config.stage1` (see `msdr.models.stage1`), with
these defaults:

  beta_vae      beta 4
  beta_tcvae    alpha 1, beta 6, gamma 1, estimator 'mss'
  factor_vae    gamma 10; discriminator Adam 1e-4, b1 0.5, b2 0.9
  dip_vae_i     lambda_od 10, lambda_d 100 (10 x lambda_od)
  dip_vae_ii    lambda_od 10, lambda_d 10
  annealed_vae  gamma 1000, c_max 25, iteration_threshold 100000

Modes (`--config FILE:MODE`): 'smoke' shrinks a run to seconds for tests and
CI; 'demo' is a few minutes on a CPU.
"""

import ml_collections
from ml_collections import config_dict


MODES = ('', 'smoke', 'demo')

METHOD_DEFAULTS = {
    'beta_vae': dict(beta=4.0),
    'beta_tcvae': dict(alpha=1.0, beta=6.0, gamma=1.0),
    'factor_vae': dict(gamma=10.0),
    'dip_vae_i': dict(lambda_od=10.0, lambda_d=100.0),
    'dip_vae_ii': dict(lambda_od=10.0, lambda_d=10.0),
    'annealed_vae': dict(gamma=1000.0, c_max=25.0,
                         iteration_threshold=100_000),
}


def base_config(dataset: str, method: str, arg: str | None = None,
                **stage1) -> ml_collections.ConfigDict:
  """The full config of one run.

  Args:
    dataset: a name accepted by `msdr.data.get_dataset`.
    method: the stage-1 method.
    arg: the text after ':' in `--config FILE:ARG`; 'smoke' shrinks everything
      for a seconds-long run, 'demo' to minutes on a CPU.
    **stage1: overrides of `config.stage1` fields (e.g. beta=6.0).
  """
  if (arg or '') not in MODES:
    raise ValueError(f'unknown config mode {arg!r}; valid: {MODES}.')
  smoke = arg == 'smoke'
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = dataset
  config.data.tfds_data_dir = config_dict.placeholder(str)  # tfds:* datasets
  config.data.tfds_split = 'train'

  config.stage1 = ml_collections.ConfigDict()
  config.stage1.method = method
  config.stage1.latent_dim = 10
  config.stage1.batch_size = 64
  config.stage1.learning_rate = 1e-4
  config.stage1.steps = 300_000
  config.stage1.reconstruction = 'bernoulli'  # or 'gaussian'
  # N for beta-TCVAE's estimators (None: the dataset's size).
  config.stage1.dataset_size = config_dict.placeholder(int)
  # Every method's hyperparameters exist (so overrides type-check); each
  # method reads its own.
  config.stage1.beta = 1.0
  config.stage1.alpha = 1.0
  config.stage1.gamma = 1.0
  config.stage1.estimator = 'mss'  # beta_tcvae: 'mss' or 'mws'
  config.stage1.lambda_od = 10.0
  config.stage1.lambda_d = 100.0
  config.stage1.c_max = 25.0
  config.stage1.iteration_threshold = 100_000
  config.stage1.disc_learning_rate = 1e-4
  config.stage1.disc_beta1 = 0.5
  config.stage1.disc_beta2 = 0.9
  config.stage1.update(METHOD_DEFAULTS.get(method, {}))
  config.stage1.update(stage1)

  # --mode=eval (msdr.eval.evaluator): held-out samples and metric sizes,
  # disentanglement_lib's defaults.
  config.eval = ml_collections.ConfigDict()
  config.eval.num_train = 10_000
  config.eval.num_test = 5_000
  config.eval.batch_size = 256
  config.eval.interventional_points = 10_000
  config.eval.interventional_eval = 5_000

  config.checkpoint_every = 10_000
  config.keep_checkpoints = 3
  config.log_every = 100
  # Devices to use (None: every local device).
  config.num_devices = config_dict.placeholder(int)

  if smoke:
    config.stage1.batch_size = 8
    config.stage1.steps = 20
    config.checkpoint_every = 10
    config.log_every = 5
    config.eval.update(num_train=200, num_test=100, batch_size=50,
                       interventional_points=50, interventional_eval=50)
  elif arg == 'demo':
    config.stage1.steps = 1_000
    config.checkpoint_every = 250
    config.log_every = 50
  return config

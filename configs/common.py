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

from msdr.models import stage2 as stage2_lib
from msdr import options as options_lib


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
                stage2: dict | None = None,
                **stage1) -> ml_collections.ConfigDict:
  """The full config of one run.

  Args:
    dataset: a name accepted by `msdr.data.get_dataset`.
    method: the stage-1 method.
    arg: the text after ':' in `--config FILE:ARG`; 'smoke' shrinks everything
      for a seconds-long run, 'demo' to minutes on a CPU.
    stage2: overrides of `config.stage2` fields; with a `model`, the run is
      the multi-stage method (stage 1, stage 2, then evaluation). Without,
      `config.stage2.model` is None and the run trains stage 1 only.
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
  # A finished run whose stage 1 this run's stage 2 builds on (its
  # config.json defines stage 1); None: stage 1 is trained in this workdir.
  config.stage1.init_from = config_dict.placeholder(str)
  config.stage1.update(stage1)

  config.stage2 = stage2_section(stage2 or {})

  # --mode=eval (msdr.eval.evaluator): held-out samples and metric sizes,
  # disentanglement_lib's defaults.
  config.eval = ml_collections.ConfigDict()
  config.eval.num_train = 10_000
  config.eval.num_test = 5_000
  config.eval.batch_size = 256
  config.eval.interventional_points = 10_000
  config.eval.interventional_eval = 5_000
  # Fréchet distance features: 'random_conv' (no download) or 'inception_v3'
  # with `inception_weights` (msdr.eval.features documents the .npz).
  config.eval.feature_network = 'random_conv'
  config.eval.inception_weights = config_dict.placeholder(str)
  # Evaluate at the end of --mode=train (multi-stage configs do).
  config.eval.after_training = bool(config.stage2.model)

  # Figures and report.html (msdr.viz.report), written at the end of
  # --mode=train and by --mode=report.
  config.report = ml_collections.ConfigDict(options_lib.REPORT_DEFAULTS)

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
    config.report.update(num_images=2, num_values=4, num_reconstructions=4,
                         num_samples=4, num_codes=200)
    config.stage2.update(batch_size=8, steps=20, width=8, z_dim=8,
                         learning_rate=1e-3, gan_disc_width=8,
                         flow_hidden=16, flow_steps_per_level=2,
                         gmm_components=3, gmm_factors=16)
  elif arg == 'demo':
    config.stage1.steps = 1_000
    config.stage2.update(steps=500, width=16)  # ~0.8 s/step at batch 64
    # FactorVAE / BetaVAE points each render and encode a batch of 64
    # (pairs): 2 x 64 x points images, the slow part of a CPU evaluation.
    config.eval.update(num_train=2_000, num_test=1_000,
                       interventional_points=200, interventional_eval=100)
    config.checkpoint_every = 250
    config.log_every = 50
  return config


def stage2_section(overrides: dict) -> ml_collections.ConfigDict:
  """config.stage2: every stage-2 model's fields (msdr.models.stage2), so
  command-line overrides type-check; the chosen model reads its own."""
  fields = stage2_lib.defaults()
  fields['model'] = config_dict.placeholder(str)
  # Side of stage 2's images: 64, or 128 for a high-resolution stage 2 on a
  # tfds dataset (stage 1 stays at 64x64).
  fields['image_size'] = 64
  section = ml_collections.ConfigDict(fields)
  section.update(overrides)
  return section


def multistage_config(dataset: str, model: str, arg: str | None = None,
                      method: str = 'beta_tcvae', stage1: dict | None = None,
                      **stage2) -> ml_collections.ConfigDict:
  """A multi-stage run: stage 1 `method`, then stage-2 `model`, then eval."""
  return base_config(dataset, method, arg, stage2=dict(stage2, model=model),
                     **(stage1 or {}))

"""Defaults shared by every study config; each config file overrides a few.

Values follow disentanglement_lib's study (batch 64, Adam 1e-4, 300k steps,
10 latent dims) unless a config says otherwise. `smoke=True` shrinks a config
to seconds for tests and CI.
"""

import ml_collections
from ml_collections import config_dict


MODES = ('', 'smoke')


def base_config(dataset: str, method: str, arg: str | None = None,
                **stage1) -> ml_collections.ConfigDict:
  """The full config of one run.

  Args:
    dataset: a name accepted by `msdr.data.get_dataset`.
    method: the stage-1 method.
    arg: the text after ':' in `--config FILE:ARG`; 'smoke' shrinks everything
      for a seconds-long run.
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
  config.stage1.beta = 1.0
  config.stage1.latent_dim = 10
  config.stage1.batch_size = 64
  config.stage1.learning_rate = 1e-4
  config.stage1.steps = 300_000
  config.stage1.update(stage1)

  config.checkpoint_every = 10_000
  config.log_every = 100
  # Devices to use (None: every local device).
  config.num_devices = config_dict.placeholder(int)

  if smoke:
    config.stage1.batch_size = 8
    config.stage1.steps = 20
    config.checkpoint_every = 10
    config.log_every = 5
  return config

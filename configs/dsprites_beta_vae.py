"""beta-VAE (beta = 4) on procedural dSprites.

  python -m msdr.main --config configs/dsprites_beta_vae.py --workdir /tmp/dsprites_beta_vae
  python -m msdr.main --config configs/dsprites_beta_vae.py:smoke --workdir /tmp/smoke

Hyperparameters are disentanglement_lib's (see configs/common.py).
"""

from configs import common


def get_config(arg=None):
  return common.base_config('dsprites', 'beta_vae', arg)

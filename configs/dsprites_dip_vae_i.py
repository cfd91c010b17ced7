"""DIP-VAE-I (lambda_od = 10, lambda_d = 100) on procedural dSprites.

  python -m msdr.main --config configs/dsprites_dip_vae_i.py --workdir /tmp/dsprites_dip_vae_i
  python -m msdr.main --config configs/dsprites_dip_vae_i.py:smoke --workdir /tmp/smoke

Hyperparameters are disentanglement_lib's (see configs/common.py).
"""

from configs import common


def get_config(arg=None):
  return common.base_config('dsprites', 'dip_vae_i', arg)

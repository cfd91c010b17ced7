"""DIP-VAE-II (lambda_od = lambda_d = 10) on procedural dSprites.

  python -m msdr.main --config configs/dsprites_dip_vae_ii.py --workdir /tmp/dsprites_dip_vae_ii
  python -m msdr.main --config configs/dsprites_dip_vae_ii.py:smoke --workdir /tmp/smoke

Hyperparameters are disentanglement_lib's (see configs/common.py).
"""

from configs import common


def get_config(arg=None):
  return common.base_config('dsprites', 'dip_vae_ii', arg)

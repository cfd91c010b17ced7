"""FactorVAE (gamma = 10, discriminator on permuted latents) on procedural dSprites.

  python -m msdr.main --config configs/dsprites_factor_vae.py --workdir /tmp/dsprites_factor_vae
  python -m msdr.main --config configs/dsprites_factor_vae.py:smoke --workdir /tmp/smoke

Hyperparameters are disentanglement_lib's (see configs/common.py).
"""

from configs import common


def get_config(arg=None):
  return common.base_config('dsprites', 'factor_vae', arg)

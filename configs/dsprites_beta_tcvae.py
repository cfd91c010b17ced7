"""beta-TCVAE (beta = 6) on procedural dSprites.

  python -m msdr.main --config configs/dsprites_beta_tcvae.py --workdir /tmp/dsprites
  python -m msdr.main --config configs/dsprites_beta_tcvae.py:smoke --workdir /tmp/smoke
"""

from configs import common


def get_config(arg=None):
  return common.base_config('dsprites', 'beta_tcvae', arg, beta=6.0)

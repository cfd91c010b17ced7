"""Multi-stage: beta-TCVAE stage 1, then MS-VAE (conditional VAE, z by spatial
AdaIN), on dSprites (procedural, 737,280 factor combinations).

  python -m msdr.main --config configs/dsprites_ms_vae.py --workdir /tmp/dsprites_ms_vae
  python -m msdr.main --config configs/dsprites_ms_vae.py:smoke --workdir /tmp/smoke
"""

from configs import common


def get_config(arg=None):
  return common.multistage_config('dsprites', 'ms_vae', arg,
                                  stage1=dict(beta=6.0))

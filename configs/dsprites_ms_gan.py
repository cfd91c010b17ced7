"""Multi-stage: beta-TCVAE stage 1, then MS-GAN (G(y, z), discriminator on
(image, y), encoder E(x - y)), on dSprites (procedural, 737,280 factor
combinations).

  python -m msdr.main --config configs/dsprites_ms_gan.py --workdir /tmp/dsprites_ms_gan
  python -m msdr.main --config configs/dsprites_ms_gan.py:smoke --workdir /tmp/smoke
"""

from configs import common


def get_config(arg=None):
  return common.multistage_config('dsprites', 'ms_gan', arg,
                                  stage1=dict(beta=6.0))

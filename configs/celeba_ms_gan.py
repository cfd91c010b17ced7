"""Multi-stage: beta-TCVAE stage 1, then MS-GAN (G(y, z), discriminator on
(image, y), encoder E(x - y)), on CelebA at 64x64 (tensorflow-datasets;
prepare it first, README).

  python -m msdr.main --config configs/celeba_ms_gan.py --workdir /tmp/celeba_ms_gan
  python -m msdr.main --config configs/celeba_ms_gan.py:smoke --workdir /tmp/smoke
"""

from configs import common


def get_config(arg=None):
  return common.multistage_config('tfds:celeb_a', 'ms_gan', arg,
                                  stage1=dict(beta=6.0, latent_dim=15), z_dim=85)

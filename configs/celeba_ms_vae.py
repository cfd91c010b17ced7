"""Multi-stage: beta-TCVAE stage 1, then MS-VAE (conditional VAE, z by spatial
AdaIN), on CelebA at 64x64 (tensorflow-datasets; prepare it first, README).

  python -m msdr.main --config configs/celeba_ms_vae.py --workdir /tmp/celeba_ms_vae
  python -m msdr.main --config configs/celeba_ms_vae.py:smoke --workdir /tmp/smoke
"""

from configs import common


def get_config(arg=None):
  return common.multistage_config('tfds:celeb_a', 'ms_vae', arg,
                                  stage1=dict(beta=6.0, latent_dim=15), z_dim=85)

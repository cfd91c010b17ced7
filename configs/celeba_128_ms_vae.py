"""Multi-stage on CelebA, high resolution: beta-TCVAE stage 1 at 64x64, then
MS-VAE producing 128x128 images (the authors' high-resolution model: y is the
64x64 stage-1 image, upsampled; z has 85 dims).

  python -m msdr.main --config configs/celeba_128_ms_vae.py --workdir /tmp/celeba128
  python -m msdr.main --config configs/celeba_128_ms_vae.py:smoke --workdir /tmp/smoke
"""

from configs import common


def get_config(arg=None):
  return common.multistage_config('tfds:celeb_a', 'ms_vae', arg,
                                  stage1=dict(beta=6.0, latent_dim=15),
                                  z_dim=85, image_size=128)

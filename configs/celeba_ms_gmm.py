"""Multi-stage: beta-TCVAE stage 1, then MS-GMM (mixture of factor analysers on
x - y), on CelebA at 64x64 (tensorflow-datasets; prepare it first, README).

  python -m msdr.main --config configs/celeba_ms_gmm.py --workdir /tmp/celeba_ms_gmm
  python -m msdr.main --config configs/celeba_ms_gmm.py:smoke --workdir /tmp/smoke
"""

from configs import common


def get_config(arg=None):
  return common.multistage_config('tfds:celeb_a', 'ms_gmm', arg,
                                  stage1=dict(beta=6.0, latent_dim=15), z_dim=85)

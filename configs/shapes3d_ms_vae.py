"""Multi-stage: beta-TCVAE stage 1, then MS-VAE (conditional VAE, z by spatial
AdaIN), on 3D shapes (procedural).

  python -m msdr.main --config configs/shapes3d_ms_vae.py --workdir /tmp/shapes3d_ms_vae
  python -m msdr.main --config configs/shapes3d_ms_vae.py:smoke --workdir /tmp/smoke
"""

from configs import common


def get_config(arg=None):
  return common.multistage_config('shapes3d', 'ms_vae', arg,
                                  stage1=dict(beta=6.0))

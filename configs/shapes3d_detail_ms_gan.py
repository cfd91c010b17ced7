"""Multi-stage: beta-TCVAE stage 1, then MS-GAN (G(y, z), discriminator on
(image, y), encoder E(x - y)), on 3D shapes with surface detail that no
factor names (procedural, the embedded default).

  python -m msdr.main --config configs/shapes3d_detail_ms_gan.py --workdir /tmp/shapes3d_detail_ms_gan
  python -m msdr.main --config configs/shapes3d_detail_ms_gan.py:smoke --workdir /tmp/smoke
"""

from configs import common


def get_config(arg=None):
  return common.multistage_config('shapes3d_detail', 'ms_gan', arg,
                                  stage1=dict(beta=6.0))

"""beta-TCVAE (beta = 6) on procedural 3D shapes.

  python -m msdr.main --config configs/shapes3d_beta_tcvae.py --workdir /tmp/shapes3d
  python -m msdr.main --config configs/shapes3d_beta_tcvae.py:smoke --workdir /tmp/smoke
"""

from configs import common


def get_config(arg=None):
  return common.base_config('shapes3d', 'beta_tcvae', arg, beta=6.0)

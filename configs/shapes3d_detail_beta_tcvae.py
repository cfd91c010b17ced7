"""beta-TCVAE (beta = 6) on shapes3d_detail, the embedded default of `make demo`: 3D
shapes with surface detail that no factor names.

  python -m msdr.main --config configs/shapes3d_detail_beta_tcvae.py --workdir /tmp/shapes3d_detail
  python -m msdr.main --config configs/shapes3d_detail_beta_tcvae.py:smoke --workdir /tmp/smoke
"""

from configs import common


def get_config(arg=None):
  return common.base_config('shapes3d_detail', 'beta_tcvae', arg, beta=6.0)

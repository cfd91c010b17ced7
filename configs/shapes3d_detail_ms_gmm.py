"""Multi-stage: beta-TCVAE stage 1, then MS-GMM (mixture of factor analysers on
x - y), on 3D shapes with surface detail that no factor names (procedural,
the embedded default).

  python -m msdr.main --config configs/shapes3d_detail_ms_gmm.py --workdir /tmp/shapes3d_detail_ms_gmm
  python -m msdr.main --config configs/shapes3d_detail_ms_gmm.py:smoke --workdir /tmp/smoke
"""

from configs import common


def get_config(arg=None):
  return common.multistage_config('shapes3d_detail', 'ms_gmm', arg,
                                  stage1=dict(beta=6.0))

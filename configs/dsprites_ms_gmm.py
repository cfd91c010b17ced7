"""Multi-stage: beta-TCVAE stage 1, then MS-GMM (mixture of factor analysers on
x - y), on dSprites (procedural, 737,280 factor combinations).

  python -m msdr.main --config configs/dsprites_ms_gmm.py --workdir /tmp/dsprites_ms_gmm
  python -m msdr.main --config configs/dsprites_ms_gmm.py:smoke --workdir /tmp/smoke
"""

from configs import common


def get_config(arg=None):
  return common.multistage_config('dsprites', 'ms_gmm', arg,
                                  stage1=dict(beta=6.0))

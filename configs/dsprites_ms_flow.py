"""Multi-stage: beta-TCVAE stage 1, then MS-Flow (conditional multi-scale
affine-coupling flow), on dSprites (procedural, 737,280 factor combinations).

  python -m msdr.main --config configs/dsprites_ms_flow.py --workdir /tmp/dsprites_ms_flow
  python -m msdr.main --config configs/dsprites_ms_flow.py:smoke --workdir /tmp/smoke
"""

from configs import common


def get_config(arg=None):
  return common.multistage_config('dsprites', 'ms_flow', arg,
                                  stage1=dict(beta=6.0))

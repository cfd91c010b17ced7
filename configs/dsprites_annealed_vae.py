"""AnnealedVAE (gamma = 1000, capacity to 25 nats over 100k steps) on procedural dSprites.

  python -m msdr.main --config configs/dsprites_annealed_vae.py --workdir /tmp/dsprites_annealed_vae
  python -m msdr.main --config configs/dsprites_annealed_vae.py:smoke --workdir /tmp/smoke

Hyperparameters are disentanglement_lib's (see configs/common.py).
"""

from configs import common


def get_config(arg=None):
  return common.base_config('dsprites', 'annealed_vae', arg)

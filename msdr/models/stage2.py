"""Stage-2 models p(x | y, z): the contract every one follows, and the registry.

Stage 1 is frozen. Its decoder gives `y = sigmoid(g1(c))` for `c ~ q(c | x)`
(an image in [0, 1], the same shape as `x`); stage 2 adds the correlated
detail through latents `z` independent of `c`. Each model lives in its own
module and is chosen by `config.stage2.model`:

  ms_vae   msdr.models.ms_vae    conditional VAE, z injected by spatial AdaIN
  ms_gan   msdr.models.ms_gan    G(y, z) + discriminator on (image, y) + E(x-y)
  ms_flow  msdr.models.ms_flow   conditional multi-scale affine-coupling flow
  ms_gmm   msdr.models.ms_gmm    mixture of factor analysers on x - y

The contract (x and y: float32 [B, H, W, C] in [0, 1]; params a pytree):

  name                                   the registry name
  init(key, image_shape) -> params       image_shape = (H, W, C)
  optimizer() -> optax transformation    its .init(params) is the opt_state
  loss(params, x, y, key, step) -> (objective, terms)
                                         a scalar to minimise and a dict of
                                         scalar terms (or None with `update`)
  update                                 None, or (params, opt_state, x, y,
                                         key, step) -> (params, opt_state,
                                         objective, terms) for models that do
                                         not train by one gradient (GAN, EM)
  infer(params, x, y, key=None) -> z     the latent of x given y (key None:
                                         the deterministic/mean value)
  generate(params, y, z) -> image        in [0, 1]
  reconstruct(params, x, y, key=None)    generate(y, infer(x, y, key))
  sample_latent(key, n, temperature=1.0) z ~ the prior (scaled by temperature)
  sample(params, y, key, temperature=1.0) -> image

Models with an exact likelihood (ms_flow, ms_gmm) also give
`log_likelihood(params, x, y) -> [B]` in nats.

Each module also defines `DEFAULTS` (its config fields and their default
values, names prefixed by the model where they are not shared) and
`from_config(cfg, image_shape) -> model`, which raises `UserInputError` on a
bad value before anything is compiled.
"""

from __future__ import annotations

import importlib
import math

from msdr.errors import UserInputError

MODELS = {
    'ms_vae': 'msdr.models.ms_vae',
    'ms_gan': 'msdr.models.ms_gan',
    'ms_flow': 'msdr.models.ms_flow',
    'ms_gmm': 'msdr.models.ms_gmm',
}

# Fields every stage-2 model reads (config.stage2.*).
SHARED_DEFAULTS = dict(
    model='ms_vae',
    steps=100_000,
    batch_size=64,
    learning_rate=1e-4,
    z_dim=64,
    y_from='sample',  # 'sample': fresh c ~ q(c|x) each step; 'mean': c = E[c|x]
)

Y_FROM = ('sample', 'mean')


def positive_int(cfg, name: str, upper: int | None = None) -> int:
  """cfg.<name>, checked to be an int in [1, upper] (UserInputError)."""
  value = getattr(cfg, name)
  if (isinstance(value, bool) or not isinstance(value, int) or value <= 0
      or (upper is not None and value > upper)):
    bound = f' <= {upper}' if upper is not None else ''
    raise UserInputError(f'stage2.{name} must be a positive int{bound}; got '
                         f'{value!r}')
  return value


def number(cfg, name: str, positive: bool = True) -> float:
  """cfg.<name> as a float, checked finite and > 0 (>= 0 unless
  `positive`)."""
  value = getattr(cfg, name)
  ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
        and math.isfinite(value) and (value > 0 if positive else value >= 0))
  if not ok:
    raise UserInputError(f"stage2.{name} must be a finite number "
                         f"{'> 0' if positive else '>= 0'}; got {value!r}")
  return float(value)


def module(name: str):
  """The module implementing stage-2 model `name`."""
  if name not in MODELS:
    raise UserInputError(f'unknown stage2.model {name!r}; valid: '
                         f"{', '.join(sorted(MODELS))}")
  return importlib.import_module(MODELS[name])


def defaults() -> dict:
  """Every config.stage2 field with its default (shared, then per model)."""
  out = dict(SHARED_DEFAULTS)
  for name in MODELS:
    for key, value in module(name).DEFAULTS.items():
      if key in out and out[key] != value:
        raise AssertionError(f'{name} redefines stage2.{key}')
      out[key] = value
  return out


def from_config(cfg, image_shape: tuple[int, int, int]):
  """The stage-2 model named by `cfg.model`, validated."""
  if cfg.y_from not in Y_FROM:
    raise UserInputError(
        f'stage2.y_from must be one of {Y_FROM}; got {cfg.y_from!r}')
  positive_int(cfg, 'z_dim')
  number(cfg, 'learning_rate')
  return module(cfg.model).from_config(cfg, tuple(image_shape))

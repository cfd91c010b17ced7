"""MS-Flow: a conditional multi-scale affine-coupling flow p(x | y).

The image x (the stage-1 reconstruction y beside it, both [B, H, W, C] in
[0, 1]) is mapped by one bijection to z ~ N(0, I), so the likelihood is exact
(RealNVP, Dinh et al. 2017; Glow, Kingma & Dhariwal 2018):

  x --pre-transform--> v --level 1--> ... --level L--> z

* Pre-transform (not the identity, and not trained): x in [0, 1] is data of
  n = 2^flow_num_bits levels, bin k centred on k / (n - 1). The affine map
  u = (x (n - 1) + 1/2) / n sends the bins [k - 1/2, k + 1/2] / (n - 1) onto
  [k, k + 1] / n inside [0, 1], and v = logit(alpha + (1 - 2 alpha) u)
  (alpha = flow_logit_alpha) unbounds it. Both log-dets are counted.
* Level l: squeeze (2x2 space-to-depth, C -> 4C), then flow_steps_per_level
  steps of [actnorm -> invertible 1x1 conv -> affine coupling], then half of
  the channels are factored out into z (the last level keeps all of them).
  Actnorm is a per-channel (h + b) exp(g), zero-initialised rather than
  data-initialised (init needs no batch and starts exactly at the identity);
  the 1x1 conv is Glow's LU form W = L (U + diag(exp(d))) with L unit lower-
  and U strictly upper-triangular (P = I). A coupling transforms one channel
  half t (alternating halves from step to step) given the other half a and
  y: t' = t exp(s) + m, with (m, r) = conditioner(concat(a, y_l)) and
  s = bound tanh(r / bound), a soft clamp of the log-scale to (-bound, bound)
  (bound = flow_scale_bound).
* Every conditioner sees y_l = 2 y - 1 squeezed l times, so at the level's
  resolution with no information lost.
* Identity start: b = g = 0, L = U = d = 0, and the last conv of each
  conditioner is zero-initialised (m = 0, scale exp(0) = 1), so at init every
  step is the identity and z is the pre-transformed x, only reordered by the
  squeezes and factor-outs.

z is one flat vector per example, [B, D] with D = H W C: the parts factored
out at levels 1, ..., L - 1 (each its [h, w, c] block flattened row-major),
then the last level's output. The base density is N(0, I) on all of it;
`sample_latent` scales it by a temperature. The shared `z_dim` is ignored.

Training: x is dequantised, x~ = round(x (n - 1)) / (n - 1) + (e - 1/2) /
(n - 1), e ~ U[0, 1)^D from the loss's key, so -log p(x~) + D log(n - 1) bounds
the negative log-probability of the discrete image; the objective is that
bound in bits per dimension, averaged over the batch.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from msdr.errors import UserInputError
from msdr.models import stage2
from msdr.models import flow_layers

Params = Any

DEFAULTS = dict(
    flow_levels=3,            # squeeze + steps + factor-out, H, W % 2^L == 0
    flow_steps_per_level=4,   # actnorm / 1x1 conv / coupling per level
    flow_hidden=64,           # channels of the conditioners' hidden convs
    flow_num_bits=8,          # x is data of 2^bits levels (dequantisation)
    flow_logit_alpha=0.05,    # logit(alpha + (1 - 2 alpha) u)
    flow_scale_bound=2.0,     # |log-scale| of a coupling < bound (soft clamp)
    flow_actnorm=True,        # per-channel affine before each 1x1 conv
    flow_invconv=True,        # Glow's invertible 1x1 conv (LU); else none
    # Clip gradients by global norm (0: never). The bits/dim gradient's norm
    # was 1-25 on 8x8 to 128x128 images (at init and at perturbed params):
    # this only cuts spikes.
    flow_max_grad_norm=100.0,
)

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


# -- the model -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MSFlow:
  """Conditional multi-scale flow over x given y (see the module docstring).

  Attributes:
    image_shape: (H, W, C); H and W divisible by 2^levels.
    levels, steps, hidden, num_bits, logit_alpha, scale_bound, use_actnorm,
    use_invconv, max_grad_norm, learning_rate: the `flow_*` config fields.
  """
  image_shape: tuple[int, int, int]
  levels: int = 3
  steps: int = 4
  hidden: int = 64
  num_bits: int = 8
  logit_alpha: float = 0.05
  scale_bound: float = 2.0
  use_actnorm: bool = True
  use_invconv: bool = True
  max_grad_norm: float = 100.0
  learning_rate: float = 1e-4
  name: str = 'ms_flow'
  update = None  # trains by the gradient of `loss`

  @property
  def dim(self) -> int:
    """D = H W C, the size of x and of z."""
    return math.prod(self.image_shape)

  def _net(self, channels: int) -> flow_layers.Conditioner:
    return flow_layers.Conditioner(self.hidden, channels // 2)

  def init(self, key: jax.Array, image_shape: tuple[int, ...]) -> Params:
    """Parameters making every flow step the identity (see module doc)."""
    if tuple(image_shape) != tuple(self.image_shape):
      raise UserInputError(f'ms_flow was built for images of shape '
                           f'{self.image_shape}; got {tuple(image_shape)}')
    params = {}
    y_channels = self.image_shape[-1]
    for level, (h, w, c) in enumerate(flow_layers.level_shapes(self.image_shape,
                                                   self.levels)):
      y_channels *= 4
      for step in range(self.steps):
        key, k_net = jax.random.split(key)
        a = jnp.zeros((1, h, w, c // 2), jnp.float32)
        y = jnp.zeros((1, h, w, y_channels), jnp.float32)
        p = {'coupling': self._net(c).init(k_net, a, y)['params']}
        if self.use_actnorm:
          p['actnorm'] = {'bias': jnp.zeros(c), 'log_scale': jnp.zeros(c)}
        if self.use_invconv:
          p['invconv'] = {'lu': jnp.zeros((c, c)), 'log_diag': jnp.zeros(c)}
        params.setdefault(f'level_{level}', {})[f'step_{step}'] = p
    return params

  def _step(self, params, level, step, h, y, reverse):
    """Flow step `step` of `level` (or its inverse) and its log-det."""
    p = params[f'level_{level}'][f'step_{step}']
    layers = []
    if self.use_actnorm:
      layers.append(functools.partial(flow_layers.actnorm, p['actnorm']))
    if self.use_invconv:
      layers.append(functools.partial(flow_layers.invconv, p['invconv']))
    layers.append(functools.partial(
        flow_layers.coupling, self._net(h.shape[-1]), p['coupling'], y=y,
        parity=step % 2, bound=self.scale_bound))
    log_det = 0.0
    for layer in reversed(layers) if reverse else layers:
      h, ld = layer(h, reverse=reverse)
      log_det = log_det + ld
    return h, log_det

  def _y_levels(self, y: jax.Array) -> list[jax.Array]:
    y = 2.0 * y - 1.0
    out = []
    for _ in range(self.levels):
      y = flow_layers.squeeze(y)
      out.append(y)
    return out

  def forward_and_log_det(self, params: Params, x: jax.Array,
                          y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x -> z and log|det dz/dx| (pre-transform included).

    Args:
      params: from `init`.
      x: [B, H, W, C], inside the dequantisation range
        (-1/2, n - 1/2) / (n - 1) (any image in [0, 1] is).
      y: [B, H, W, C] in [0, 1].

    Returns:
      z [B, D] (layout in the module docstring) and the log-det [B].
    """
    h, log_det = flow_layers.logit_forward(x, self.num_bits, self.logit_alpha)
    zs = []
    for level, y_l in enumerate(self._y_levels(y)):
      h = flow_layers.squeeze(h)
      for step in range(self.steps):
        h, ld = self._step(params, level, step, h, y_l, reverse=False)
        log_det = log_det + ld
      if level < self.levels - 1:
        half = h.shape[-1] // 2
        zs.append(h[..., half:].reshape(h.shape[0], -1))
        h = h[..., :half]
    zs.append(h.reshape(h.shape[0], -1))
    return jnp.concatenate(zs, axis=-1), log_det

  def inverse_and_log_det(self, params: Params, z: jax.Array,
                          y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """z [B, D] -> x [B, H, W, C] and log|det dx/dz| (= -forward's)."""
    shapes = flow_layers.level_shapes(self.image_shape, self.levels)
    sizes = [h * w * c // 2 for h, w, c in shapes[:-1]]
    pieces = jnp.split(z, list(itertools.accumulate(sizes)), axis=-1)
    b = z.shape[0]
    y_levels = self._y_levels(y)
    log_det = jnp.zeros((b,), z.dtype)
    h = None
    for level in reversed(range(self.levels)):
      hl, wl, cl = shapes[level]
      if level == self.levels - 1:
        h = pieces[-1].reshape(b, hl, wl, cl)
      else:
        h = jnp.concatenate(
            [h, pieces[level].reshape(b, hl, wl, cl // 2)], axis=-1)
      for step in reversed(range(self.steps)):
        h, ld = self._step(params, level, step, h, y_levels[level],
                           reverse=True)
        log_det = log_det + ld
      h = flow_layers.unsqueeze(h)
    x, ld = flow_layers.logit_inverse(h, self.num_bits, self.logit_alpha)
    return x, log_det + ld

  def log_likelihood(self, params: Params, x: jax.Array,
                     y: jax.Array) -> jax.Array:
    """log p(x | y) [B] in nats, of the continuous density of x itself."""
    z, log_det = self.forward_and_log_det(params, x, y)
    log_prior = -jnp.sum(0.5 * jnp.square(z) + _HALF_LOG_2PI, axis=-1)
    return log_prior + log_det

  def loss(self, params: Params, x: jax.Array, y: jax.Array, key: jax.Array,
           step: jax.Array) -> tuple[jax.Array, dict]:
    """Mean dequantised negative log-likelihood in bits per dimension.

    Args:
      params: from `init`.
      x, y: [B, H, W, C] in [0, 1].
      key: the dequantisation noise (its only use).
      step: unused.

    Returns:
      (objective, terms): objective = terms['bits_per_dim']; 'nll' is the
      same bound in nats per image, 'log_det' and 'log_prior' its two parts
      (the density of x~), all averaged over the batch.
    """
    del step
    x_deq = flow_layers.dequantize(key, x, self.num_bits)
    z, log_det = self.forward_and_log_det(params, x_deq, y)
    log_prior = -jnp.sum(0.5 * jnp.square(z) + _HALF_LOG_2PI, axis=-1)
    nll = jnp.mean(-(log_prior + log_det)) + self.dim * math.log(
        2.0 ** self.num_bits - 1)
    bpd = nll / (self.dim * math.log(2.0))
    return bpd, {'bits_per_dim': bpd, 'nll': nll,
                 'log_det': jnp.mean(log_det),
                 'log_prior': jnp.mean(log_prior)}

  def optimizer(self) -> optax.GradientTransformation:
    """Adam(learning_rate), after clipping by global norm if set."""
    adam = optax.adam(self.learning_rate)
    if self.max_grad_norm > 0:
      return optax.chain(optax.clip_by_global_norm(self.max_grad_norm), adam)
    return adam

  def infer(self, params: Params, x: jax.Array, y: jax.Array,
            key: jax.Array | None = None) -> jax.Array:
    """z [B, D] of x: deterministic (the flow is a bijection; key unused)."""
    del key
    return self.forward_and_log_det(params, x, y)[0]

  def generate(self, params: Params, y: jax.Array, z: jax.Array) -> jax.Array:
    """The inverse of z, clipped to [0, 1] (it can reach half a bin out)."""
    return jnp.clip(self.inverse_and_log_det(params, z, y)[0], 0.0, 1.0)

  def reconstruct(self, params: Params, x: jax.Array, y: jax.Array,
                  key: jax.Array | None = None) -> jax.Array:
    """generate(y, infer(x, y)): x itself up to float error (a bijection)."""
    return self.generate(params, y, self.infer(params, x, y, key))

  def sample_latent(self, key: jax.Array, n: int,
                    temperature: float = 1.0) -> jax.Array:
    """z ~ N(0, temperature^2 I), [n, D]."""
    return temperature * jax.random.normal(key, (n, self.dim))

  def sample(self, params: Params, y: jax.Array, key: jax.Array,
             temperature: float = 1.0) -> jax.Array:
    """One image per y at the given temperature."""
    return self.generate(params, y,
                         self.sample_latent(key, y.shape[0], temperature))


# -- config --------------------------------------------------------------------


def from_config(cfg, image_shape: tuple[int, int, int]) -> MSFlow:
  """The flow of `config.stage2` for images of `image_shape` (H, W, C).

  Raises:
    UserInputError: a non-positive size, num_bits outside 1..16, alpha
      outside (0, 1/2), a non-positive scale bound, a negative clip norm, a
      non-bool switch, or H, W not divisible by 2^flow_levels.
  """
  levels = stage2.positive_int(cfg, 'flow_levels')
  steps = stage2.positive_int(cfg, 'flow_steps_per_level')
  hidden = stage2.positive_int(cfg, 'flow_hidden')
  num_bits = stage2.positive_int(cfg, 'flow_num_bits', upper=16)
  if not 0 < cfg.flow_logit_alpha < 0.5:
    raise UserInputError(f'stage2.flow_logit_alpha must be in (0, 0.5); got '
                         f'{cfg.flow_logit_alpha!r}')
  if not cfg.flow_scale_bound > 0:
    raise UserInputError(f'stage2.flow_scale_bound must be > 0; got '
                         f'{cfg.flow_scale_bound!r}')
  if not cfg.flow_max_grad_norm >= 0:
    raise UserInputError(f'stage2.flow_max_grad_norm must be >= 0 (0: no '
                         f'clipping); got {cfg.flow_max_grad_norm!r}')
  for name in ('flow_actnorm', 'flow_invconv'):
    if not isinstance(cfg[name], bool):
      raise UserInputError(f'stage2.{name} must be a bool; got '
                           f'{cfg[name]!r}')
  if not cfg.learning_rate > 0:
    raise UserInputError(f'stage2.learning_rate must be > 0; got '
                         f'{cfg.learning_rate!r}')
  if len(image_shape) != 3 or min(image_shape) <= 0:
    raise UserInputError(f'ms_flow needs an image shape (H, W, C); got '
                         f'{tuple(image_shape)}')
  h, w, _ = image_shape
  if h % 2 ** levels or w % 2 ** levels:
    raise UserInputError(
        f'ms_flow with flow_levels={levels} needs H and W divisible by '
        f'2^{levels} = {2 ** levels}; got image shape {tuple(image_shape)}')
  return MSFlow(
      image_shape=tuple(int(s) for s in image_shape), levels=levels,
      steps=steps, hidden=hidden, num_bits=num_bits,
      logit_alpha=float(cfg.flow_logit_alpha),
      scale_bound=float(cfg.flow_scale_bound),
      use_actnorm=cfg.flow_actnorm, use_invconv=cfg.flow_invconv,
      max_grad_norm=float(cfg.flow_max_grad_norm),
      learning_rate=float(cfg.learning_rate))

"""MS-GMM: a mixture of factor analysers over the residual r = x - y.

The stage-2 density, for D = H * W * C flattened residual dimensions,

  p(x | y) = p(r),  r = x - y,
  p(r)     = sum_k pi_k N(r; mu_k, W_k W_k^T + diag(psi_k)),

with K components (`gmm_components`), q factors each (`gmm_factors`) and a
diagonal noise variance psi_k of its own per component (Ghahramani & Hinton
1996 tie psi across components; one per component, as in Richardson & Weiss
2018's MFA of images, costs nothing more). It is a density of continuous x over
R^D (no dequantisation, no account of the [0, 1] box); `log_likelihood` gives
it exactly, in nats per image.

Nothing D x D is ever formed. With C_k = W_k W_k^T + Psi_k, e = r - mu_k,
M_k = I_q + W_k^T Psi_k^-1 W_k (q x q) and m = M_k^-1 W_k^T Psi_k^-1 e,
  log |C_k|    = log |M_k| + sum_d log psi_kd       (determinant lemma)
  e^T C_k^-1 e = |Psi_k^-1/2 (e - W_k m)|^2 + |m|^2  (Woodbury)
(the quadratic form is the minimum over f of the joint one, reached at the
posterior mean m; both terms are >= 0, so float32 loses nothing to the
cancellation of the usual |Psi^-1/2 e|^2 - b^T M^-1 b). The posterior of
the factors given component k is N(m, M_k^-1). Memory is O(B K D) for a
batch (the residual against every component).

Latent. z = (u, f), a flat [B, 1 + q] array: u = z[:, 0] in [0, 1) picks the
component by the inverse CDF of pi (k is the interval [cdf_{k-1}, cdf_k) that
holds u), f = z[:, 1:] are that component's factor coordinates. So the prior
z ~ U(0, 1) x N(0, I_q) needs no parameters (the contract's `sample_latent`
has none) and still draws k ~ pi. `infer` gives the MAP component (u at the
middle of its interval) and its posterior-mean factors, or with a key an
exact posterior sample (k from the responsibilities, u uniform in k's
interval, f ~ N(m, M_k^-1)). A component of weight below float32's spacing
(~1e-7) has an empty interval and cannot be addressed. The shared
`stage2.z_dim` is not used.

`generate(y, z) = clip(y + mu_k + W_k f, 0, 1)`, the mean of p(x | y, z)
without the psi noise (as MS-VAE shows the decoder mean); `sample` adds
temperature * sqrt(psi_k) noise only with `noise=True`. The temperature
scales f, never u.

Training is EM. `em_step` is classic full-batch EM. `update` is stepwise
(online) EM (Cappe & Moulines 2009; Liang & Klein 2009): the expected
complete-data sufficient statistics of the batch (batch averages of
h_k, h_k r, h_k r^2, h_k E[f], h_k E[f f^T], h_k r E[f]^T, h_k the
responsibility) are blended into running statistics kept as the opt_state,
  S <- (1 - rho_t) S + rho_t S_batch,  rho_t = (t + 1)^-gmm_step_power,
and the closed-form M-step maps S to the parameters (psi floored at
`gmm_min_variance`). rho_0 = 1, so the first step is plain EM on its batch;
with the whole data set as the batch, every step is `em_step`. A power in
(0.5, 1] makes the rho_t a Robbins-Monro sequence; 1 averages all batches'
statistics equally; 0 makes every step batch EM on its own minibatch.
`optimizer().init(params)` gives the statistics that params would expect
(a fixed point of the M-step), so the opt_state is meaningful from the
start. A component whose total responsibility underflows keeps its mean,
factors and variance (its weight goes to ~0) instead of dividing by zero.

Initialisation. `init` is random (uniform pi, small mu_k and W_k, psi =
`gmm_init_variance`); from it the first E-step in D ~ 1e4 dimensions tends
to hand almost every image to one component, which then keeps them. So by
default (`gmm_data_init`) step 0 of `update` restarts from its own batch,
`init_from_residuals`: mu_k = K distinct residuals of the batch, psi = their
per-dimension variance, small random W_k.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from msdr.errors import UserInputError
from msdr.models import mfa
from msdr.models import small_linalg
from msdr.models import stage2

Params = Any
Stats = dict

DEFAULTS = dict(
    # K and q: many factors per component, not many components, carry the
    # reconstruction. Held-out MSE vs stage 1's after 300 steps of batch 64
    # (README, "Multi-stage quality"): dsprites 0.88x at (K, q) = (10, 16),
    # 0.63x at (10, 64), 0.49x at (10, 128), 0.37x at (4, 256), 0.30x at
    # (2, 512); shapes3d_detail 0.43x at (10, 16), 0.32x at (4, 256), 0.27x
    # at (2, 512).
    gmm_components=2,       # K, mixture components
    gmm_factors=512,        # q, factors per component (z has 1 + q dims)
    gmm_step_power=0.6,     # kappa of the stepwise-EM step (t + 1)^-kappa
    # Floor of psi (the per-pixel noise variance).
    gmm_min_variance=mfa.MIN_VARIANCE,
    gmm_init_variance=1e-2,  # psi at init; W_k W_k^T starts at about as much
    gmm_data_init=True,     # step 0 restarts from its batch's residuals
)

# -- the stage-2 model -------------------------------------------------------


def _no_gradient_update(updates, state, params=None):
  del updates, state, params
  raise NotImplementedError('ms_gmm trains by EM: use MSGMM.update')


@dataclasses.dataclass(frozen=True)
class MSGMM:
  """Mixture of factor analysers p(x | y) = MFA(x - y), trained by EM."""
  components: int = DEFAULTS['gmm_components']
  factors: int = DEFAULTS['gmm_factors']
  step_power: float = DEFAULTS['gmm_step_power']
  min_variance: float = DEFAULTS['gmm_min_variance']
  init_variance: float = DEFAULTS['gmm_init_variance']
  data_init: bool = DEFAULTS['gmm_data_init']
  name: str = 'ms_gmm'

  @property
  def z_dim(self) -> int:
    return 1 + self.factors

  def init(self, key: jax.Array, image_shape: tuple[int, ...]) -> Params:
    """Uniform pi, psi = init_variance, small random mu_k and W_k (the
    diagonal of W_k W_k^T about init_variance), float32."""
    d = math.prod(image_shape)
    k_mean, k_factors = jax.random.split(key)
    k, q, v = self.components, self.factors, self.init_variance
    return {
        'weights': jnp.full((k,), 1.0 / k, jnp.float32),
        'mean': 0.1 * math.sqrt(v) * jax.random.normal(k_mean, (k, d)),
        'factors': math.sqrt(v / q) * jax.random.normal(k_factors, (k, d, q)),
        'variance': jnp.full((k, d), v, jnp.float32),
    }

  def init_from_residuals(self, key: jax.Array, r: jax.Array) -> Params:
    """A data-driven start: mu_k = K distinct residuals of r [N, ...] (drawn
    with repeats if N < K: the random W_k then tell the copies apart), psi =
    their per-dimension variance (floored), small random W_k."""
    r = mfa.flatten(r)
    k_pick, k_factors = jax.random.split(key)
    pick = jax.random.choice(k_pick, r.shape[0], (self.components,),
                             replace=r.shape[0] < self.components)
    variance = jnp.maximum(jnp.var(r, 0), self.min_variance)
    noise = jax.random.normal(k_factors, (self.components, r.shape[1],
                                          self.factors), r.dtype)
    return {
        'weights': jnp.full((self.components,), 1.0 / self.components,
                            r.dtype),
        'mean': r[pick],
        'factors': 0.1 * noise * jnp.sqrt(variance / self.factors)[:, None],
        'variance': jnp.broadcast_to(variance, (self.components,
                                                r.shape[1])),
    }

  def optimizer(self) -> optax.GradientTransformation:
    """Only its `init`: the running EM statistics (`expected_statistics`)."""
    return optax.GradientTransformation(mfa.expected_statistics,
                                        _no_gradient_update)

  def em_step(self, params: Params, r: jax.Array) -> Params:
    """Full-batch EM on residuals r [N, ...] (see the module `em_step`)."""
    return mfa.em_step(params, r, self.min_variance)

  def update(self, params: Params, opt_state: Stats, x: jax.Array,
             y: jax.Array, key: jax.Array, step: jax.Array):
    """One stepwise-EM step on the batch.

    With `data_init`, step 0 first replaces `params` by
    `init_from_residuals(key, x - y)`.

    Returns:
      (params, running statistics, objective, terms): the objective is the
      batch's mean negative log-likelihood in nats per image under the
      params before the step; terms add 'bits_per_dim', 'step_size' and
      'min_weight' (a component near 0 is dying).
    """
    r = mfa.flatten(x - y)
    if self.data_init:
      params = jax.lax.cond(step == 0,
                            lambda: self.init_from_residuals(key, r),
                            lambda: params)
    stats, log_lik = mfa.statistics(params, r)
    rho = mfa.step_size(step, self.step_power, stats['count'].dtype)
    opt_state = jax.tree.map(lambda s, new: (1 - rho) * s + rho * new,
                             opt_state, stats)
    new_params = mfa.m_step(opt_state, params, self.min_variance)
    objective, terms = self._terms(log_lik, x)
    return new_params, opt_state, objective, dict(
        terms, step_size=rho, min_weight=jnp.min(new_params['weights']))

  def _terms(self, log_lik, x):
    nll = -jnp.mean(log_lik)
    dims = math.prod(x.shape[1:])
    return nll, {'nll': nll, 'bits_per_dim': nll / (dims * math.log(2))}

  def loss(self, params: Params, x: jax.Array, y: jax.Array, key: jax.Array,
           step: jax.Array):
    """(mean -log p(x | y) in nats per image, {'nll', 'bits_per_dim'}).

    For evaluation and logging only: the model trains by `update`.
    """
    del key, step
    return self._terms(self.log_likelihood(params, x, y), x)

  def log_likelihood(self, params: Params, x: jax.Array,
                     y: jax.Array) -> jax.Array:
    """log p(x | y) in nats, one per image: [B]."""
    return mfa.posterior(params, mfa.flatten(x - y))['log_likelihood']

  def infer(self, params: Params, x: jax.Array, y: jax.Array,
            key: jax.Array | None = None) -> jax.Array:
    """z = (u, f) [B, 1 + q] of x given y (see the module docstring).

    key None: the MAP component (u at the middle of its interval) and its
    posterior-mean factors; a key: an exact posterior sample of (u, f).
    """
    post = mfa.posterior(params, mfa.flatten(x - y))
    lower, upper = mfa.interval(params['weights'])
    batch = jnp.arange(x.shape[0])
    if key is None:
      k = jnp.argmax(post['log_joint'], -1)
      u = 0.5 * (lower[k] + upper[k])
      return jnp.concatenate([u[:, None], post['factor_mean'][batch, k]], -1)
    k_comp, k_u, k_f = jax.random.split(key, 3)
    k = jax.random.categorical(k_comp, post['log_joint'], -1)
    u = lower[k] + (upper[k] - lower[k]) * jax.random.uniform(
        k_u, k.shape, lower.dtype)
    # f = m + L^-T eps has covariance (L L^T)^-1 = M_k^-1.
    eps = jax.random.normal(k_f, (x.shape[0], self.factors, 1), u.dtype)
    noise = small_linalg.solve_upper(
        jnp.swapaxes(post['chol'][k], -1, -2), eps)[..., 0]
    return jnp.concatenate([u[:, None], post['factor_mean'][batch, k] + noise],
                           -1)

  def generate(self, params: Params, y: jax.Array, z: jax.Array) -> jax.Array:
    """clip(y + mu_k + W_k f, 0, 1) for z = (u, f) [B, 1 + q]."""
    return jnp.clip(y + self._mean(params, z).reshape(y.shape), 0.0, 1.0)

  def _mean(self, params: Params, z: jax.Array) -> jax.Array:
    """mu_k + W_k f [B, D], as one [B, K q] x [K q, D] product (no
    per-example gather of W_k)."""
    one_hot = self._one_hot(params, z)
    weighted = one_hot[:, :, None] * z[:, None, 1:]             # [B, K, q]
    return (one_hot @ params['mean']
            + jnp.einsum('bkq,kdq->bd', weighted, params['factors']))

  def _one_hot(self, params: Params, z: jax.Array) -> jax.Array:
    k = mfa.component_of(params['weights'], z[:, 0])
    return jax.nn.one_hot(k, self.components, dtype=params['mean'].dtype)

  def reconstruct(self, params: Params, x: jax.Array, y: jax.Array,
                  key: jax.Array | None = None) -> jax.Array:
    return self.generate(params, y, self.infer(params, x, y, key))

  def sample_latent(self, key: jax.Array, n: int,
                    temperature: float = 1.0) -> jax.Array:
    """z = (u, f) [n, 1 + q]: u ~ U(0, 1) (so k ~ pi), f ~ N(0, t^2 I)."""
    k_u, k_f = jax.random.split(key)
    return jnp.concatenate([
        jax.random.uniform(k_u, (n, 1)),
        temperature * jax.random.normal(k_f, (n, self.factors))], -1)

  def sample(self, params: Params, y: jax.Array, key: jax.Array,
             temperature: float = 1.0, noise: bool = False) -> jax.Array:
    """x ~ p(x | y) at a temperature, clipped to [0, 1].

    Without `noise` (the default): generate(y, z), z ~ the prior, the
    noise-free mean of the chosen factor analyser; with it, plus
    temperature * sqrt(psi_k) white noise per pixel.
    """
    k_z, k_noise = jax.random.split(key)
    z = self.sample_latent(k_z, y.shape[0], temperature)
    if not noise:
      return self.generate(params, y, z)
    std = jnp.sqrt(self._one_hot(params, z) @ params['variance'])
    eps = jax.random.normal(k_noise, std.shape, std.dtype)
    mean = self._mean(params, z) + temperature * std * eps
    return jnp.clip(y + mean.reshape(y.shape), 0.0, 1.0)


def from_config(cfg, image_shape: tuple[int, int, int]) -> MSGMM:
  """The MS-GMM of `config.stage2` for images of `image_shape`.

  Raises:
    UserInputError: a non-positive or non-int component/factor count, as
      many factors as pixel values or more, a step power outside [0, 1], a
      non-positive variance or a non-bool gmm_data_init.
  """
  components = stage2.positive_int(cfg, 'gmm_components')
  factors = stage2.positive_int(cfg, 'gmm_factors')
  d = math.prod(image_shape)
  if factors >= d:
    raise UserInputError(f'stage2.gmm_factors must be below the {d} '
                         f'dimensions of {tuple(image_shape)} images; got '
                         f'{factors}')
  power = cfg.gmm_step_power
  if (isinstance(power, bool) or not isinstance(power, (int, float))
      or not 0 <= power <= 1):
    raise UserInputError(f'stage2.gmm_step_power must be in [0, 1] '
                         f'(0.5 < it for a convergent stepwise EM); got '
                         f'{power!r}')
  data_init = cfg.gmm_data_init
  if not isinstance(data_init, bool):
    raise UserInputError(f'stage2.gmm_data_init must be a bool; got '
                         f'{data_init!r}')
  return MSGMM(components=components, factors=factors,
               step_power=float(power),
               min_variance=stage2.number(cfg, 'gmm_min_variance'),
               init_variance=stage2.number(cfg, 'gmm_init_variance'),
               data_init=data_init)

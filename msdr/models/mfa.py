"""A mixture of factor analysers over flat vectors, fit by EM (Ghahramani &
Hinton 1996, with one noise variance psi_k per component), in float32 JAX
without any D x D matrix: log-likelihoods and posteriors go through the
q x q matrix M_k = I + W_k^T psi_k^-1 W_k (Woodbury, determinant lemma).
`msdr.models.ms_gmm` uses it on the residual x - y; its docstring gives the
parameterisation and the stepwise EM built from `statistics` and `m_step`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from msdr.models import small_linalg

Params = Any
Stats = dict

MIN_VARIANCE = 1e-4  # default floor of psi

# Total responsibility (a batch average) below which a component is dead.
_DEAD = 1e-12


def flatten(a: jax.Array) -> jax.Array:
  """[B, ...] -> [B, D]."""
  return a.reshape(a.shape[0], -1)


# -- the mixture of factor analysers on flat residuals -----------------------


def posterior(params: Params, r: jax.Array) -> dict:
  """Everything the E-step, the likelihood and `infer` need.

  Args:
    params: {'weights' [K], 'mean' [K, D], 'factors' [K, D, q],
      'variance' [K, D]}.
    r: residuals [N, D].

  Returns:
    dict of 'log_joint' [N, K] (log pi_k + log N(r; mu_k, C_k)),
    'log_likelihood' [N], 'responsibilities' [N, K], 'factor_mean'
    [N, K, q] (E[f | r, k]) and 'chol' [K, q, q] (lower Cholesky factor
    of M_k, the posterior precision of f given k).
  """
  w, psi = params['factors'], params['variance']
  q = w.shape[-1]
  w_scaled = w / psi[..., None]                                  # Psi^-1 W
  precision = (jnp.eye(q, dtype=w.dtype)
               + jnp.einsum('kdq,kdp->kqp', w, w_scaled))        # M_k
  chol = small_linalg.cholesky(precision)
  e = r[:, None, :] - params['mean'][None]                       # [N, K, D]
  b = jnp.einsum('nkd,kdq->kqn', e, w_scaled)
  m = small_linalg.cho_solve(chol, b)                            # [K, q, N]
  m = jnp.transpose(m, (2, 0, 1))                                # [N, K, q]
  left = e - jnp.einsum('kdq,nkq->nkd', w, m)
  mahalanobis = (jnp.sum(jnp.square(left) / psi[None], -1)
                 + jnp.sum(jnp.square(m), -1))
  log_det = (2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
             + jnp.sum(jnp.log(psi), -1))                        # log |C_k|
  d = r.shape[-1]
  log_normal = -0.5 * (d * math.log(2 * math.pi) + log_det[None]
                       + mahalanobis)
  log_joint = jnp.log(params['weights'])[None] + log_normal
  log_lik = jax.nn.logsumexp(log_joint, axis=-1)
  return {'log_joint': log_joint, 'log_likelihood': log_lik,
          'responsibilities': jnp.exp(log_joint - log_lik[:, None]),
          'factor_mean': m, 'chol': chol}


def statistics(params: Params, r: jax.Array) -> tuple[Stats, jax.Array]:
  """The E-step: batch-averaged expected sufficient statistics.

  Returns:
    (stats, log-likelihoods [N]); stats holds 'count' [K] = <h_k>, 'r'
    [K, D] = <h_k r>, 'rr' [K, D] = <h_k r^2>, 'z' [K, q] = <h_k E[f]>,
    'zz' [K, q, q] = <h_k E[f f^T]> and 'rz' [K, D, q] = <h_k r E[f]^T>,
    where <.> averages over the N residuals.
  """
  post = posterior(params, r)
  h, m, chol = post['responsibilities'], post['factor_mean'], post['chol']
  n = r.shape[0]
  q = m.shape[-1]
  count = jnp.mean(h, 0)
  eye = jnp.broadcast_to(jnp.eye(q, dtype=chol.dtype), chol.shape)
  cov = small_linalg.cho_solve(chol, eye)                        # M_k^-1
  hm = h[..., None] * m                                          # [N, K, q]
  stats = {
      'count': count,
      'r': h.T @ r / n,
      'rr': h.T @ jnp.square(r) / n,
      'z': jnp.mean(hm, 0),
      'zz': (count[:, None, None] * cov
             + jnp.einsum('nkq,nkp->kqp', hm, m) / n),
      'rz': jnp.einsum('nd,nkq->kdq', r, hm) / n,
  }
  return stats, post['log_likelihood']


def expected_statistics(params: Params) -> Stats:
  """The statistics that `params` expects of its own samples.

  E[h_k] = pi_k, E[h_k r] = pi_k mu_k, E[h_k r^2] = pi_k (mu_k^2 +
  diag(W_k W_k^T) + psi_k), E[h_k f] = 0, E[h_k f f^T] = pi_k I and
  E[h_k r f^T] = pi_k W_k, so `m_step` maps them back to `params`.
  """
  pi, mu, w = params['weights'], params['mean'], params['factors']
  q = w.shape[-1]
  return {
      'count': pi,
      'r': pi[:, None] * mu,
      'rr': pi[:, None] * (jnp.square(mu) + jnp.sum(jnp.square(w), -1)
                           + params['variance']),
      'z': jnp.zeros((w.shape[0], q), w.dtype),
      'zz': pi[:, None, None] * jnp.eye(q, dtype=w.dtype),
      'rz': pi[:, None, None] * w,
  }


def m_step(stats: Stats, params: Params, min_variance: float) -> Params:
  """The closed-form M-step of an MFA from its sufficient statistics.

  With the augmented loading [W_k, mu_k] and latent [f; 1],
    [W_k, mu_k] = B_k A_k^-1,  A_k = <h_k E[[f; 1][f; 1]^T]>,
                               B_k = <h_k r E[[f; 1]]^T>,
    psi_k = max((<h_k r^2> - rowsum([W_k, mu_k] * B_k)) / <h_k>, floor),
    pi_k = <h_k> / sum_j <h_j>.
  A dead component (total responsibility below 1e-12) keeps `params`'.
  """
  count, q = stats['count'], stats['zz'].shape[-1]
  a = jnp.concatenate([
      jnp.concatenate([stats['zz'], stats['z'][:, :, None]], -1),
      jnp.concatenate([stats['z'][:, None, :], count[:, None, None]], -1),
  ], 1)                                                          # [K, q+1, q+1]
  b = jnp.concatenate([stats['rz'], stats['r'][..., None]], -1)  # [K, D, q+1]
  alive = count > _DEAD
  a = jnp.where(alive[:, None, None], a, jnp.eye(q + 1, dtype=a.dtype))
  # A_k is positive definite (a second moment with the posterior covariance
  # of f added), so Cholesky solves it.
  loading = jnp.swapaxes(small_linalg.cho_solve(
      small_linalg.cholesky(a), jnp.swapaxes(b, 1, 2)), 1, 2)
  safe_count = jnp.where(alive, count, 1.0)[:, None]
  variance = (stats['rr'] - jnp.sum(loading * b, -1)) / safe_count
  variance = jnp.maximum(variance, min_variance)
  keep = lambda new, old: jnp.where(
      alive.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
  return {'weights': count / jnp.sum(count),
          'mean': keep(loading[..., q], params['mean']),
          'factors': keep(loading[..., :q], params['factors']),
          'variance': keep(variance, params['variance'])}


def em_step(params: Params, r: jax.Array,
            min_variance: float = MIN_VARIANCE) -> Params:
  """One iteration of full-batch EM on residuals r [N, ...] (any shape)."""
  stats, _ = statistics(params, flatten(r))
  return m_step(stats, params, min_variance)


def step_size(step: jax.Array, power: float,
              dtype: jnp.dtype = jnp.float32) -> jax.Array:
  """rho_t = (t + 1)^-power: 1 at step 0."""
  return jnp.power(jnp.asarray(step, dtype) + 1, -power)


def component_of(weights: jax.Array, u: jax.Array) -> jax.Array:
  """The component whose inverse-CDF interval of pi holds u: [B] int32."""
  upper = jnp.cumsum(weights) / jnp.sum(weights)
  return jnp.sum(u[:, None] >= upper[None, :-1], -1).astype(jnp.int32)


def interval(weights: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(lower, upper) [K] of each component's interval of u in [0, 1)."""
  upper = jnp.cumsum(weights) / jnp.sum(weights)
  return jnp.concatenate([jnp.zeros_like(upper[:1]), upper[:-1]]), upper

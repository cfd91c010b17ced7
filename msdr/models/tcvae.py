"""Decomposed KL of a Gaussian-posterior VAE, and the beta-TCVAE penalty.

Following Chen et al. 2018 ("Isolating Sources of Disentanglement in VAEs"),
the KL term E_x[KL(q(z|x) || p(z))], with p = N(0, I), splits into

  mi   = E[log q(z|x) - log q(z)]                  index-code mutual info
  tc   = E[log q(z) - sum_d log q(z_d)]            total correlation
  dwkl = E[sum_d log q(z_d) - log p(z)]            dimension-wise KL

which telescope: mi + tc + dwkl = kl = E[log q(z|x) - log p(z)]. The aggregate
posterior q(z) and its marginals q(z_d) have no closed form; they are
estimated on the minibatch from the M x M (x D) matrix of log q(z_j | x_i),
either by minibatch weighted sampling ('mws') or minibatch stratified
sampling ('mss'). Everything is reduced with logsumexp so float32 stays safe
(the densities themselves underflow long before their logs do).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from msdr.errors import UserInputError

ESTIMATORS = ('mws', 'mss')

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(x: jax.Array, mean: jax.Array,
                         logvar: jax.Array) -> jax.Array:
  """Elementwise log N(x; mean, exp(logvar)).

  Args:
    x: points, any shape broadcastable with `mean` and `logvar`.
    mean: Gaussian means.
    logvar: log variances (log, not std, so exp(-logvar) never divides by 0).

  Returns:
    The broadcast elementwise log density.
  """
  x = jnp.asarray(x)
  mean = jnp.asarray(mean)
  logvar = jnp.asarray(logvar)
  inv_var = jnp.exp(-logvar)
  return -0.5 * (_LOG_2PI + logvar + jnp.square(x - mean) * inv_var)


def mss_log_weights(batch_size: int, dataset_size: int) -> np.ndarray:
  """Log of the minibatch-stratified-sampling weight matrix W, [B, B].

  Chen et al. (2018, Appendix C.2) estimate q(z_j) from a batch of B samples
  drawn from N: the sample's own posterior weighs 1/N, and the K = B - 1 other
  samples stand for the rest of the data set, one of them for the stratum of
  weight (N - K)/(N K) and the others 1/K each. Row j (the sample z_j):

    W[j, j]           = 1 / N            the sample's own posterior q(z_j|x_j)
    W[j, (j + 1) % B] = (N - K) / (N K)  one stratum entry per row
    W[j, i]           = 1 / K            every other i

  so every row sums to exactly 1 and log q(z_j) ~= logsumexp_i [log W[j, i] +
  log q(z_j | x_i)]. The public PyTorch references write W with a strided fill
  (`W.view(-1)[::K+1]` on a B x B matrix) that lands on column 0 rather than
  the diagonal; that bug is not reproduced here: the 1/N entry is the
  diagonal.

  Args:
    batch_size: B, at least 2.
    dataset_size: N, at least B.

  Returns:
    float32 numpy array [B, B] of log W (a constant: shapes are static).
  """
  m, n = int(batch_size), int(dataset_size)
  if m < 2:
    raise UserInputError(f"estimator 'mss' needs a batch of at least 2, "
                         f'got {m}')
  if n < m:
    raise UserInputError(f'dataset_size ({n}) must be at least the batch '
                         f'size ({m})')
  k = m - 1  # the batch's other samples: the paper's M
  w = np.full((m, m), 1.0 / k, dtype=np.float64)
  rows = np.arange(m)
  w[rows, (rows + 1) % m] = (n - k) / (n * k)
  w[rows, rows] = 1.0 / n
  return np.log(w).astype(np.float32)


# Jitted here because op-by-op dispatch of the ~20 small ops costs seconds of
# compiles per new shape; inside a caller's jit this nests away for free.
@functools.partial(jax.jit, static_argnames=('dataset_size', 'estimator'))
def decomposed_kl(z: jax.Array, mean: jax.Array, logvar: jax.Array,
                  dataset_size: int, estimator: str = 'mss') -> dict:
  """Minibatch estimate of the decomposed KL (mi, tc, dwkl) and the full KL.

  Args:
    z: [M, D], z[i] a sample from q(z | x_i) = N(mean[i], exp(logvar[i])).
    mean: [M, D] posterior means.
    logvar: [M, D] posterior log variances.
    dataset_size: N, the number of training examples (a Python int; static,
      so each distinct value compiles once).
    estimator: 'mws' (minibatch weighted sampling) or 'mss' (minibatch
      stratified sampling), Chen et al. 2018. Static.

  Returns:
    dict of scalar batch means: 'mi', 'tc', 'dwkl' and 'kl', with
    mi + tc + dwkl == kl up to float rounding (the terms telescope).

  Raises:
    UserInputError (a ValueError): unknown estimator, shapes that are not
      matching [M, D], dataset_size < M, or M < 2 for 'mss'.
  """
  if estimator not in ESTIMATORS:
    raise UserInputError(f'unknown estimator {estimator!r}; valid estimators: '
                         f"{', '.join(repr(e) for e in ESTIMATORS)}")
  z, mean, logvar = jnp.asarray(z), jnp.asarray(mean), jnp.asarray(logvar)
  if z.ndim != 2 or mean.shape != z.shape or logvar.shape != z.shape:
    raise UserInputError('z, mean and logvar must all be [M, D], got '
                         f'{z.shape}, {mean.shape}, {logvar.shape}')
  m = z.shape[0]
  n = int(dataset_size)
  if n < m:
    raise UserInputError(f'dataset_size ({n}) must be at least the batch '
                         f'size ({m})')

  # Per-sample [M] terms that need no minibatch estimate.
  log_qzx = gaussian_log_density(z, mean, logvar).sum(-1)
  log_pz = gaussian_log_density(z, 0.0, 0.0).sum(-1)

  # mat[j, i, d] = log q(z_j,d | x_i): every sample scored under every
  # posterior in the batch.
  mat = gaussian_log_density(z[:, None, :], mean[None, :, :],
                             logvar[None, :, :])
  if estimator == 'mws':
    log_w = jnp.full((m, m), -math.log(n * m), dtype=mat.dtype)
  else:
    log_w = jnp.asarray(mss_log_weights(m, n), dtype=mat.dtype)
  log_qz = jax.nn.logsumexp(log_w + mat.sum(-1), axis=1)
  # The same weights estimate each one-dimensional marginal q(z_j,d).
  log_qz_marg = jax.nn.logsumexp(log_w[:, :, None] + mat, axis=1).sum(-1)

  return {
      'mi': jnp.mean(log_qzx - log_qz),
      'tc': jnp.mean(log_qz - log_qz_marg),
      'dwkl': jnp.mean(log_qz_marg - log_pz),
      'kl': jnp.mean(log_qzx - log_pz),
  }


def beta_tcvae_penalty(terms: dict, alpha: float = 1.0, beta: float = 6.0,
                       gamma: float = 1.0) -> jax.Array:
  """The beta-TCVAE regulariser alpha * mi + beta * tc + gamma * dwkl.

  Args:
    terms: the dict from `decomposed_kl` (needs 'mi', 'tc', 'dwkl').
    alpha: weight of the index-code mutual information.
    beta: weight of the total correlation (the disentangling pressure).
    gamma: weight of the dimension-wise KL.

  Returns:
    Scalar penalty; with alpha = beta = gamma = 1 it is the plain KL estimate.
  """
  return alpha * terms['mi'] + beta * terms['tc'] + gamma * terms['dwkl']

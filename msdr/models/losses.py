"""Per-example reconstruction losses and Gaussian-posterior helpers.

Everything returns one value per example ([B]); models average over the batch.
The decoder outputs logits, as in disentanglement_lib:

  bernoulli  sum_pixels BCE(sigmoid(logits), x)   (x in [0, 1]; the default)
  gaussian   sum_pixels (x - sigmoid(logits))^2   (disentanglement_lib's 'l2':
             a unit-variance Gaussian's -log p up to a constant and a factor)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from msdr.errors import UserInputError


def reparameterize(key: jax.Array, mean: jax.Array,
                   logvar: jax.Array) -> jax.Array:
  """A sample of N(mean, exp(logvar)), differentiable in mean and logvar."""
  eps = jax.random.normal(key, mean.shape, mean.dtype)
  return mean + jnp.exp(0.5 * logvar) * eps


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, I)) per example: [B, D] -> [B]."""
  return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar,
                       axis=-1)


def _flat(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1)


def bernoulli_loss(logits: jax.Array, x: jax.Array) -> jax.Array:
  """Summed sigmoid cross-entropy per example (stable for any logit).

  -x log s(l) - (1 - x) log(1 - s(l)) = softplus(l) - x l; `logaddexp` keeps
  it finite for any l and its gradient exactly s(l) - x, also at l = 0.
  """
  logits, x = _flat(logits), _flat(x)
  return jnp.sum(jnp.logaddexp(0.0, logits) - logits * x, axis=-1)


def gaussian_loss(logits: jax.Array, x: jax.Array) -> jax.Array:
  """Summed squared error between x and sigmoid(logits), per example."""
  return jnp.sum(jnp.square(_flat(x) - jax.nn.sigmoid(_flat(logits))),
                 axis=-1)


RECONSTRUCTIONS = {'bernoulli': bernoulli_loss, 'gaussian': gaussian_loss}


def reconstruction_loss(name: str):
  """The per-example loss function called `name`."""
  if name not in RECONSTRUCTIONS:
    raise UserInputError(
        f'unknown reconstruction loss {name!r}; valid: '
        f"{', '.join(sorted(RECONSTRUCTIONS))}")
  return RECONSTRUCTIONS[name]

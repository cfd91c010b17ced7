"""Stage-1 disentangling VAEs: one encoder/decoder, six objectives by name.

Every method shares disentanglement_lib's networks (`networks.Encoder`,
`networks.Decoder`) and its per-example objective

  reconstruction(x, decode(c)) + penalty(q(c|x)),  c ~ q(c|x),

averaged over the batch. The penalties (disentanglement_lib's defaults):

  beta_vae      beta * KL
  beta_tcvae    alpha * MI + beta * TC + gamma * DWKL, the minibatch estimates
                of `tcvae.decomposed_kl` (MWS or MSS, dataset size N)
  factor_vae    KL + gamma * TC, TC estimated by a discriminator between
                q(c) and its dimension-wise permutation, trained by its own
                Adam (lr 1e-4, b1 0.5, b2 0.9)
  dip_vae_i     KL + lambda_od * sum offdiag(Cov[mean])^2
                   + lambda_d * sum (diag(Cov[mean]) - 1)^2
  dip_vae_ii    the same on Cov[c] = Cov[mean] + E[diag(exp(logvar))]
  annealed_vae  gamma * |KL - C(step)|, C = min(c_max, c_max * step / T)

`Stage1Model.loss` returns (objective, terms): 'reconstruction', 'kl'
(analytic, batch mean), 'loss' (the VAE's objective) and each method's own
terms. FactorVAE's objective adds the discriminator's loss with the gradients
split by stop_gradient, so one gradient of one scalar trains both networks
(each through its own optimizer, see `optimizer`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from msdr.errors import UserInputError
from msdr.models import losses
from msdr.models import networks
from msdr.models import tcvae

METHODS = ('beta_vae', 'beta_tcvae', 'factor_vae', 'dip_vae_i', 'dip_vae_ii',
           'annealed_vae')

Params = Any


class Discriminator(nn.Module):
  """FactorVAE's discriminator: 6 x dense 1000 leaky ReLU, 2 logits
  (column 0: 'a sample of q(c)', column 1: 'a permuted sample')."""

  @nn.compact
  def __call__(self, c: jax.Array) -> jax.Array:
    for _ in range(6):
      c = nn.leaky_relu(nn.Dense(1000, kernel_init=networks.KERNEL_INIT)(c),
                        0.2)
    return nn.Dense(2, kernel_init=networks.KERNEL_INIT)(c)


def permute_dims(key: jax.Array, c: jax.Array) -> jax.Array:
  """Shuffles each latent dimension independently across the batch: a
  sample of prod_d q(c_d) from samples of q(c)."""
  order = jnp.argsort(jax.random.uniform(key, c.shape), axis=0)
  return jnp.take_along_axis(c, order, axis=0)


def covariance(x: jax.Array) -> jax.Array:
  """Biased covariance of the rows of x [B, D] -> [D, D]."""
  centred = x - jnp.mean(x, axis=0, keepdims=True)
  return centred.T @ centred / x.shape[0]


def dip_regularizer(cov: jax.Array, lambda_od: float,
                    lambda_d: float) -> jax.Array:
  diag = jnp.diagonal(cov)
  off = cov - jnp.diag(diag)
  return (lambda_od * jnp.sum(jnp.square(off))
          + lambda_d * jnp.sum(jnp.square(diag - 1.0)))


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise UserInputError(message)


@dataclasses.dataclass(frozen=True)
class Stage1Model:
  """A stage-1 VAE: networks, objective and optimizer.

  Attributes:
    method: one of METHODS.
    latent_dim: dimensions of c.
    channels: image channels (1 or 3).
    dataset_size: N, for beta-TCVAE's estimators.
    reconstruction: 'bernoulli' or 'gaussian'.
    hyper: the method's hyperparameters (see `from_config`).
  """
  method: str
  latent_dim: int
  channels: int
  dataset_size: int
  reconstruction: str = 'bernoulli'
  learning_rate: float = 1e-4
  hyper: tuple = ()

  @property
  def h(self) -> dict:
    return dict(self.hyper)

  @property
  def encoder(self) -> networks.Encoder:
    return networks.Encoder(self.latent_dim)

  @property
  def decoder(self) -> networks.Decoder:
    return networks.Decoder(self.channels)

  # -- the model's interface -------------------------------------------------

  def init(self, key: jax.Array, image_shape: tuple[int, ...]) -> Params:
    """Fresh parameters for images of `image_shape` (H, W, C)."""
    k_enc, k_dec, k_disc = jax.random.split(key, 3)
    x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
    c = jnp.zeros((1, self.latent_dim), jnp.float32)
    params = {'encoder': self.encoder.init(k_enc, x)['params'],
              'decoder': self.decoder.init(k_dec, c)['params']}
    if self.method == 'factor_vae':
      params['discriminator'] = Discriminator().init(k_disc, c)['params']
    return params

  def encode(self, params: Params, x: jax.Array):
    """Images [B, H, W, C] in [0, 1] -> (mean, logvar) of q(c|x)."""
    return self.encoder.apply({'params': params['encoder']}, x)

  def decode(self, params: Params, c: jax.Array) -> jax.Array:
    """Latents [B, D] -> logits [B, H, W, C]; sigmoid gives the image."""
    return self.decoder.apply({'params': params['decoder']}, c)

  def optimizer(self) -> optax.GradientTransformation:
    """Adam for the VAE; FactorVAE's discriminator gets its own Adam."""
    vae = optax.adam(self.learning_rate, b1=0.9, b2=0.999, eps=1e-8)
    if self.method != 'factor_vae':
      return vae
    h = self.h
    disc = optax.adam(h['disc_learning_rate'], b1=h['disc_beta1'],
                      b2=h['disc_beta2'], eps=1e-8)
    labels = lambda params: {
        name: jax.tree.map(lambda _, n=name: n if n == 'discriminator'
                           else 'vae', tree)
        for name, tree in params.items()}
    return optax.multi_transform({'vae': vae, 'discriminator': disc}, labels)

  def loss(self, params: Params, x: jax.Array, key: jax.Array,
           step: jax.Array) -> tuple[jax.Array, dict]:
    """The objective on a batch and every term separately.

    Args:
      params: from `init`.
      x: images [B, H, W, C] in [0, 1].
      key: a key used once here (split per use).
      step: the training step (AnnealedVAE's capacity schedule).

    Returns:
      (objective, terms), scalars averaged over the batch.
    """
    k_sample, k_method = jax.random.split(key)
    mean, logvar = self.encode(params, x)
    c = losses.reparameterize(k_sample, mean, logvar)
    logits = self.decode(params, c)
    recon = jnp.mean(losses.reconstruction_loss(self.reconstruction)(
        logits, x))
    kl = jnp.mean(losses.gaussian_kl(mean, logvar))
    penalty, terms, extra = self._penalty(params, mean, logvar, c, kl,
                                          k_method, step)
    loss = recon + penalty
    terms = {'reconstruction': recon, 'kl': kl, 'loss': loss, **terms}
    return loss + extra, terms

  def _penalty(self, params, mean, logvar, c, kl, key, step):
    """(penalty, method terms, extra objective outside the VAE loss)."""
    h = self.h
    if self.method == 'beta_vae':
      return h['beta'] * kl, {}, 0.0
    if self.method == 'beta_tcvae':
      t = tcvae.decomposed_kl(c, mean, logvar, dataset_size=self.dataset_size,
                              estimator=h['estimator'])
      penalty = tcvae.beta_tcvae_penalty(t, h['alpha'], h['beta'], h['gamma'])
      return penalty, {'mi': t['mi'], 'tc': t['tc'], 'dwkl': t['dwkl']}, 0.0
    if self.method == 'factor_vae':
      disc = Discriminator()
      frozen = jax.lax.stop_gradient(params['discriminator'])
      logits = disc.apply({'params': frozen}, c)
      tc = jnp.mean(logits[:, 0] - logits[:, 1])
      # The discriminator learns from detached samples: its loss moves only
      # its own parameters.
      c_fixed = jax.lax.stop_gradient(c)
      real = disc.apply({'params': params['discriminator']}, c_fixed)
      fake = disc.apply({'params': params['discriminator']},
                        permute_dims(key, c_fixed))
      disc_loss = -0.5 * (jnp.mean(jax.nn.log_softmax(real)[:, 0])
                          + jnp.mean(jax.nn.log_softmax(fake)[:, 1]))
      return (kl + h['gamma'] * tc,
              {'tc': tc, 'discriminator_loss': disc_loss}, disc_loss)
    if self.method in ('dip_vae_i', 'dip_vae_ii'):
      cov = covariance(mean)
      if self.method == 'dip_vae_ii':
        cov = cov + jnp.diag(jnp.mean(jnp.exp(logvar), axis=0))
      dip = dip_regularizer(cov, h['lambda_od'], h['lambda_d'])
      return kl + dip, {'dip': dip}, 0.0
    if self.method == 'annealed_vae':
      capacity = jnp.minimum(
          h['c_max'], h['c_max'] * step / h['iteration_threshold'])
      return (h['gamma'] * jnp.abs(kl - capacity),
              {'capacity': jnp.asarray(capacity, jnp.float32)}, 0.0)
    raise AssertionError(self.method)


# Which config.stage1 fields each method reads, besides the shared ones.
_HYPER = {
    'beta_vae': ('beta',),
    'beta_tcvae': ('alpha', 'beta', 'gamma', 'estimator'),
    'factor_vae': ('gamma', 'disc_learning_rate', 'disc_beta1', 'disc_beta2'),
    'dip_vae_i': ('lambda_od', 'lambda_d'),
    'dip_vae_ii': ('lambda_od', 'lambda_d'),
    'annealed_vae': ('gamma', 'c_max', 'iteration_threshold'),
}


def check_config(cfg) -> None:
  """Validates `config.stage1` (all that needs no dataset).

  Raises:
    UserInputError: an unknown method, estimator or reconstruction loss, or a
      value out of range (negative weights, non-positive sizes or rates).
  """
  _check(cfg.method in METHODS, f'unknown stage-1 method {cfg.method!r}; '
         f"valid: {', '.join(METHODS)}")
  _check(isinstance(cfg.latent_dim, int) and cfg.latent_dim > 0,
         f'stage1.latent_dim must be a positive int, got {cfg.latent_dim!r}')
  _check(cfg.learning_rate > 0,
         f'stage1.learning_rate must be > 0, got {cfg.learning_rate}')
  losses.reconstruction_loss(cfg.reconstruction)
  for name in _HYPER[cfg.method]:
    value = cfg[name]
    if name == 'estimator':
      _check(value in tcvae.ESTIMATORS, f'unknown stage1.estimator '
             f"{value!r}; valid: {', '.join(tcvae.ESTIMATORS)}")
    elif name in ('disc_learning_rate', 'iteration_threshold'):
      _check(value > 0, f'stage1.{name} must be > 0, got {value}')
    elif name in ('disc_beta1', 'disc_beta2'):
      _check(0 <= value < 1, f'stage1.{name} must be in [0, 1), got {value}')
    else:
      _check(value >= 0, f'stage1.{name} must be >= 0, got {value}')


def from_config(cfg, channels: int, dataset_size: int) -> Stage1Model:
  """Builds the model of `config.stage1` after `check_config`.

  Args:
    cfg: `config.stage1`.
    channels: image channels.
    dataset_size: N (beta-TCVAE's estimators need N >= batch size).
  """
  check_config(cfg)
  if cfg.method == 'beta_tcvae':
    _check(dataset_size >= cfg.batch_size,
           f'beta_tcvae needs a dataset of at least the batch size; '
           f'N={dataset_size} < batch_size={cfg.batch_size}')
  hyper = {name: cfg[name] for name in _HYPER[cfg.method]}
  return Stage1Model(
      method=cfg.method, latent_dim=cfg.latent_dim, channels=channels,
      dataset_size=int(dataset_size), reconstruction=cfg.reconstruction,
      learning_rate=float(cfg.learning_rate),
      hyper=tuple(sorted(hyper.items())))

"""MS-VAE: the authors' conditional VAE for stage 2 (they call it DSVAE).

  q(z | x, y) = N(mean, diag var) from `ResidualEncoder(x - y)`
  p(x | y, z) = Bernoulli(sigmoid(ModulatedNet(y, z)))   (or 'gaussian')
  p(z)        = N(0, I)

The loss is the negative conditional ELBO per image,
  reconstruction(x, logits) + vae_beta * KL(q(z | x, y) || N(0, I)),
summed over pixels and latent dims and averaged over the batch (β = 1: the
plain ELBO). See `msdr.models.modulated` for the networks and
`msdr.models.stage2` for the contract.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from msdr.errors import UserInputError
from msdr.models import losses
from msdr.models import modulated
from msdr.models import stage2

Params = Any

# The network fields are shared with ms_gan (same names, same defaults).
NETWORK_DEFAULTS = dict(
    width=64,               # channels of the first conv; doubles per level
    modulation='spatial',   # 'spatial' (the authors') or 'channel' (AdaIN)
    unet_skips=True,        # U-Net skips from y's down path to the up path
    residual_output=True,   # logits = logit(y) + net(y, z), net starting at 0
    reconstruction='bernoulli',  # or 'gaussian'
)
DEFAULTS = dict(NETWORK_DEFAULTS, vae_beta=1.0)


@dataclasses.dataclass(frozen=True)
class GaussianLatentModel:
  """What MS-VAE and MS-GAN share: the networks (a `ResidualEncoder` giving
  a Gaussian q(z | x, y) through `posterior`, a `ModulatedNet` giving logits
  through `logits`), a N(0, I) prior over `z_dim` dims, and infer /
  generate / reconstruct / sample on top of them."""
  channels: int
  z_dim: int = 64
  width: int = 64
  modulation: str = 'spatial'
  skips: bool = True
  residual: bool = True
  reconstruction: str = 'bernoulli'

  @property
  def encoder(self) -> modulated.ResidualEncoder:
    return modulated.ResidualEncoder(self.z_dim, self.width)

  @property
  def network(self) -> modulated.ModulatedNet:
    return modulated.ModulatedNet(self.channels, self.width, self.modulation,
                                  self.skips, self.residual)

  def infer(self, params: Params, x: jax.Array, y: jax.Array,
            key: jax.Array | None = None) -> jax.Array:
    mean, logvar = self.posterior(params, x, y)
    return mean if key is None else losses.reparameterize(key, mean, logvar)

  def generate(self, params: Params, y: jax.Array, z: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(self.logits(params, y, z))

  def reconstruct(self, params: Params, x: jax.Array, y: jax.Array,
                  key: jax.Array | None = None) -> jax.Array:
    return self.generate(params, y, self.infer(params, x, y, key))

  def sample_latent(self, key: jax.Array, n: int,
                    temperature: float = 1.0) -> jax.Array:
    return temperature * jax.random.normal(key, (n, self.z_dim))

  def sample(self, params: Params, y: jax.Array, key: jax.Array,
             temperature: float = 1.0) -> jax.Array:
    return self.generate(params, y,
                         self.sample_latent(key, y.shape[0], temperature))


@dataclasses.dataclass(frozen=True)
class MSVAE(GaussianLatentModel):
  """Conditional VAE p(x | y, z) with z inferred from the residual x - y."""
  beta: float = 1.0
  learning_rate: float = 1e-4
  name: str = 'ms_vae'
  update = None  # trains by the gradient of `loss`
  decoder = GaussianLatentModel.network

  def init(self, key: jax.Array, image_shape: tuple[int, ...]) -> Params:
    k_enc, k_dec = jax.random.split(key)
    x = jnp.zeros((1, *image_shape), jnp.float32)
    z = jnp.zeros((1, self.z_dim), jnp.float32)
    return {'encoder': self.encoder.init(k_enc, x)['params'],
            'decoder': self.decoder.init(k_dec, x, z)['params']}

  def optimizer(self) -> optax.GradientTransformation:
    return optax.adam(self.learning_rate)

  def posterior(self, params: Params, x: jax.Array, y: jax.Array):
    """(mean, logvar) of q(z | x, y), each [B, z_dim]."""
    return self.encoder.apply({'params': params['encoder']}, x - y)

  def logits(self, params: Params, y: jax.Array, z: jax.Array) -> jax.Array:
    return self.decoder.apply({'params': params['decoder']}, y, z)

  def loss(self, params: Params, x: jax.Array, y: jax.Array, key: jax.Array,
           step: jax.Array):
    """(mean negative ELBO (with vae_beta), terms) over the batch."""
    del step
    mean, logvar = self.posterior(params, x, y)
    z = losses.reparameterize(key, mean, logvar)
    logits = self.logits(params, y, z)
    rec = losses.reconstruction_loss(self.reconstruction)(logits, x)
    kl = losses.gaussian_kl(mean, logvar)
    objective = jnp.mean(rec + self.beta * kl)
    mse = jnp.mean(jnp.square(jax.nn.sigmoid(logits) - x))
    return objective, {'reconstruction': jnp.mean(rec), 'kl': jnp.mean(kl),
                       'elbo': -jnp.mean(rec + kl), 'mse': mse}


def check_network_config(cfg) -> None:
  """Raises UserInputError on a bad shared network field."""
  stage2.positive_int(cfg, 'width')
  if cfg.modulation not in modulated.MODULATIONS:
    raise UserInputError(f'stage2.modulation must be one of '
                         f'{modulated.MODULATIONS}; got {cfg.modulation!r}')
  losses.reconstruction_loss(cfg.reconstruction)  # raises on a bad name


def check_image_shape(image_shape: tuple[int, ...]) -> None:
  h, w, _ = image_shape
  if h != w or h & (h - 1):
    raise UserInputError(f'stage 2 networks need square images with a '
                         f'power-of-two side; got {h}x{w}')


def from_config(cfg, image_shape: tuple[int, int, int]) -> MSVAE:
  check_network_config(cfg)
  check_image_shape(image_shape)
  beta = stage2.number(cfg, 'vae_beta', positive=False)
  return MSVAE(channels=image_shape[-1], z_dim=cfg.z_dim, width=cfg.width,
               modulation=cfg.modulation, skips=bool(cfg.unet_skips),
               residual=bool(cfg.residual_output),
               reconstruction=cfg.reconstruction, beta=beta,
               learning_rate=float(cfg.learning_rate))

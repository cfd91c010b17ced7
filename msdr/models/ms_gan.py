"""MS-GAN: a conditional GAN for stage 2 that can also reconstruct.

  generator      G(y, z) = sigmoid(ModulatedNet(y, z)), z ~ N(0, I)
  discriminator  D(image, y) -> one logit, on the channel concatenation of
                 (image, y): real pair (x, y), fake pair (G(y, z), y)
  encoder        q(z | x, y) = N(mean, diag var) from ResidualEncoder(x - y)

The generator and encoder are MS-VAE's networks (`msdr.models.modulated`,
same config fields). The discriminator is a stack of 4x4 stride-2 convs
(`gan_disc_width` channels doubling per level, capped at 8x) with
LeakyReLU(0.2) and no normalisation, then a dense logit; with no batch
statistics each logit depends on its own example only, which is what makes
the per-example R1 gradient below one `vjp` of the summed logits.

Losses (l_r = D(x, y), l_f = D(G(y, z), y), softplus(t) = log(1 + e^t)):

  D:     mean softplus(-l_r) + mean softplus(l_f)
         + gan_r1_weight / 2 * mean_b ||grad_x D(x_b, y_b)||^2
  G + E: mean softplus(-l_f)                       (non-saturating)
         + gan_recon_weight / V * mean_b [rec(x_b, G(y_b, z_b))
                                          + gan_kl_weight * KL_b]

R1 (Mescheder et al., 2018) is taken every step, on reals only, w.r.t. the
image input in [0, 1] (not y). V = H * W * C: the reconstruction term is per
pixel value, so one weight suits every resolution (it is the shared
`reconstruction` loss, summed per image; the logged 'reconstruction' term is
that sum, as MS-VAE logs it). The encoder path is a beta-VAE with beta =
`gan_kl_weight` (small: 0.1) scaled by gan_recon_weight / V: its code is a
*sample* z_b ~ q(z | x_b, y_b), not the mean, and the KL keeps the codes
where the adversarial loss trains G (the prior), so reconstructions and
samples come from the same region of z; the noise makes G's output near a
code stable. `infer` with no key returns the mean.

Training alternates in one jitted `update`: first D (its gradient, its own
Adam), then G and E together against the updated D (their gradient, their
Adam). Both Adams use betas (0.0, 0.99), the setting StyleGAN2 pairs with
R1; the learning rates are `learning_rate` (G + E) and
`gan_disc_learning_rate` (D). The opt_state is
`{'generator': Adam state of {'generator', 'encoder'}, 'discriminator': Adam
state of the discriminator}`, so a half-step never reads or writes the other
side's parameters or moments. See `msdr.models.stage2` for the contract.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from msdr.models import stage2
from msdr.models import losses
from msdr.models import modulated
from msdr.models import networks
from msdr.models.ms_vae import GaussianLatentModel
from msdr.models.ms_vae import NETWORK_DEFAULTS
from msdr.models.ms_vae import check_image_shape
from msdr.models.ms_vae import check_network_config

Params = Any

DEFAULTS = dict(
    NETWORK_DEFAULTS,
    gan_r1_weight=10.0,            # gamma of the R1 penalty on reals
    gan_recon_weight=10.0,         # weight of the per-value reconstruction
    gan_kl_weight=0.1,             # beta of the encoder's KL (inside recon)
    gan_disc_learning_rate=1e-4,   # the discriminator's Adam
    gan_disc_width=64,             # channels of the discriminator's first conv
)
ADAM_BETAS = (0.0, 0.99)
GENERATOR_SIDE = ('generator', 'encoder')


class Discriminator(nn.Module):
  """(image, y), each [B, H, W, C] in [0, 1] -> logits [B]."""
  width: int = 64

  @nn.compact
  def __call__(self, image: jax.Array, y: jax.Array) -> jax.Array:
    h = 2.0 * jnp.concatenate([image, y], axis=-1) - 1.0
    levels = modulated.num_levels(h.shape[1])
    for features in modulated.level_features(self.width, levels):
      h = networks.ConvS2(features, 4, kernel_init=modulated.CONV_INIT)(h)
      h = modulated.leaky_relu(h)
    h = h.reshape(h.shape[0], -1)
    return nn.Dense(1, kernel_init=modulated.DENSE_INIT)(h)[:, 0]


def _adam(learning_rate: float) -> optax.GradientTransformation:
  return optax.adam(learning_rate, b1=ADAM_BETAS[0], b2=ADAM_BETAS[1])


def _generator_side(params: Params) -> Params:
  return {k: params[k] for k in GENERATOR_SIDE}


@dataclasses.dataclass(frozen=True)
class MSGAN(GaussianLatentModel):
  """Conditional GAN G(y, z) with an encoder E(x - y) for reconstruction."""
  r1_weight: float = 10.0
  recon_weight: float = 10.0
  kl_weight: float = 0.1
  learning_rate: float = 1e-4
  disc_learning_rate: float = 1e-4
  disc_width: int = 64
  name: str = 'ms_gan'

  generator = GaussianLatentModel.network

  @property
  def discriminator(self) -> Discriminator:
    return Discriminator(self.disc_width)

  def init(self, key: jax.Array, image_shape: tuple[int, ...]) -> Params:
    k_enc, k_gen, k_disc = jax.random.split(key, 3)
    x = jnp.zeros((1, *image_shape), jnp.float32)
    z = jnp.zeros((1, self.z_dim), jnp.float32)
    return {'generator': self.generator.init(k_gen, x, z)['params'],
            'encoder': self.encoder.init(k_enc, x)['params'],
            'discriminator': self.discriminator.init(k_disc, x, x)['params']}

  def generator_optimizer(self) -> optax.GradientTransformation:
    """Adam of the generator and the encoder, at `learning_rate`."""
    return _adam(self.learning_rate)

  def discriminator_optimizer(self) -> optax.GradientTransformation:
    """Adam of the discriminator, at `disc_learning_rate`."""
    return _adam(self.disc_learning_rate)

  def optimizer(self) -> optax.GradientTransformation:
    """The contract's optimizer: `.init(params)` makes both Adam states.

    Its `update` raises NotImplementedError: MS-GAN trains only by `update`,
    which applies each Adam to its own side.
    """
    def init(params):
      return {'generator':
                  self.generator_optimizer().init(_generator_side(params)),
              'discriminator':
                  self.discriminator_optimizer().init(params['discriminator'])}

    def update(updates, state, params=None):
      del updates, state, params
      raise NotImplementedError(
          'ms_gan trains by MSGAN.update (alternating D and G + E steps), '
          'not by one gradient of `loss`')
    return optax.GradientTransformation(init, update)

  # Networks.

  def posterior(self, params: Params, x: jax.Array, y: jax.Array):
    """(mean, logvar) of q(z | x, y), each [B, z_dim]."""
    return self.encoder.apply({'params': params['encoder']}, x - y)

  def logits(self, params: Params, y: jax.Array, z: jax.Array) -> jax.Array:
    """G's pre-sigmoid output [B, H, W, C]."""
    return self.generator.apply({'params': params['generator']}, y, z)

  def discriminate(self, d_params: Params, image: jax.Array,
                   y: jax.Array) -> jax.Array:
    """D's logits [B] (d_params: params['discriminator'])."""
    return self.discriminator.apply({'params': d_params}, image, y)

  def real_logits_and_r1(self, d_params: Params, x: jax.Array, y: jax.Array):
    """(D(x, y) [B], mean_b ||grad_x D(x_b, y_b)||^2), the image input only.

    D has no cross-example terms, so the gradient of the summed logits is
    each example's own gradient.
    """
    real, vjp = jax.vjp(lambda image: self.discriminate(d_params, image, y),
                        x)
    (grad,) = vjp(jnp.ones_like(real))
    r1 = jnp.mean(jnp.sum(jnp.square(grad.reshape(grad.shape[0], -1)), -1))
    return real, r1

  # Losses.

  def discriminator_loss(self, d_params: Params, params: Params, x: jax.Array,
                         y: jax.Array, z: jax.Array):
    """(D's objective with R1, terms); fakes G(y, z) carry no gradient.

    Args:
      d_params: the discriminator's params (differentiated).
      params: all params; only the generator's are read.
      x: real images [B, H, W, C] in [0, 1].
      y: stage-1 images, same shape.
      z: prior latents of the fake pairs [B, z_dim].
    """
    fake = jax.lax.stop_gradient(self.generate(params, y, z))
    real_logits, r1 = self.real_logits_and_r1(d_params, x, y)
    fake_logits = self.discriminate(d_params, fake, y)
    d_loss = (jnp.mean(jax.nn.softplus(-real_logits))
              + jnp.mean(jax.nn.softplus(fake_logits)))
    objective = d_loss + 0.5 * self.r1_weight * r1
    return objective, {'d_loss': d_loss, 'r1': r1, 'd_objective': objective,
                       'd_real': jnp.mean(real_logits),
                       'd_fake': jnp.mean(fake_logits)}

  def generator_loss(self, side: Params, d_params: Params, x: jax.Array,
                     y: jax.Array, z: jax.Array, key: jax.Array | None):
    """(G + E's objective, terms).

    Args:
      side: {'generator', 'encoder'} params (differentiated).
      d_params: the discriminator's params (held fixed).
      x: real images [B, H, W, C] in [0, 1].
      y: stage-1 images, same shape.
      z: prior latents for the adversarial term [B, z_dim].
      key: the encoder's sample z ~ q(z | x, y); None uses the mean.
    """
    b = x.shape[0]
    mean, logvar = self.posterior(side, x, y)
    code = mean if key is None else losses.reparameterize(key, mean, logvar)
    # G is per-example (instance norm), so both uses share one pass.
    logits = self.logits(side, jnp.concatenate([y, y]),
                         jnp.concatenate([code, z]))
    rec_logits, fake_logits = logits[:b], logits[b:]
    g_loss = jnp.mean(jax.nn.softplus(
        -self.discriminate(d_params, jax.nn.sigmoid(fake_logits), y)))
    rec = losses.reconstruction_loss(self.reconstruction)(rec_logits, x)
    kl = losses.gaussian_kl(mean, logvar)
    values = math.prod(x.shape[1:])
    objective = g_loss + self.recon_weight / values * jnp.mean(
        rec + self.kl_weight * kl)
    mse = jnp.mean(jnp.square(jax.nn.sigmoid(rec_logits) - x))
    return objective, {'g_loss': g_loss, 'reconstruction': jnp.mean(rec),
                       'kl': jnp.mean(kl), 'mse': mse,
                       'g_objective': objective}

  def loss(self, params: Params, x: jax.Array, y: jax.Array, key: jax.Array,
           step: jax.Array):
    """(G + E's objective, the terms of both sides) at fixed params."""
    del step
    k_disc, k_prior, k_enc = jax.random.split(key, 3)
    _, d_terms = self.discriminator_loss(
        params['discriminator'], params, x, y,
        self.sample_latent(k_disc, x.shape[0]))
    objective, g_terms = self.generator_loss(
        _generator_side(params), params['discriminator'], x, y,
        self.sample_latent(k_prior, x.shape[0]), k_enc)
    return objective, dict(d_terms, **g_terms)

  # Training.

  def discriminator_update(self, params: Params, opt_state, x: jax.Array,
                           y: jax.Array, key: jax.Array):
    """One Adam step of D; returns (params, opt_state, terms).

    Only params['discriminator'] and opt_state['discriminator'] change.
    """
    z = self.sample_latent(key, x.shape[0])
    grads, terms = jax.grad(self.discriminator_loss, has_aux=True)(
        params['discriminator'], params, x, y, z)
    updates, d_state = self.discriminator_optimizer().update(
        grads, opt_state['discriminator'], params['discriminator'])
    params = dict(params, discriminator=optax.apply_updates(
        params['discriminator'], updates))
    opt_state = dict(opt_state, discriminator=d_state)
    return params, opt_state, dict(terms,
                                   disc_grad_norm=optax.tree.norm(grads))

  def generator_update(self, params: Params, opt_state, x: jax.Array,
                       y: jax.Array, key: jax.Array):
    """One Adam step of G and E; returns (params, opt_state, objective,
    terms). params['discriminator'] and opt_state['discriminator'] stay."""
    k_prior, k_enc = jax.random.split(key)
    side = _generator_side(params)
    (objective, terms), grads = jax.value_and_grad(
        self.generator_loss, has_aux=True)(
            side, params['discriminator'], x, y,
            self.sample_latent(k_prior, x.shape[0]), k_enc)
    updates, g_state = self.generator_optimizer().update(
        grads, opt_state['generator'], side)
    params = dict(params, **optax.apply_updates(side, updates))
    opt_state = dict(opt_state, generator=g_state)
    return params, opt_state, objective, dict(
        terms, grad_norm=optax.tree.norm(grads))

  def update(self, params: Params, opt_state, x: jax.Array, y: jax.Array,
             key: jax.Array, step: jax.Array):
    """D's step, then G + E's against the updated D (the contract's update).

    Returns:
      (params, opt_state, G + E's objective, terms): `loss`'s terms (D's
      before its step, G + E's before theirs) plus 'disc_grad_norm' and
      'grad_norm' (G + E).
    """
    del step
    k_disc, k_gen = jax.random.split(key)
    params, opt_state, d_terms = self.discriminator_update(
        params, opt_state, x, y, k_disc)
    params, opt_state, objective, g_terms = self.generator_update(
        params, opt_state, x, y, k_gen)
    return params, opt_state, objective, dict(d_terms, **g_terms)

  # infer, generate, reconstruct, sample_latent and sample come from
  # GaussianLatentModel (E's posterior, G's logits).


def from_config(cfg, image_shape: tuple[int, int, int]) -> MSGAN:
  """The MS-GAN of config.stage2 `cfg` for images of `image_shape`."""
  check_network_config(cfg)
  check_image_shape(image_shape)
  width = stage2.positive_int(cfg, 'gan_disc_width')
  return MSGAN(
      channels=image_shape[-1], z_dim=cfg.z_dim, width=cfg.width,
      modulation=cfg.modulation, skips=bool(cfg.unet_skips),
      residual=bool(cfg.residual_output), reconstruction=cfg.reconstruction,
      r1_weight=stage2.number(cfg, 'gan_r1_weight', positive=False),
      recon_weight=stage2.number(cfg, 'gan_recon_weight', positive=False),
      kl_weight=stage2.number(cfg, 'gan_kl_weight', positive=False),
      learning_rate=float(cfg.learning_rate),
      disc_learning_rate=stage2.number(cfg, 'gan_disc_learning_rate',
                                       positive=True),
      disc_width=width)

"""MS-GAN: R1 against finite differences, losses against softplus forms by
hand, half-steps that touch only their own side, and a reconstruction that
learns through the encoder. Tiny 8x8 images, width 4, z of 4 dims."""

import functools
import types

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from msdr.errors import UserInputError
from msdr.models import ms_gan
from msdr.models import ms_vae
from msdr.models import stage2

SHAPE = (8, 8, 3)
BATCH = 2


# One model for every test, so `init` compiles once.
MODEL = ms_gan.MSGAN(channels=SHAPE[-1], z_dim=4, width=4, disc_width=4,
                     learning_rate=3e-3, disc_learning_rate=1e-3)


@functools.partial(jax.jit, static_argnums=(1,))
def _init(key, shape=SHAPE):
  return MODEL.init(key, shape)


def _batch(shape=SHAPE, n=BATCH, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=(n, *shape)).astype(np.float32)
  y = np.clip(x + 0.3 * rng.normal(size=x.shape), 0, 1).astype(np.float32)
  return x, y


def _np_softplus(t):
  t = np.asarray(t, np.float64)
  return np.log1p(np.exp(-np.abs(t))) + np.maximum(t, 0)


def _scaled_discriminator(params, factor):
  """D's params times `factor`, so its logits are far from 0 and nonlinear."""
  return dict(params, discriminator=jax.tree.map(lambda a: a * factor,
                                                 params['discriminator']))


def _equal_trees(a, b):
  return all(jax.tree.leaves(jax.tree.map(
      lambda u, v: bool(np.array_equal(np.asarray(u), np.asarray(v))), a, b)))


def _changed_leaves(a, b):
  return sum(jax.tree.leaves(jax.tree.map(
      lambda u, v: not np.array_equal(np.asarray(u), np.asarray(v)), a, b)))


class R1Test(absltest.TestCase):

  def test_matches_central_differences(self):
    model = MODEL
    params = _scaled_discriminator(_init(jax.random.key(0)), 20.0)
    x, y = _batch()
    eps, size = 1e-6, int(np.prod(SHAPE))
    basis = np.eye(size).reshape(size, *SHAPE)

    @jax.jit
    def both(d, x, y):
      # Every +eps and -eps perturbation of every example as one batch.
      images = jnp.concatenate([x[:, None] + eps * basis,
                                x[:, None] - eps * basis], 1)
      ys = jnp.broadcast_to(y[:, None], images.shape)
      out = model.discriminate(d, images.reshape(-1, *SHAPE),
                               ys.reshape(-1, *SHAPE))
      return model.real_logits_and_r1(d, x, y), out.reshape(BATCH, 2, size)

    with jax.enable_x64(True):
      d = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64),
                       params['discriminator'])
      (logits, r1), out = both(d, np.float64(x), np.float64(y))
      self.assertEqual(r1.dtype, jnp.float64)
    out = np.asarray(out)
    np.testing.assert_allclose(logits, out[:, 0, 0], atol=1e-4)  # ~D(x, y)
    grad = (out[:, 0] - out[:, 1]) / (2 * eps)
    norms = np.sum(grad ** 2, -1)
    self.assertGreater(np.mean(norms), 1e-3)  # a non-trivial gradient
    np.testing.assert_allclose(float(r1), np.mean(norms), rtol=1e-6)


class LossTest(absltest.TestCase):

  def test_nonsaturating_losses_by_hand(self):
    model = MODEL
    params = _scaled_discriminator(_init(jax.random.key(1)), 30.0)
    x, y = _batch(seed=1)
    z = model.sample_latent(jax.random.key(2), BATCH)
    d_params = params['discriminator']
    side = {k: params[k] for k in ('generator', 'encoder')}

    @jax.jit
    def everything(params, x, y, z):
      real = model.discriminate(d_params, x, y)
      fake = model.discriminate(d_params, model.generate(params, y, z), y)
      mean, logvar = model.posterior(params, x, y)
      return (real, fake, mean, logvar, model.logits(params, y, mean),
              model.discriminator_loss(d_params, params, x, y, z),
              model.generator_loss(side, d_params, x, y, z, None))

    (real, fake, mean, logvar, logits, (d_obj, d_terms),
     (g_obj, g_terms)) = everything(params, x, y, z)
    real, fake, mean, logvar, logits = (
        np.asarray(a, np.float64) for a in (real, fake, mean, logvar, logits))
    self.assertGreater(np.max(np.abs(np.concatenate([real, fake]))), 0.5)

    d_loss = np.mean(_np_softplus(-real)) + np.mean(_np_softplus(fake))
    np.testing.assert_allclose(d_terms['d_loss'], d_loss, rtol=1e-5)
    np.testing.assert_allclose(d_terms['d_real'], np.mean(real), rtol=1e-5)
    np.testing.assert_allclose(d_terms['d_fake'], np.mean(fake), rtol=1e-5)
    np.testing.assert_allclose(
        d_obj, d_loss + 0.5 * model.r1_weight * float(d_terms['r1']),
        rtol=1e-5)

    g_loss = np.mean(_np_softplus(-fake))
    np.testing.assert_allclose(g_terms['g_loss'], g_loss, rtol=1e-5)
    # With key None the code is E's mean; BCE = softplus(l) - x l, summed.
    rec = np.sum((_np_softplus(logits) - x * logits).reshape(BATCH, -1), -1)
    kl = 0.5 * np.sum(mean ** 2 + np.exp(logvar) - 1 - logvar, -1)
    np.testing.assert_allclose(g_terms['reconstruction'], np.mean(rec),
                               rtol=1e-5)
    np.testing.assert_allclose(g_terms['kl'], np.mean(kl), rtol=1e-4)
    expected = g_loss + model.recon_weight / np.prod(SHAPE) * np.mean(
        rec + model.kl_weight * kl)
    np.testing.assert_allclose(g_obj, expected, rtol=1e-5)


class HalfStepTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model = MODEL
    cls.params = _init(jax.random.key(3))
    cls.opt_state = cls.model.optimizer().init(cls.params)
    cls.x, cls.y = _batch(seed=3)

  def test_discriminator_update_touches_only_discriminator(self):
    params, opt_state, terms = jax.jit(self.model.discriminator_update)(
        self.params, self.opt_state, self.x, self.y, jax.random.key(4))
    for side in ('generator', 'encoder'):
      self.assertTrue(_equal_trees(params[side], self.params[side]), side)
    self.assertTrue(_equal_trees(opt_state['generator'],
                                 self.opt_state['generator']))
    self.assertEqual(_changed_leaves(params['discriminator'],
                                     self.params['discriminator']),
                     len(jax.tree.leaves(params['discriminator'])))
    self.assertGreater(_changed_leaves(opt_state['discriminator'],
                                       self.opt_state['discriminator']), 0)
    self.assertContainsSubset({'d_loss', 'r1', 'd_real', 'd_fake'}, terms)

  def test_generator_update_touches_only_generator_and_encoder(self):
    params, opt_state, objective, terms = jax.jit(
        self.model.generator_update)(
            self.params, self.opt_state, self.x, self.y, jax.random.key(5))
    self.assertTrue(_equal_trees(params['discriminator'],
                                 self.params['discriminator']))
    self.assertTrue(_equal_trees(opt_state['discriminator'],
                                 self.opt_state['discriminator']))
    for side in ('generator', 'encoder'):
      self.assertGreater(
          _changed_leaves(params[side], self.params[side]), 0, side)
    self.assertGreater(_changed_leaves(opt_state['generator'],
                                       self.opt_state['generator']), 0)
    np.testing.assert_allclose(objective, terms['g_objective'])

  def test_optimizer_update_is_not_used(self):
    with self.assertRaises(NotImplementedError):
      self.model.optimizer().update(self.params, self.opt_state, self.params)


class TrainTest(absltest.TestCase):

  def test_updates_reconstruct_through_the_encoder(self):
    # y is the same grey image for every example, so G(y, E(x - y)) can only
    # tell the four images apart through the code E infers.
    model = MODEL
    rng = np.random.default_rng(0)
    x = (rng.uniform(size=(4, *SHAPE)) > 0.5).astype(np.float32)
    y = np.full_like(x, 0.5)
    params = _init(jax.random.key(0))
    opt_state = model.optimizer().init(params)

    @jax.jit
    def mse(p):
      return jnp.mean(jnp.square(model.reconstruct(p, x, y) - x))

    # The best output that ignores z: each pixel's batch mean.
    blind = float(np.mean(np.square(x - x.mean(0))))
    before = float(mse(params))
    update = jax.jit(model.update)
    key = jax.random.key(1)
    for step in range(100):
      params, opt_state, objective, terms = update(
          params, opt_state, x, y, jax.random.fold_in(key, step), step)
    after = float(mse(params))
    self.assertGreater(before, blind)
    self.assertLess(after, 0.5 * blind, (before, after, blind))
    self.assertTrue(np.isfinite(float(objective)))
    # Shapes only (eval_shape compiles nothing).
    _, loss_terms = jax.eval_shape(model.loss, params, x, y, key, 0)
    self.assertContainsSubset(set(loss_terms), set(terms))
    self.assertEqual(
        jax.eval_shape(model.sample, params, y, jax.random.key(2)).shape,
        x.shape)
    self.assertEqual(jax.eval_shape(model.infer, params, x, y, key).shape,
                     (4, 4))


class ConfigTest(parameterized.TestCase):

  def _cfg(self, **overrides):
    fields = dict(stage2.SHARED_DEFAULTS, **ms_gan.DEFAULTS)
    fields.update(overrides)
    return types.SimpleNamespace(**fields)

  def test_defaults(self):
    for name in ms_gan.DEFAULTS:
      self.assertTrue(name in ms_vae.NETWORK_DEFAULTS
                      or name.startswith('gan_'), name)
    self.assertEqual(ms_gan.DEFAULTS['gan_r1_weight'], 10.0)
    model = ms_gan.from_config(self._cfg(z_dim=7, gan_disc_width=16),
                               (16, 16, 3))
    self.assertEqual((model.name, model.channels, model.z_dim,
                      model.disc_width, model.r1_weight),
                     ('ms_gan', 3, 7, 16, 10.0))

  @parameterized.parameters(
      dict(gan_r1_weight=-1.0), dict(gan_r1_weight=float('nan')),
      dict(gan_recon_weight=-0.5), dict(gan_kl_weight='0.1'),
      dict(gan_disc_learning_rate=0.0), dict(gan_disc_learning_rate=True),
      dict(gan_disc_width=0), dict(gan_disc_width=8.0),
      dict(width=0), dict(modulation='none'), dict(reconstruction='l1'))
  def test_bad_field(self, **overrides):
    with self.assertRaises(UserInputError):
      ms_gan.from_config(self._cfg(**overrides), (8, 8, 1))

  @parameterized.parameters((8, 16, 1), (12, 12, 3))
  def test_bad_image_shape(self, *shape):
    with self.assertRaises(UserInputError):
      ms_gan.from_config(self._cfg(), shape)


if __name__ == '__main__':
  absltest.main()

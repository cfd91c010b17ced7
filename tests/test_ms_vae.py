"""MS-VAE's conditional ELBO against float64 NumPy written from the formulas,
its network starting at y, and its config errors."""

from absl.testing import absltest
import jax
import ml_collections
import numpy as np

from msdr.errors import UserInputError
from msdr.models import ms_vae
from msdr.models import stage2

SHAPE = (8, 8, 3)


def tiny(**kwargs):
  return ms_vae.MSVAE(channels=3, z_dim=4, width=4, **kwargs)


def batch(seed=0, n=5):
  rng = np.random.default_rng(seed)
  x = rng.random((n,) + SHAPE).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.2, x.shape), 0.01, 0.99).astype(np.float32)
  return x, y


def perturbed(model, key):
  """Parameters away from the init (the last layer starts at zero)."""
  params = model.init(key, SHAPE)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
  return jax.tree.unflatten(tree, [
      p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


class MSVAETest(absltest.TestCase):

  def test_elbo_terms_match_numpy(self):
    for reconstruction, beta in (('bernoulli', 1.0), ('gaussian', 0.5)):
      model = tiny(reconstruction=reconstruction, beta=beta)
      params = perturbed(model, jax.random.key(0))
      x, y = batch()
      key = jax.random.key(7)
      objective, terms = model.loss(params, x, y, key, 0)

      mean, logvar = (np.asarray(a, np.float64)
                      for a in model.posterior(params, x, y))
      eps = np.asarray(jax.random.normal(key, mean.shape), np.float64)
      z = mean + np.exp(0.5 * logvar) * eps
      logits = np.asarray(model.logits(params, y, z.astype(np.float32)),
                          np.float64).reshape(len(x), -1)
      t = x.reshape(len(x), -1).astype(np.float64)
      p = 1.0 / (1.0 + np.exp(-logits))
      if reconstruction == 'bernoulli':
        rec = np.sum(-t * np.log(p) - (1 - t) * np.log1p(-p), axis=1)
      else:
        rec = np.sum((t - p) ** 2, axis=1)
      kl = 0.5 * np.sum(mean ** 2 + np.exp(logvar) - 1.0 - logvar, axis=1)
      np.testing.assert_allclose(objective, np.mean(rec + beta * kl),
                                 rtol=1e-4)
      np.testing.assert_allclose(terms['reconstruction'], rec.mean(),
                                 rtol=1e-4)
      np.testing.assert_allclose(terms['kl'], kl.mean(), rtol=1e-4,
                                 atol=1e-6)
      np.testing.assert_allclose(terms['elbo'], -np.mean(rec + kl),
                                 rtol=1e-4)
      np.testing.assert_allclose(terms['mse'], np.mean((t - p) ** 2),
                                 rtol=1e-4)

  def test_decoder_starts_at_y_and_infer_is_the_posterior_mean(self):
    model = tiny()
    params = model.init(jax.random.key(1), SHAPE)
    x, y = batch(1)
    np.testing.assert_allclose(
        model.reconstruct(params, x, y), y, atol=1e-5)  # residual output
    mean, _ = model.posterior(params, x, y)
    np.testing.assert_array_equal(model.infer(params, x, y), mean)
    z = model.sample_latent(jax.random.key(2), 3, temperature=0.0)
    np.testing.assert_array_equal(z, np.zeros((3, 4)))

  def test_bad_config_values(self):
    fields = dict(stage2.SHARED_DEFAULTS, **ms_vae.DEFAULTS)
    for name, value in (('width', 0), ('vae_beta', -1.0),
                        ('modulation', 'pixel'), ('reconstruction', 'l1')):
      cfg = ml_collections.ConfigDict(dict(fields, **{name: value}))
      with self.assertRaisesRegex(UserInputError, name):
        ms_vae.from_config(cfg, SHAPE)
    cfg = ml_collections.ConfigDict(fields)
    with self.assertRaisesRegex(UserInputError, 'power-of-two'):
      ms_vae.from_config(cfg, (12, 12, 3))


if __name__ == '__main__':
  absltest.main()

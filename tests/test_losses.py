"""Per-example losses (`msdr.models.losses`) and the stage-1 objectives.

Everything is compared with float64 NumPy written here from the formulas, not
with the code's own output:

* `reparameterize`: its shift/scale structure, moments of a large sample and
  its exact gradients; `gaussian_kl` against the closed-form KL of two
  Gaussians; `bernoulli_loss` / `gaussian_loss` against
  x softplus(-l) + (1 - x) softplus(l) and (x - expit(l))^2 in float64,
  including logits of +-50 and +-1e3 where a naive BCE overflows in float32.
* `stage1.Stage1Model.loss` for all six methods: mean, logvar, the sample c
  (same key split) and the logits are taken from the model's own encoder and
  decoder (tested in test_networks.py) and every objective and term is then
  recomputed in NumPy: reconstruction, analytic KL, the beta-TCVAE MWS / MSS
  minibatch estimators (Chen et al. 2018, weights written from the paper), the
  FactorVAE discriminator (a NumPy MLP from its parameters), DIP-VAE I / II
  covariances and the AnnealedVAE capacity.
* FactorVAE's stop-gradient split (checked with JAX gradients of terms the
  test writes itself), `permute_dims`, the optimizers (against a NumPy Adam)
  and the config errors.

Networks are run op by op (not jitted): the per-op compiles are shared by
every method here, whereas each jitted loss would compile the whole network
again.
"""

import functools
import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import special

from configs import common
from msdr.errors import UserInputError
from msdr.models import losses
from msdr.models import stage1

_BATCH = 4
_DATASET_SIZE = 50
_LATENT = 10  # the configs' default latent_dim
_STEP = 7


# -- float64 NumPy references ------------------------------------------------


def _f64(a):
  return np.asarray(a, np.float64)


def np_bce(logits, x):
  """Per-example summed -[x log s(l) + (1 - x) log(1 - s(l))], s = sigmoid.

  -log s(l) = softplus(-l) = logaddexp(0, -l) and -log(1 - s(l)) =
  softplus(l), both exact in float64 for any l.
  """
  logits, x = _f64(logits), _f64(x)
  per_pixel = x * np.logaddexp(0.0, -logits) + (1 - x) * np.logaddexp(
      0.0, logits)
  return per_pixel.reshape(per_pixel.shape[0], -1).sum(-1)


def np_squared_error(logits, x):
  err = (_f64(x) - special.expit(_f64(logits))) ** 2
  return err.reshape(err.shape[0], -1).sum(-1)


def np_kl(mean, logvar):
  """0.5 sum(mean^2 + exp(logvar) - 1 - logvar), per example."""
  mean, logvar = _f64(mean), _f64(logvar)
  return 0.5 * np.sum(mean ** 2 + np.exp(logvar) - 1.0 - logvar, axis=-1)


def np_log_normal(x, mean, logvar):
  return -0.5 * (math.log(2 * math.pi) + logvar
                 + (x - mean) ** 2 / np.exp(logvar))


def np_log_weights(m, n, estimator):
  """log W[j, i] of Chen et al. (2018): MWS 1/(N M); MSS with K = M - 1:
  W[j, j] = 1/N, W[j, (j+1) % M] = (N - K)/(N K), every other entry 1/K."""
  if estimator == 'mws':
    return np.full((m, m), -math.log(n * m))
  k = m - 1
  w = np.full((m, m), 1.0 / k)
  for j in range(m):
    w[j, (j + 1) % m] = (n - k) / (n * k)
    w[j, j] = 1.0 / n
  return np.log(w)


def np_decomposed_kl(c, mean, logvar, n, estimator):
  """mi, tc, dwkl of beta-TCVAE with the minibatch estimates of q(c)."""
  c, mean, logvar = _f64(c), _f64(mean), _f64(logvar)
  m = c.shape[0]
  # mat[j, i, d] = log q(c_jd | x_i)
  mat = np_log_normal(c[:, None, :], mean[None], logvar[None])
  log_w = np_log_weights(m, n, estimator)
  log_qzx = np.array([mat[j, j].sum() for j in range(m)])
  log_pz = np_log_normal(c, 0.0, 0.0).sum(-1)
  log_qz = special.logsumexp(log_w + mat.sum(-1), axis=1)
  log_qz_dims = special.logsumexp(log_w[:, :, None] + mat, axis=1).sum(-1)
  return {'mi': np.mean(log_qzx - log_qz),
          'tc': np.mean(log_qz - log_qz_dims),
          'dwkl': np.mean(log_qz_dims - log_pz)}


def np_discriminator(params, c):
  """FactorVAE's MLP: 6 x (dense 1000, leaky ReLU 0.2), dense 2."""
  h = _f64(c)
  for i in range(7):
    layer = params[f'Dense_{i}']
    h = h @ _f64(layer['kernel']) + _f64(layer['bias'])
    if i < 6:
      h = np.where(h > 0, h, 0.2 * h)
  return h


def np_log_softmax(d):
  return d - special.logsumexp(d, axis=1, keepdims=True)


def np_biased_cov(a):
  centred = a - a.mean(axis=0, keepdims=True)
  return centred.T @ centred / a.shape[0]


def np_dip(cov, lambda_od, lambda_d):
  off = cov - np.diag(np.diag(cov))
  return lambda_od * np.sum(off ** 2) + lambda_d * np.sum(
      (np.diag(cov) - 1.0) ** 2)


class NumpyAdam:
  """Adam (Kingma & Ba) in float64, bias-corrected, eps outside the sqrt."""

  def __init__(self, lr, b1, b2, eps=1e-8):
    self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
    self.m = self.v = 0.0
    self.t = 0

  def update(self, g):
    g = _f64(g)
    self.t += 1
    self.m = self.b1 * self.m + (1 - self.b1) * g
    self.v = self.b2 * self.v + (1 - self.b2) * g ** 2
    m_hat = self.m / (1 - self.b1 ** self.t)
    v_hat = self.v / (1 - self.b2 ** self.t)
    return -self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


# -- fixtures ------------------------------------------------------------------


def _stage1_config(method, **overrides):
  return common.base_config('dsprites', method, 'smoke', **overrides).stage1


def _model(method, channels=1, dataset_size=_DATASET_SIZE, **overrides):
  return stage1.from_config(_stage1_config(method, **overrides),
                            channels=channels, dataset_size=dataset_size)


@functools.lru_cache(maxsize=None)
def _params(channels):
  """Random parameters of the shapes `init` makes (He-scaled kernels, random
  biases), with a posterior spread enough for the estimators to matter."""
  model = _model('factor_vae', channels=channels)
  shapes = jax.eval_shape(lambda k: model.init(k, (64, 64, channels)),
                          jax.random.key(0))
  rng = np.random.default_rng(channels)

  def draw(s):
    if len(s.shape) == 1:
      return (0.1 * rng.normal(size=s.shape)).astype(np.float32)
    fan_in = int(np.prod(s.shape[:-1]))
    return (math.sqrt(2.0 / fan_in) * rng.normal(size=s.shape)).astype(
        np.float32)

  params = jax.tree.map(draw, shapes)
  enc = params['encoder']
  enc['mean']['kernel'] = 2.0 * enc['mean']['kernel']
  enc['logvar']['kernel'] = 0.3 * enc['logvar']['kernel']
  enc['logvar']['bias'] = (rng.uniform(-2.5, 0.0, size=_LATENT)).astype(
      np.float32)
  return params


def _vae_params(channels):
  params = _params(channels)
  return {'encoder': params['encoder'], 'decoder': params['decoder']}


@functools.lru_cache(maxsize=None)
def _batch(channels):
  """Images, key and the float64 pieces every objective is built from."""
  rng = np.random.default_rng(100 + channels)
  x = rng.uniform(size=(_BATCH, 64, 64, channels)).astype(np.float32)
  key = jax.random.key(42)
  model = _model('beta_vae', channels=channels)
  params = _vae_params(channels)
  # As in Stage1Model.loss: one split, the first half samples c.
  k_sample, k_method = jax.random.split(key)
  mean, logvar = (_f64(a) for a in model.encode(params, x))
  eps = _f64(jax.random.normal(k_sample, mean.shape, jnp.float32))
  c = mean + np.exp(0.5 * logvar) * eps
  logits = _f64(model.decode(params, jnp.asarray(c, jnp.float32)))
  return dict(x=x, key=key, k_method=k_method, mean=mean, logvar=logvar, c=c,
              logits=logits)


def _terms(model, params, x, key, step=_STEP):
  objective, terms = model.loss(params, x, key, step)
  return float(objective), {k: float(v) for k, v in terms.items()}


def _assert_close(test, got, want, rtol=1e-4, atol=1e-4, name=''):
  test.assertTrue(np.isfinite(got), msg=f'{name}: {got}')
  np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)


# -- losses.py -----------------------------------------------------------------


class ReparameterizeTest(absltest.TestCase):

  def test_shift_and_scale_of_one_noise_draw(self):
    key = jax.random.key(0)
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(3, 5)).astype(np.float32)
    logvar = rng.uniform(-4, 2, size=(3, 5)).astype(np.float32)
    c = _f64(losses.reparameterize(key, mean, logvar))
    c0 = _f64(losses.reparameterize(key, np.zeros_like(mean),
                                    np.zeros_like(logvar)))
    self.assertEqual(c.shape, (3, 5))
    # Same key: the same standard-normal draw, shifted and scaled.
    np.testing.assert_allclose(c, _f64(mean) + np.exp(0.5 * _f64(logvar)) * c0,
                               rtol=1e-5, atol=1e-6)
    other = _f64(losses.reparameterize(jax.random.key(1), mean, logvar))
    self.assertFalse(np.allclose(c, other))

  def test_sample_moments(self):
    n = 100_000
    mean = np.full((n, 2), [1.5, -3.0], np.float32)
    logvar = np.full((n, 2), [math.log(0.25), math.log(4.0)], np.float32)
    c = _f64(jax.jit(losses.reparameterize)(jax.random.key(3), mean, logvar))
    # Standard errors: std / sqrt(n) <= 0.0064 for the mean; ~0.45% of the
    # variance.
    np.testing.assert_allclose(c.mean(0), [1.5, -3.0], atol=0.03)
    np.testing.assert_allclose(c.var(0), [0.25, 4.0], rtol=0.03)
    self.assertLess(abs(np.corrcoef(c.T)[0, 1]), 0.02)

  def test_gradients(self):
    # d/dmean sum(r c) = r; d/dlogvar sum(r c) = 0.5 r (c - mean).
    key = jax.random.key(5)
    rng = np.random.default_rng(5)
    mean = rng.normal(size=(4, 3)).astype(np.float32)
    logvar = rng.uniform(-2, 1, size=(4, 3)).astype(np.float32)
    r = rng.normal(size=(4, 3)).astype(np.float32)
    g_mean, g_logvar = jax.grad(
        lambda m, lv: jnp.sum(r * losses.reparameterize(key, m, lv)),
        argnums=(0, 1))(mean, logvar)
    c = _f64(losses.reparameterize(key, mean, logvar))
    np.testing.assert_allclose(g_mean, r, rtol=1e-6)
    np.testing.assert_allclose(g_logvar, 0.5 * r * (c - mean), rtol=1e-5,
                               atol=1e-6)


class GaussianKlTest(absltest.TestCase):

  def test_matches_closed_form(self):
    # KL(N(m, s^2) || N(0, 1)) = -log s + (s^2 + m^2) / 2 - 1/2 per dimension.
    rng = np.random.default_rng(1)
    mean = rng.normal(size=(5, 7)) * 2
    logvar = rng.uniform(-6, 3, size=(5, 7))
    got = _f64(losses.gaussian_kl(jnp.float32(mean), jnp.float32(logvar)))
    self.assertEqual(got.shape, (5,))
    s = np.exp(0.5 * logvar)
    want = np.sum(-np.log(s) + (s ** 2 + mean ** 2) / 2 - 0.5, axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-5)

  def test_zero_only_at_the_prior(self):
    got = _f64(losses.gaussian_kl(jnp.zeros((2, 3)), jnp.zeros((2, 3))))
    np.testing.assert_array_equal(got, [0.0, 0.0])
    got = _f64(losses.gaussian_kl(jnp.float32([[1e-2, 0.0]]),
                                  jnp.float32([[0.0, -1e-1]])))
    self.assertGreater(got[0], 0.0)

  def test_extreme_logvar(self):
    mean = np.zeros((1, 2), np.float32)
    logvar = np.float32([[-30.0, 20.0]])
    got = float(losses.gaussian_kl(mean, logvar)[0])
    want = 0.5 * (30.0 - 1.0 + np.exp(20.0) - 1.0 - 20.0)
    np.testing.assert_allclose(got, want, rtol=1e-5)


class BernoulliLossTest(parameterized.TestCase):

  def test_matches_float64_cross_entropy(self):
    rng = np.random.default_rng(2)
    logits = (3 * rng.normal(size=(3, 8, 6, 2))).astype(np.float32)
    x = rng.uniform(size=(3, 8, 6, 2)).astype(np.float32)
    got = _f64(losses.bernoulli_loss(logits, x))
    self.assertEqual(got.shape, (3,))
    np.testing.assert_allclose(got, np_bce(logits, x), rtol=1e-5)

  def test_extreme_logits(self):
    logits = np.float32([[50.0, -50.0, 1e3, -1e3, 1e3, -1e3, 0.0]])
    for value in (0.0, 0.3, 1.0):
      x = np.full_like(logits, value)
      # A naive float32 BCE overflows here (log(0) or 0 * inf).
      s = jax.nn.sigmoid(jnp.asarray(logits))
      naive = -(x * jnp.log(s) + (1 - x) * jnp.log(1 - s))
      self.assertFalse(np.all(np.isfinite(naive)))
      got = float(losses.bernoulli_loss(logits, x)[0])
      want = float(np_bce(logits, x)[0])
      self.assertTrue(np.isfinite(got))
      np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5,
                                 err_msg=f'x={value}')
    # Per pixel: a confident right answer costs ~0, a wrong one |logit|.
    per_pixel = [float(losses.bernoulli_loss(np.float32([[l]]),
                                             np.float32([[t]]))[0])
                 for l, t in ((1e3, 1.0), (-1e3, 0.0), (1e3, 0.0),
                              (-1e3, 1.0))]
    np.testing.assert_allclose(per_pixel, [0.0, 0.0, 1e3, 1e3], atol=1e-6)

  def test_gradient_is_sigmoid_minus_target(self):
    # Excludes a logit of exactly 0: see the expected failure below.
    logits = np.float32([[-1e3, -50.0, -2.0, -1e-6, 1e-6, 0.5, 50.0, 1e3]])
    x = np.float32([[0.0, 1.0, 0.3, 0.7, 0.7, 1.0, 0.0, 0.2]])
    grad = _f64(jax.grad(lambda l: jnp.sum(losses.bernoulli_loss(l, x)))(
        logits))
    want = special.expit(_f64(logits)) - _f64(x)
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-6)


  # At a logit of exactly 0 (dead ReLUs and a zero bias, as at init) the
  # gradient must still be sigmoid(0) - x; a max/abs formulation gets -x.
  def test_gradient_at_zero_logit(self):
    x = np.float32([[0.0, 0.7, 1.0]])
    grad = _f64(jax.grad(lambda l: jnp.sum(losses.bernoulli_loss(l, x)))(
        np.zeros((1, 3), np.float32)))
    np.testing.assert_allclose(grad, 0.5 - _f64(x), atol=1e-6)


class GaussianLossTest(absltest.TestCase):

  def test_matches_float64_squared_error(self):
    rng = np.random.default_rng(3)
    logits = (3 * rng.normal(size=(2, 5, 4, 3))).astype(np.float32)
    logits[0, 0, 0] = [50.0, -1e3, 1e3]
    x = rng.uniform(size=(2, 5, 4, 3)).astype(np.float32)
    got = _f64(losses.gaussian_loss(logits, x))
    self.assertEqual(got.shape, (2,))
    np.testing.assert_allclose(got, np_squared_error(logits, x), rtol=1e-5)


class ReconstructionLossTest(absltest.TestCase):

  def test_names(self):
    self.assertIs(losses.reconstruction_loss('bernoulli'),
                  losses.bernoulli_loss)
    self.assertIs(losses.reconstruction_loss('gaussian'),
                  losses.gaussian_loss)

  def test_unknown_name_lists_valid_ones(self):
    with self.assertRaisesRegex(
        UserInputError, "unknown reconstruction loss 'l2'; valid: bernoulli, "
        'gaussian'):
      losses.reconstruction_loss('l2')
    self.assertTrue(issubclass(UserInputError, ValueError))


# -- stage1.py -----------------------------------------------------------------


class Stage1InitTest(parameterized.TestCase):

  @parameterized.parameters(('beta_vae', 1), ('factor_vae', 3))
  def test_parameter_tree(self, method, channels):
    model = _model(method, channels=channels)
    shapes = jax.eval_shape(lambda k: model.init(k, (64, 64, channels)),
                            jax.random.key(0))
    want_keys = {'encoder', 'decoder'} | (
        {'discriminator'} if method == 'factor_vae' else set())
    self.assertEqual(set(shapes), want_keys)
    self.assertEqual(shapes['encoder']['ConvS2_0']['kernel'].shape,
                     (4, 4, channels, 32))
    self.assertEqual(shapes['encoder']['mean']['kernel'].shape, (256, _LATENT))
    self.assertEqual(shapes['decoder']['Dense_0']['kernel'].shape,
                     (_LATENT, 256))
    self.assertEqual(shapes['decoder']['ConvTransposeS2_3']['kernel'].shape,
                     (4, 4, 32, channels))
    if method == 'factor_vae':
      disc = jax.tree.map(lambda a: a.shape, shapes['discriminator'])
      want = {f'Dense_{i}': {'kernel': (1000, 1000), 'bias': (1000,)}
              for i in range(1, 6)}
      want['Dense_0'] = {'kernel': (_LATENT, 1000), 'bias': (1000,)}
      want['Dense_6'] = {'kernel': (1000, 2), 'bias': (2,)}
      self.assertEqual(disc, want)


class Stage1ObjectiveTest(parameterized.TestCase):
  """Every method's objective and terms against float64 NumPy."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    _batch(1)  # compiles the networks' ops once (~5-10 s), for every test

  def _common_terms(self, terms, b, recon_fn=np_bce):
    recon = np.mean(recon_fn(b['logits'], b['x']))
    kl = np.mean(np_kl(b['mean'], b['logvar']))
    _assert_close(self, terms['reconstruction'], recon, name='reconstruction')
    _assert_close(self, terms['kl'], kl, name='kl')
    return recon, kl

  def test_fixture_is_not_degenerate(self):
    b = _batch(1)
    self.assertGreater(np.std(b['mean'], axis=0).min(), 0.05)
    self.assertTrue(np.all(b['logvar'] < 1.0))
    self.assertGreater(np.std(b['logits']), 0.05)

  def test_beta_vae(self):
    b = _batch(1)
    model = _model('beta_vae', beta=3.0)
    objective, terms = _terms(model, _vae_params(1), b['x'], b['key'])
    self.assertEqual(set(terms), {'reconstruction', 'kl', 'loss'})
    recon, kl = self._common_terms(terms, b)
    _assert_close(self, terms['loss'], recon + 3.0 * kl, name='loss')
    _assert_close(self, objective, recon + 3.0 * kl, name='objective')

  def test_beta_vae_gaussian_rgb(self):
    b = _batch(3)
    model = _model('beta_vae', channels=3, beta=2.0,
                   reconstruction='gaussian')
    objective, terms = _terms(model, _vae_params(3), b['x'], b['key'])
    recon, kl = self._common_terms(terms, b, recon_fn=np_squared_error)
    _assert_close(self, objective, recon + 2.0 * kl, name='objective')
    _assert_close(self, terms['loss'], recon + 2.0 * kl, name='loss')

  @parameterized.parameters('mws', 'mss')
  def test_beta_tcvae(self, estimator):
    b = _batch(1)
    alpha, beta, gamma = 0.7, 5.0, 1.3
    model = _model('beta_tcvae', alpha=alpha, beta=beta, gamma=gamma,
                   estimator=estimator)
    objective, terms = _terms(model, _vae_params(1), b['x'], b['key'])
    self.assertEqual(set(terms), {'reconstruction', 'kl', 'loss', 'mi', 'tc',
                                  'dwkl'})
    recon, _ = self._common_terms(terms, b)
    want = np_decomposed_kl(b['c'], b['mean'], b['logvar'], _DATASET_SIZE,
                            estimator)
    for name in ('mi', 'tc', 'dwkl'):
      _assert_close(self, terms[name], want[name], name=name)
    loss = (recon + alpha * want['mi'] + beta * want['tc']
            + gamma * want['dwkl'])
    _assert_close(self, terms['loss'], loss, name='loss')
    _assert_close(self, objective, loss, name='objective')

  def test_beta_tcvae_estimators_differ(self):
    # The two weightings are distinct estimates on this batch (so the
    # parameterized test above really checks two different formulas).
    b = _batch(1)
    mws = np_decomposed_kl(b['c'], b['mean'], b['logvar'], _DATASET_SIZE,
                           'mws')
    mss = np_decomposed_kl(b['c'], b['mean'], b['logvar'], _DATASET_SIZE,
                           'mss')
    self.assertGreater(abs(mws['mi'] - mss['mi']), 1e-2)

  def test_factor_vae(self):
    b = _batch(1)
    gamma = 7.0
    model = _model('factor_vae', gamma=gamma)
    params = _params(1)
    objective, terms = _terms(model, params, b['x'], b['key'])
    self.assertEqual(set(terms), {'reconstruction', 'kl', 'loss', 'tc',
                                  'discriminator_loss'})
    recon, kl = self._common_terms(terms, b)
    disc = params['discriminator']
    d_real = np_discriminator(disc, b['c'])
    # The per-column order permute_dims draws from k_method (it depends on the
    # key and shape only), applied to the float64 c.
    rows = np.broadcast_to(np.arange(_BATCH, dtype=np.float32)[:, None],
                           b['c'].shape)
    order = np.asarray(stage1.permute_dims(b['k_method'], jnp.asarray(rows)))
    order = order.astype(np.int64)
    c_perm = np.take_along_axis(b['c'], order, axis=0)
    d_perm = np_discriminator(disc, c_perm)
    tc = np.mean(d_real[:, 0] - d_real[:, 1])
    disc_loss = -0.5 * (np.mean(np_log_softmax(d_real)[:, 0])
                        + np.mean(np_log_softmax(d_perm)[:, 1]))
    self.assertGreater(abs(tc), 1e-2)  # the discriminator is not trivial
    _assert_close(self, terms['tc'], tc, name='tc')
    _assert_close(self, terms['discriminator_loss'], disc_loss,
                  name='discriminator_loss')
    vae = recon + kl + gamma * tc
    _assert_close(self, terms['loss'], vae, name='loss')
    _assert_close(self, objective, vae + disc_loss, name='objective')

  @parameterized.parameters('dip_vae_i', 'dip_vae_ii')
  def test_dip_vae(self, method):
    b = _batch(1)
    lambda_od, lambda_d = 3.0, 20.0
    model = _model(method, lambda_od=lambda_od, lambda_d=lambda_d)
    objective, terms = _terms(model, _vae_params(1), b['x'], b['key'])
    self.assertEqual(set(terms), {'reconstruction', 'kl', 'loss', 'dip'})
    recon, kl = self._common_terms(terms, b)
    cov = np_biased_cov(b['mean'])
    if method == 'dip_vae_ii':
      cov = cov + np.diag(np.mean(np.exp(b['logvar']), axis=0))
    dip = np_dip(cov, lambda_od, lambda_d)
    _assert_close(self, terms['dip'], dip, name='dip')
    _assert_close(self, terms['loss'], recon + kl + dip, name='loss')
    _assert_close(self, objective, recon + kl + dip, name='objective')

  def test_annealed_vae(self):
    b = _batch(1)
    gamma, c_max, threshold = 10.0, 20.0, 1000
    model = _model('annealed_vae', gamma=gamma, c_max=c_max,
                   iteration_threshold=threshold)
    kl = np.mean(np_kl(b['mean'], b['logvar']))
    # Before the threshold the capacity ramps linearly, after it stays c_max;
    # steps chosen so that kl - C changes sign between them.
    self.assertGreater(kl, 2.0)
    self.assertLess(kl, c_max)
    for step, capacity in ((100, 2.0), (1000, 20.0), (250_000, 20.0)):
      objective, terms = _terms(model, _vae_params(1), b['x'], b['key'],
                                step=jnp.int32(step))
      self.assertEqual(set(terms), {'reconstruction', 'kl', 'loss',
                                    'capacity'})
      recon, _ = self._common_terms(terms, b)
      _assert_close(self, terms['capacity'], capacity, rtol=1e-6,
                    name=f'capacity@{step}')
      loss = recon + gamma * abs(kl - capacity)
      _assert_close(self, terms['loss'], loss, name=f'loss@{step}')
      _assert_close(self, objective, loss, name=f'objective@{step}')


class FactorVaeTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    _batch(1)  # shared with Stage1ObjectiveTest (cached)

  def test_permute_dims_permutes_each_column(self):
    rng = np.random.default_rng(0)
    c = rng.permutation(64 * 5).reshape(64, 5).astype(np.float32)
    out = np.asarray(stage1.permute_dims(jax.random.key(0), c))
    self.assertEqual(out.shape, c.shape)
    orders = []
    for d in range(5):
      np.testing.assert_array_equal(np.sort(out[:, d]), np.sort(c[:, d]))
      orders.append([int(np.flatnonzero(c[:, d] == v)[0]) for v in out[:, d]])
    # Independent shuffles: no two columns share a permutation, none is the
    # identity (each event has probability ~1/64!).
    self.assertLen({tuple(o) for o in orders}, 5)
    for o in orders:
      self.assertNotEqual(o, list(range(64)))
    again = np.asarray(stage1.permute_dims(jax.random.key(0), c))
    np.testing.assert_array_equal(out, again)
    other = np.asarray(stage1.permute_dims(jax.random.key(1), c))
    self.assertFalse(np.array_equal(out, other))

  def _factor_vae_setup(self):
    b = _batch(1)
    model = _model('factor_vae', gamma=7.0)
    params = _params(1)

    def loss_of(replace):
      return lambda sub: model.loss(replace(sub), b['x'], b['key'], _STEP)

    return b, model, params, loss_of

  def test_discriminator_gradient_is_its_own_loss(self):
    b, model, params, loss_of = self._factor_vae_setup()
    x, key = b['x'], b['key']
    disc_module = stage1.Discriminator()

    def reference_disc_loss(pd):
      # The discriminator's loss alone, on the model's own c (reparameterize
      # and permute_dims are tested above and in losses): real samples are
      # class 0, dimension-wise permuted ones class 1.
      k_sample, k_method = jax.random.split(key)
      mean, logvar = model.encode(params, x)
      c = losses.reparameterize(k_sample, mean, logvar)
      real = disc_module.apply({'params': pd}, c)
      fake = disc_module.apply({'params': pd},
                               stage1.permute_dims(k_method, c))
      return -0.5 * (jnp.mean(jax.nn.log_softmax(real)[:, 0])
                     + jnp.mean(jax.nn.log_softmax(fake)[:, 1]))

    # w.r.t. the discriminator (encoder and decoder held fixed).
    disc = params['discriminator']
    of_disc = loss_of(lambda pd: {**params, 'discriminator': pd})
    g_objective = jax.grad(lambda pd: of_disc(pd)[0])(disc)
    g_reference = jax.grad(reference_disc_loss)(disc)
    self.assertGreater(
        max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(g_reference)),
        1e-4)
    jax.tree.map(lambda a, w: np.testing.assert_allclose(
        a, w, rtol=1e-4, atol=1e-6), g_objective, g_reference)
    # The VAE's loss (its TC term) reads a frozen discriminator.
    g_vae = jax.grad(lambda pd: of_disc(pd)[1]['loss'])(disc)
    for a in jax.tree.leaves(g_vae):
      np.testing.assert_array_equal(a, 0.0)

  def test_encoder_gradient_ignores_discriminator_loss(self):
    _, _, params, loss_of = self._factor_vae_setup()
    # w.r.t. the encoder: its last layers (the mean and logvar heads) carry
    # every gradient that reaches c. The discriminator's loss reads detached
    # samples: its gradient there is exactly zero, so the objective
    # (= VAE loss + discriminator loss, checked just below) trains the
    # encoder with the VAE loss's gradient alone. (Differentiating the
    # discriminator loss alone skips the decoder's backward pass, which op by
    # op costs ~20 s of compiles.)
    head = {k: params['encoder'][k] for k in ('mean', 'logvar')}
    of_head = loss_of(lambda h: {**params,
                                 'encoder': {**params['encoder'], **h}})
    objective, terms = of_head(head)
    np.testing.assert_allclose(
        float(objective), float(terms['loss'] + terms['discriminator_loss']),
        rtol=1e-6)
    g_disc_loss = jax.grad(lambda h: of_head(h)[1]['discriminator_loss'])(
        head)
    for a in jax.tree.leaves(g_disc_loss):
      np.testing.assert_array_equal(a, 0.0)
    # ... while the frozen discriminator still passes the TC gradient to c,
    # hence to the encoder.
    g_tc = jax.grad(lambda h: of_head(h)[1]['tc'])(head)
    self.assertGreater(float(jnp.max(jnp.abs(g_tc['mean']['kernel']))), 1e-6)


class OptimizerTest(absltest.TestCase):

  def _params(self):
    return {'encoder': {'w': np.zeros(3, np.float32)},
            'decoder': {'b': np.zeros((2, 2), np.float32)},
            'discriminator': {'Dense_0': {'kernel': np.zeros((2, 2),
                                                             np.float32)}}}

  def _run(self, optimizer, params, grads):
    state = optimizer.init(params)
    updates = []
    for g in grads:
      u, state = optimizer.update(g, state, params)
      updates.append(u)
      params = optax.apply_updates(params, u)
    return updates

  def test_factor_vae_routes_discriminator_to_its_own_adam(self):
    lr, disc_lr = 2e-3, 5e-3
    model = _model('factor_vae', learning_rate=lr, disc_learning_rate=disc_lr,
                   disc_beta1=0.5, disc_beta2=0.9)
    params = self._params()
    rng = np.random.default_rng(0)
    grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(
        np.float32), params) for _ in range(3)]
    updates = self._run(model.optimizer(), params, grads)
    for path in (('encoder', 'w'), ('decoder', 'b'),
                 ('discriminator', 'Dense_0', 'kernel')):
      if path[0] == 'discriminator':
        adam = NumpyAdam(disc_lr, 0.5, 0.9)
      else:
        adam = NumpyAdam(lr, 0.9, 0.999)
      for t, (g, u) in enumerate(zip(grads, updates)):
        g_leaf, u_leaf = g, u
        for name in path:
          g_leaf, u_leaf = g_leaf[name], u_leaf[name]
        np.testing.assert_allclose(u_leaf, adam.update(g_leaf), rtol=1e-4,
                                   err_msg=f'{path} step {t}')

  def test_other_methods_use_one_adam(self):
    model = _model('beta_vae', learning_rate=3e-4)
    params = {k: v for k, v in self._params().items()
              if k != 'discriminator'}
    rng = np.random.default_rng(1)
    grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(
        np.float32), params) for _ in range(3)]
    updates = self._run(model.optimizer(), params, grads)
    for name, leaf in (('encoder', 'w'), ('decoder', 'b')):
      adam = NumpyAdam(3e-4, 0.9, 0.999)
      for g, u in zip(grads, updates):
        np.testing.assert_allclose(u[name][leaf], adam.update(g[name][leaf]),
                                   rtol=1e-4)


class ConfigErrorTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('unknown_method', 'vae', {},
       "unknown stage-1 method 'vae'; valid: beta_vae, beta_tcvae, "
       'factor_vae, dip_vae_i, dip_vae_ii, annealed_vae'),
      ('negative_beta', 'beta_vae', {'beta': -1.0},
       r'stage1.beta must be >= 0, got -1.0'),
      ('negative_tcvae_beta', 'beta_tcvae', {'beta': -0.5},
       r'stage1.beta must be >= 0'),
      ('unknown_estimator', 'beta_tcvae', {'estimator': 'msw'},
       "unknown stage1.estimator 'msw'; valid: mws, mss"),
      ('unknown_reconstruction', 'beta_vae', {'reconstruction': 'l1'},
       "unknown reconstruction loss 'l1'; valid: bernoulli, gaussian"),
      ('zero_learning_rate', 'dip_vae_i', {'learning_rate': 0.0},
       r'stage1.learning_rate must be > 0, got 0.0'),
      ('negative_learning_rate', 'beta_vae', {'learning_rate': -1e-4},
       r'stage1.learning_rate must be > 0'),
      ('zero_latent_dim', 'beta_vae', {'latent_dim': 0},
       r'stage1.latent_dim must be a positive int, got 0'),
      ('negative_gamma', 'factor_vae', {'gamma': -10.0},
       r'stage1.gamma must be >= 0'),
      ('disc_beta1_one', 'factor_vae', {'disc_beta1': 1.0},
       r'stage1.disc_beta1 must be in \[0, 1\), got 1.0'),
      ('zero_disc_lr', 'factor_vae', {'disc_learning_rate': 0.0},
       r'stage1.disc_learning_rate must be > 0'),
      ('negative_lambda_od', 'dip_vae_ii', {'lambda_od': -1.0},
       r'stage1.lambda_od must be >= 0'),
      ('zero_threshold', 'annealed_vae', {'iteration_threshold': 0},
       r'stage1.iteration_threshold must be > 0, got 0'),
  )
  def test_check_config_and_from_config_raise(self, method, overrides,
                                              message):
    cfg = _stage1_config(method, **overrides)
    with self.assertRaisesRegex(UserInputError, message):
      stage1.check_config(cfg)
    with self.assertRaisesRegex(UserInputError, message):
      stage1.from_config(cfg, channels=1, dataset_size=_DATASET_SIZE)

  def test_beta_tcvae_needs_dataset_of_a_batch(self):
    cfg = _stage1_config('beta_tcvae')
    self.assertEqual(cfg.batch_size, 8)  # the smoke config
    stage1.check_config(cfg)  # the dataset is not known there
    with self.assertRaisesRegex(UserInputError,
                                r'N=7 < batch_size=8'):
      stage1.from_config(cfg, channels=1, dataset_size=7)
    model = stage1.from_config(cfg, channels=1, dataset_size=8)
    self.assertEqual(model.dataset_size, 8)
    # Other methods do not need N.
    stage1.from_config(_stage1_config('beta_vae'), channels=1, dataset_size=1)

  def test_valid_configs_build(self):
    for method in stage1.METHODS:
      model = stage1.from_config(_stage1_config(method), channels=3,
                                 dataset_size=_DATASET_SIZE)
      self.assertEqual(model.method, method)
      self.assertEqual(model.channels, 3)
      self.assertEqual(model.latent_dim, _LATENT)
      want = dict(common.METHOD_DEFAULTS[method])
      for name, value in want.items():
        self.assertEqual(model.h[name], value, msg=f'{method}.{name}')


if __name__ == '__main__':
  absltest.main()

"""MS-GMM (`msdr.models.ms_gmm`): the mixture of factor analysers on x - y.

Compared with float64 NumPy written here from the formulas, never with the
code's own output:

* `log_likelihood` and `loss` against scipy's dense multivariate normal
  (the full D x D covariances W W^T + diag(psi)) and logsumexp, in float64
  and float32, the latter also at D = 300 with small psi, where the
  cancelling form of Woodbury loses ~1 nat in float32 (ours: ~1e-4);
* the factor posterior (mean W^T C^-1 (r - mu), covariance I - W^T C^-1 W,
  by dense Gaussian conditioning) behind `infer`, `reconstruct` and the
  posterior samples;
* `em_step` against Ghahramani & Hinton's (1996) EM written with dense
  covariances (per-component psi, a binding variance floor); 200 steps of
  batch EM on data drawn from a known MFA never lower the likelihood and
  recover its weights, means and covariances; a dead component keeps its
  parameters;
* stepwise EM: `update` at step 0 (rho = 1) on the whole data set is
  `em_step` (from the data-driven start with gmm_data_init); the running
  statistics follow S_t = (1 - rho_t) S_{t-1} + rho_t S_batch with
  rho_t = (t + 1)^-kappa; `optimizer().init` is a fixed point of the M-step;
* latents, generation, sampling (temperature 0: the component means) and the
  config errors.

Sizes are tiny (D of 8-12, 300 once), float64 runs under `jax.enable_x64`
and the entry points are jitted once per dtype and shared, so the module
runs in seconds.
"""

import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from scipy import special
from scipy import stats

from msdr.errors import UserInputError
from msdr.models import mfa
from msdr.models import ms_gmm
from msdr.models import stage2

_SHAPE = (2, 2, 3)  # D = 12


def _f64(a):
  return np.asarray(a, np.float64)


def _random_params(rng, k=3, d=12, q=2, spread=0.5, psi=(0.05, 0.3)):
  weights = rng.uniform(0.5, 1.5, k)
  return {'weights': weights / weights.sum(),
          'mean': spread * rng.normal(size=(k, d)),
          'factors': 0.4 * rng.normal(size=(k, d, q)),
          'variance': rng.uniform(*psi, size=(k, d))}


def _jnp(params, dtype=jnp.float64):
  return {name: jnp.asarray(v, dtype) for name, v in params.items()}


def _sample_mfa(rng, params, n):
  """n residuals drawn from the MFA `params` (NumPy)."""
  k = rng.choice(len(params['weights']), size=n, p=params['weights'])
  f = rng.normal(size=(n, params['factors'].shape[-1]))
  noise = rng.normal(size=(n, params['mean'].shape[-1]))
  return (params['mean'][k] + np.einsum('ndq,nq->nd', params['factors'][k], f)
          + np.sqrt(params['variance'][k]) * noise)


# -- float64 NumPy references ------------------------------------------------


def np_cov(params, k):
  w = _f64(params['factors'][k])
  return w @ w.T + np.diag(_f64(params['variance'][k]))


def np_log_joint(params, r):
  """[N, K]: log pi_k + log N(r; mu_k, W_k W_k^T + diag psi_k), dense."""
  r = _f64(r)
  return np.stack([
      math.log(params['weights'][k]) + stats.multivariate_normal(
          _f64(params['mean'][k]), np_cov(params, k)).logpdf(r).reshape(-1)
      for k in range(len(params['weights']))], -1)


def np_log_likelihood(params, r):
  return special.logsumexp(np_log_joint(params, r), axis=-1)


def np_responsibilities(params, r):
  log_joint = np_log_joint(params, r)
  return np.exp(log_joint - special.logsumexp(log_joint, -1, keepdims=True))


def np_factor_posterior(params, r, k):
  """(mean [N, q], covariance [q, q]) of f given r and component k by
  conditioning the joint Gaussian of (f, r): W^T C^-1 (r - mu) and
  I - W^T C^-1 W."""
  w = _f64(params['factors'][k])
  beta = np.linalg.solve(np_cov(params, k), w).T  # W^T C^-1 (C symmetric)
  return ((_f64(r) - _f64(params['mean'][k])) @ beta.T,
          np.eye(w.shape[1]) - beta @ w)


def np_em_step(params, r, min_variance):
  """Ghahramani & Hinton (1996) EM for an MFA, psi per component.

  With the augmented loading [W, mu] and latent [f; 1]:
    [W_k, mu_k] = (sum_n h r E[f~]^T) (sum_n h E[f~ f~^T])^-1,
    psi_k = diag(sum_n h (r - [W_k, mu_k] E[f~]) r^T) / sum_n h,
    pi_k = mean_n h.
  """
  r = _f64(r)
  h = np_responsibilities(params, r)
  out = {name: [] for name in ('mean', 'factors', 'variance')}
  for k in range(h.shape[1]):
    m, cov = np_factor_posterior(params, r, k)
    q = m.shape[1]
    ez = np.concatenate([m, np.ones((len(r), 1))], -1)        # E[f~]
    ezz = np.zeros((q + 1, q + 1))
    num = np.zeros((r.shape[1], q + 1))
    for n in range(len(r)):
      outer = np.outer(ez[n], ez[n])
      outer[:q, :q] += cov
      ezz += h[n, k] * outer
      num += h[n, k] * np.outer(r[n], ez[n])
    loading = num @ np.linalg.inv(ezz)
    psi = (np.einsum('n,nd->d', h[:, k], (r - ez @ loading.T) * r)
           / h[:, k].sum())
    out['mean'].append(loading[:, q])
    out['factors'].append(loading[:, :q])
    out['variance'].append(np.maximum(psi, min_variance))
  out = {name: np.stack(v) for name, v in out.items()}
  out['weights'] = h.mean(0)
  return out


def _assert_params_close(got, want, rtol, atol=0.0):
  for name in ('weights', 'mean', 'factors', 'variance'):
    np.testing.assert_allclose(_f64(got[name]), _f64(want[name]), rtol=rtol,
                               atol=atol, err_msg=name)


def _images(rng, r):
  """(x, y) of the image shape with x - y = r."""
  y = rng.uniform(size=(len(r),) + _SHAPE)
  return y + r.reshape(y.shape), y


# -- tests --------------------------------------------------------------------

# One problem size (K = 3, D = 12, q = 2, N = 24) and jitted entry points
# shared by the tests, so each computation compiles once per dtype.
_N = 24
_MODEL = ms_gmm.MSGMM(components=3, factors=2, data_init=False)
_log_likelihood = jax.jit(_MODEL.log_likelihood)
_loss = jax.jit(_MODEL.loss)
_update = jax.jit(_MODEL.update)
_em_step = jax.jit(mfa.em_step)
_m_step = jax.jit(mfa.m_step)
_statistics = jax.jit(mfa.statistics)


class LogLikelihoodTest(parameterized.TestCase):

  @parameterized.named_parameters(('float64', jnp.float64, 1e-10),
                                  ('float32', jnp.float32, 2e-5))
  def test_matches_dense_gaussians(self, dtype, rtol):
    rng = np.random.default_rng(0)
    params = _random_params(rng)
    r = _sample_mfa(rng, params, _N)
    x, y = _images(rng, r)
    want = np_log_likelihood(params, r)
    with jax.enable_x64(True):
      args = (_jnp(params, dtype), jnp.asarray(x, dtype),
              jnp.asarray(y, dtype))
      got = _log_likelihood(*args)
      objective, terms = _loss(*args, jax.random.key(0), 0)
    self.assertEqual(got.shape, (_N,))
    self.assertEqual(got.dtype, dtype)
    np.testing.assert_allclose(_f64(got), want, rtol=rtol)
    # The loss: mean -log p(x | y) in nats per image.
    np.testing.assert_allclose(float(objective), -want.mean(), rtol=rtol)
    np.testing.assert_allclose(float(terms['nll']), -want.mean(), rtol=rtol)
    np.testing.assert_allclose(float(terms['bits_per_dim']),
                               -want.mean() / (12 * math.log(2)), rtol=rtol)

  def test_float32_at_small_noise_and_larger_d(self):
    # D = 300, psi ~ 1e-3 and data close to the factor subspaces: each of
    # |e|^2 / psi and b^T M^-1 b is ~1e6 while their difference is ~D; the
    # cancelling form of Woodbury is off by up to ~1.5 nats here.
    rng = np.random.default_rng(1)
    params = _random_params(rng, k=2, d=300, q=3, psi=(5e-4, 2e-3))
    params['factors'] *= 5
    r = _sample_mfa(rng, params, 5)
    got = jax.jit(mfa.posterior)(_jnp(params, jnp.float32),
                                    jnp.float32(r))['log_likelihood']
    want = np_log_likelihood(params, r)
    np.testing.assert_allclose(_f64(got), want, rtol=2e-6, atol=0.05)


class EmTest(absltest.TestCase):

  def test_em_step_matches_ghahramani_hinton(self):
    rng = np.random.default_rng(3)
    params = _random_params(rng)
    r = _sample_mfa(rng, _random_params(rng), _N)
    # A floor that binds for about half of the variances.
    floor = float(np.median(np_em_step(params, r, 0.0)['variance']))
    want = np_em_step(params, r, floor)
    with jax.enable_x64(True):
      got = _em_step(_jnp(params), jnp.asarray(r), floor)
    self.assertTrue(np.any(want['variance'] == floor))
    _assert_params_close(got, want, rtol=1e-8, atol=1e-12)

  def test_batch_em_is_monotone_and_recovers_a_known_mfa(self):
    rng = np.random.default_rng(4)
    d, q = 8, 2
    truth = {'weights': np.array([0.3, 0.7]),
             'mean': np.stack([np.full(d, 1.0), np.full(d, -1.0)]),
             'factors': 0.6 * rng.normal(size=(2, d, q)),
             'variance': rng.uniform(0.02, 0.1, size=(2, d))}
    r = _sample_mfa(rng, truth, 600)
    model = ms_gmm.MSGMM(components=2, factors=q, min_variance=1e-6)
    with jax.enable_x64(True):
      r_j = jnp.asarray(r)

      def iteration(p, _):
        log_lik = jnp.mean(mfa.posterior(p, r_j)['log_likelihood'])
        return model.em_step(p, r_j), log_lik

      # EM for factor analysers has a slow tail: the means drift along the
      # factor subspaces for a hundred iterations or so.
      params, log_lik = jax.jit(lambda key: jax.lax.scan(
          iteration, model.init_from_residuals(key, r_j), length=200))(
              jax.random.key(0))
      params = jax.tree.map(_f64, params)
      log_lik = _f64(log_lik)
    gains = np.diff(log_lik)
    self.assertGreaterEqual(gains.min(), -1e-9 * abs(log_lik[0]),
                            f'EM lowered: {log_lik}')
    self.assertGreater(log_lik[-1] - log_lik[0], 1.0)
    # At (or near) the MLE the likelihood is above the true parameters'.
    self.assertGreater(np_log_likelihood(params, r).mean(),
                       np_log_likelihood(truth, r).mean())
    order = np.argsort(params['mean'].mean(-1))[::-1]  # +1 mean first
    np.testing.assert_allclose(params['weights'][order], [0.3, 0.7],
                               atol=0.05)
    np.testing.assert_allclose(params['mean'][order], truth['mean'], atol=0.2)
    for got, k in zip(order, range(2)):
      want = np_cov(truth, k)
      err = np.linalg.norm(np_cov(params, got) - want) / np.linalg.norm(want)
      self.assertLess(err, 0.15)

  def test_dead_component_keeps_its_parameters(self):
    rng = np.random.default_rng(5)
    params = _random_params(rng)
    params['weights'] = np.array([0.5, 0.5, 0.0])
    r = _sample_mfa(rng, _random_params(rng), _N)
    with jax.enable_x64(True):
      got = jax.tree.map(_f64, _em_step(_jnp(params), jnp.asarray(r), 1e-4))
    self.assertEqual(got['weights'][2], 0.0)
    for name in ('mean', 'factors', 'variance'):
      np.testing.assert_array_equal(got[name][2], params[name][2])
      self.assertTrue(np.all(np.isfinite(got[name])))


class StepwiseEmTest(absltest.TestCase):

  def test_init_state_is_a_fixed_point_of_the_m_step(self):
    rng = np.random.default_rng(6)
    params = _random_params(rng)
    with jax.enable_x64(True):
      state = _MODEL.optimizer().init(_jnp(params))
      got = _m_step(state, _jnp(params), 1e-4)
    diag_cov = np.stack([np.diag(np_cov(params, k)) for k in range(3)])
    np.testing.assert_allclose(
        _f64(state['rr']),
        params['weights'][:, None] * (params['mean'] ** 2 + diag_cov),
        rtol=1e-12)
    _assert_params_close(got, params, rtol=1e-9, atol=1e-12)

  def test_first_full_batch_update_is_em_step(self):
    rng = np.random.default_rng(7)
    params = _random_params(rng)
    r = _sample_mfa(rng, _random_params(rng), _N)
    x, y = _images(rng, r)
    with jax.enable_x64(True):
      p = _jnp(params)
      new, _, objective, terms = _update(
          p, _MODEL.optimizer().init(p), jnp.asarray(x), jnp.asarray(y),
          jax.random.key(0), jnp.int32(0))
      want = _em_step(p, jnp.asarray(r), _MODEL.min_variance)
    _assert_params_close(new, want, rtol=1e-8, atol=1e-12)
    _assert_params_close(new, np_em_step(params, r, _MODEL.min_variance),
                         rtol=1e-8, atol=1e-12)
    self.assertEqual(float(terms['step_size']), 1.0)
    np.testing.assert_allclose(float(objective),
                               -np_log_likelihood(params, r).mean(),
                               rtol=1e-10)

  def test_data_init_restarts_step_zero_from_the_batch(self):
    rng = np.random.default_rng(12)
    r = _sample_mfa(rng, _random_params(rng), _N)
    x, y = _images(rng, r)
    model = ms_gmm.MSGMM(components=3, factors=2, data_init=True)
    update = jax.jit(model.update)
    key = jax.random.key(3)
    with jax.enable_x64(True):
      p = _jnp(_random_params(rng))
      state = model.optimizer().init(p)
      start = jax.jit(model.init_from_residuals)(key, jnp.asarray(r))
      got, state, _, _ = update(p, state, jnp.asarray(x), jnp.asarray(y),
                                key, jnp.int32(0))
      _assert_params_close(got, _em_step(start, jnp.asarray(r), 1e-4),
                           rtol=1e-8, atol=1e-12)
      # The means start as K distinct residuals of the batch.
      start = _f64(start['mean'])
      self.assertTrue(all(np.any(np.all(np.isclose(r, m), -1))
                          for m in start))
      self.assertLen({tuple(m) for m in start}, 3)
      # Later steps keep their parameters.
      again, _, _, _ = update(p, state, jnp.asarray(x), jnp.asarray(y), key,
                              jnp.int32(1))
      _assert_params_close(again, _update(p, state, jnp.asarray(x),
                                          jnp.asarray(y), key,
                                          jnp.int32(1))[0], rtol=1e-12)

  def test_step_size_schedule_and_running_statistics(self):
    # rho_t = (t + 1)^-kappa; the running statistics are blended as
    # S_t = (1 - rho_t) S_{t-1} + rho_t S(batch_t; params_{t-1}).
    rng = np.random.default_rng(8)
    kappa = _MODEL.step_power
    with jax.enable_x64(True):
      params = _jnp(_random_params(rng))
      state = _MODEL.optimizer().init(params)
      want = None
      for t in range(3):
        r = _sample_mfa(rng, _random_params(rng), _N)
        x, y = _images(rng, r)
        batch = jax.tree.map(_f64, _statistics(params, jnp.asarray(r))[0])
        rho = (t + 1.0) ** -kappa
        want = batch if want is None else jax.tree.map(
            lambda old, new, rho=rho: (1 - rho) * old + rho * new,
            want, batch)
        params, state, _, terms = _update(
            params, state, jnp.asarray(x), jnp.asarray(y), jax.random.key(t),
            jnp.int32(t))
        np.testing.assert_allclose(float(terms['step_size']), rho,
                                   rtol=1e-12)
      for name, value in state.items():
        np.testing.assert_allclose(_f64(value), want[name], rtol=1e-10,
                                   atol=1e-14, err_msg=name)
      _assert_params_close(params, _m_step(state, params, 1e-4), rtol=1e-12)


class LatentTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(9)
    self.params = _random_params(rng, spread=0.1)
    self.r = _sample_mfa(rng, self.params, _N)
    self.x, self.y = _images(rng, self.r)

  def test_infer_map_component_and_posterior_mean(self):
    with jax.enable_x64(True):
      z = _f64(jax.jit(_MODEL.infer)(_jnp(self.params), jnp.asarray(self.x),
                                     jnp.asarray(self.y)))
    self.assertEqual(z.shape, (_N, 3))
    k = np.argmax(np_responsibilities(self.params, self.r), -1)
    upper = np.cumsum(self.params['weights'])
    lower = upper - self.params['weights']
    self.assertTrue(np.all((lower[k] < z[:, 0]) & (z[:, 0] < upper[k])))
    self.assertGreater(len(set(k)), 1)
    for n in range(_N):
      mean, _ = np_factor_posterior(self.params, self.r[n:n + 1], k[n])
      np.testing.assert_allclose(z[n, 1:], mean[0], rtol=1e-9)

  def test_reconstruct_is_posterior_mean_image(self):
    with jax.enable_x64(True):
      got = _f64(jax.jit(_MODEL.reconstruct)(
          _jnp(self.params), jnp.asarray(self.x), jnp.asarray(self.y)))
    self.assertEqual(got.shape, (_N,) + _SHAPE)
    k = np.argmax(np_responsibilities(self.params, self.r), -1)
    for n in range(_N):
      mean, _ = np_factor_posterior(self.params, self.r[n:n + 1], k[n])
      want = (self.y[n].reshape(-1) + self.params['mean'][k[n]]
              + self.params['factors'][k[n]] @ mean[0])
      np.testing.assert_allclose(got[n].reshape(-1), np.clip(want, 0, 1),
                                 rtol=1e-9, atol=1e-12)

  def test_posterior_samples(self):
    # One image, many samples: components follow the responsibilities, u
    # stays in the component's interval, f has the posterior's moments.
    n = 4000
    rng = np.random.default_rng(10)
    params = _random_params(rng, k=2, spread=0.0)
    # Equal covariances (W_2 = -W_1) and means: the responsibilities are the
    # weights, and the two factor posteriors have opposite means.
    params['factors'][1] = -params['factors'][0]
    params['variance'][1] = params['variance'][0]
    r = _sample_mfa(rng, params, 1)
    resp = np_responsibilities(params, r)[0]
    self.assertGreater(resp.min(), 0.1)  # both components are sampled
    x, y = _images(rng, np.repeat(r, n, 0))
    model = ms_gmm.MSGMM(components=2, factors=2)
    with jax.enable_x64(True):
      z = _f64(jax.jit(model.infer)(_jnp(params), jnp.asarray(x),
                                    jnp.asarray(y), jax.random.key(1)))
    k = (z[:, 0] >= params['weights'][0]).astype(int)
    np.testing.assert_allclose(np.bincount(k) / n, resp, atol=0.03)
    for c in range(2):
      mean, cov = np_factor_posterior(params, r, c)
      f = z[k == c, 1:]
      np.testing.assert_allclose(f.mean(0), mean[0],
                                 atol=4 * np.sqrt(cov.diagonal().max()
                                                  / len(f)))
      np.testing.assert_allclose(np.cov(f.T), cov, atol=0.15 * cov.max())

  def test_generate_clips(self):
    with jax.enable_x64(True):
      z = jnp.asarray([[0.1, 50.0, -50.0], [0.99, -50.0, 50.0]])
      got = _f64(_MODEL.generate(_jnp(self.params), jnp.asarray(self.y[:2]),
                                 z))
    self.assertEqual(got.shape, (2,) + _SHAPE)
    self.assertTrue(np.all((got >= 0) & (got <= 1)))
    self.assertTrue(np.any(got == 0) and np.any(got == 1))


class SamplingTest(absltest.TestCase):

  def test_prior_latents(self):
    model = ms_gmm.MSGMM(components=3, factors=4)
    z = _f64(model.sample_latent(jax.random.key(0), 5000, temperature=0.5))
    self.assertEqual(z.shape, (5000, 5))
    self.assertTrue(np.all((z[:, 0] >= 0) & (z[:, 0] < 1)))
    np.testing.assert_allclose(z[:, 1:].std(0), 0.5, rtol=0.05)
    weights = np.array([0.2, 0.5, 0.3])
    k = _f64(mfa.component_of(jnp.float32(weights), jnp.float32(z[:, 0])))
    np.testing.assert_allclose(np.bincount(k.astype(int)) / 5000, weights,
                               atol=0.03)
    z0 = _f64(model.sample_latent(jax.random.key(1), 3, temperature=0.0))
    np.testing.assert_array_equal(z0[:, 1:], 0.0)

  def test_temperature_zero_gives_component_means(self):
    rng = np.random.default_rng(11)
    params = _random_params(rng, spread=0.2)
    sample = jax.jit(_MODEL.sample, static_argnames='noise')
    y = np.full((600,) + _SHAPE, 0.5)
    p = _jnp(params, jnp.float32)
    for noise in (False, True):
      got = _f64(sample(p, jnp.float32(y), jax.random.key(2), 0.0,
                        noise=noise))
      self.assertEqual(got.shape, y.shape)
      means = np.clip(0.5 + params['mean'], 0, 1)           # [K, D]
      dist = np.abs(got.reshape(600, 1, -1) - means[None]).max(-1)
      self.assertTrue(np.all(dist.min(-1) < 1e-6))
      counts = np.bincount(dist.argmin(-1), minlength=3) / 600
      np.testing.assert_allclose(counts, params['weights'], atol=0.07)
    noisy = sample(p, jnp.float32(y), jax.random.key(3), 1.0, noise=True)
    self.assertTrue(np.all((_f64(noisy) >= 0) & (_f64(noisy) <= 1)))


def _config(**overrides):
  fields = dict(stage2.SHARED_DEFAULTS, model='ms_gmm', **ms_gmm.DEFAULTS)
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


class ConfigTest(parameterized.TestCase):

  def test_defaults(self):
    self.assertTrue(all(k.startswith('gmm_') for k in ms_gmm.DEFAULTS))
    model = ms_gmm.from_config(_config(), (64, 64, 1))
    self.assertEqual(model.name, 'ms_gmm')
    self.assertEqual((model.components, model.factors),
                     (ms_gmm.DEFAULTS['gmm_components'],
                      ms_gmm.DEFAULTS['gmm_factors']))
    self.assertIsNotNone(model.update)
    params = jax.eval_shape(lambda key: model.init(key, (64, 64, 1)),
                            jax.random.key(0))
    self.assertEqual(params['factors'].shape, (2, 4096, 512))

  @parameterized.parameters(
      ('gmm_components', 0), ('gmm_components', 2.0),
      ('gmm_components', True), ('gmm_factors', -1), ('gmm_factors', 1024),
      ('gmm_step_power', -0.1), ('gmm_step_power', 1.5),
      ('gmm_step_power', 'a'), ('gmm_min_variance', 0.0),
      ('gmm_min_variance', float('nan')), ('gmm_init_variance', -1.0),
      ('gmm_init_variance', float('inf')), ('gmm_data_init', 1))
  def test_bad_value(self, field, value):
    with self.assertRaisesRegex(UserInputError, f'stage2.{field}'):
      ms_gmm.from_config(_config(**{field: value}), (32, 32, 1))  # D = 1024

  def test_data_init_with_fewer_images_than_components(self):
    # A batch can hold fewer images than there are components.
    r = np.random.default_rng(13).normal(size=(2, 4))
    params = ms_gmm.MSGMM(components=3, factors=1).init_from_residuals(
        jax.random.key(0), jnp.float32(r))
    for m in _f64(params['mean']):
      self.assertTrue(np.any(np.all(np.isclose(r, m), -1)))

if __name__ == '__main__':
  absltest.main()

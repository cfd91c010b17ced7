"""beta-TCVAE decomposed KL, checked against explicit float64 loops."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from msdr.models import tcvae


def _np_log_normal(x, mean, logvar):
  """Scalar float64 log N(x; mean, exp(logvar)), written out by hand."""
  var = math.exp(logvar)
  return -0.5 * math.log(2 * math.pi * var) - (x - mean) ** 2 / (2 * var)


def _logsumexp(values):
  top = max(values)
  if top == -math.inf:
    return -math.inf
  return top + math.log(sum(math.exp(v - top) for v in values))


def _np_weight(j, i, m, n, estimator):
  """W[j, i] from its definition, one entry at a time."""
  if estimator == 'mws':
    return 1.0 / (n * m)
  k = m - 1  # the other samples of the batch (the paper's M)
  if i == j:
    return 1.0 / n
  if i == (j + 1) % m:
    return (n - k) / (n * k)
  return 1.0 / k


def _brute_force(z, mean, logvar, n, estimator):
  """Reference decomposition: explicit loops over j, i, d in float64."""
  z, mean, logvar = (np.asarray(a, np.float64) for a in (z, mean, logvar))
  m, dims = z.shape
  mi = tc = dwkl = kl = 0.0
  for j in range(m):
    log_qzx = sum(_np_log_normal(z[j, d], mean[j, d], logvar[j, d])
                  for d in range(dims))
    log_pz = sum(_np_log_normal(z[j, d], 0.0, 0.0) for d in range(dims))
    joint, marg = [], [[] for _ in range(dims)]
    for i in range(m):
      w = _np_weight(j, i, m, n, estimator)
      log_w = math.log(w) if w > 0 else -math.inf
      per_dim = [_np_log_normal(z[j, d], mean[i, d], logvar[i, d])
                 for d in range(dims)]
      joint.append(log_w + sum(per_dim))
      for d in range(dims):
        marg[d].append(log_w + per_dim[d])
    log_qz = _logsumexp(joint)
    log_prod = sum(_logsumexp(marg[d]) for d in range(dims))
    mi += log_qzx - log_qz
    tc += log_qz - log_prod
    dwkl += log_prod - log_pz
    kl += log_qzx - log_pz
  return {'mi': mi / m, 'tc': tc / m, 'dwkl': dwkl / m, 'kl': kl / m}


def _batch(m=5, dims=3, seed=0):
  rng = np.random.default_rng(seed)
  mean = rng.normal(size=(m, dims)).astype(np.float32)
  logvar = rng.uniform(-1.5, 0.5, size=(m, dims)).astype(np.float32)
  z = (mean + np.exp(0.5 * logvar) * rng.normal(size=(m, dims))).astype(
      np.float32)
  return z, mean, logvar


class GaussianLogDensityTest(absltest.TestCase):

  def test_matches_closed_form(self):
    rng = np.random.default_rng(1)
    x, mean = rng.normal(size=(2, 4, 3))
    logvar = rng.uniform(-3, 2, size=(4, 3))
    got = np.asarray(jax.jit(tcvae.gaussian_log_density)(
        jnp.float32(x), jnp.float32(mean), jnp.float32(logvar)))
    want = np.vectorize(_np_log_normal)(x, mean, logvar)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

  def test_broadcasts(self):
    got = jax.jit(tcvae.gaussian_log_density)(
        jnp.zeros((2, 1, 3)), jnp.zeros((4, 3)), 0.0)
    self.assertEqual(got.shape, (2, 4, 3))
    np.testing.assert_allclose(got, -0.5 * math.log(2 * math.pi), rtol=1e-6)


class MssWeightsTest(absltest.TestCase):

  def test_hand_computed_3x3(self):
    # B = 3 (K = 2 others), N = 10: diagonal 1/10, stratum (10-2)/20 = 8/20,
    # others 1/2; each row sums to 1.
    a, s, o = 1 / 10, 8 / 20, 1 / 2
    want = np.array([[a, s, o],
                     [o, a, s],
                     [s, o, a]])
    got = np.exp(tcvae.mss_log_weights(3, 10).astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-6)

  def test_structure(self):
    m, n = 6, 50
    w = np.exp(tcvae.mss_log_weights(m, n).astype(np.float64))
    np.testing.assert_allclose(np.diag(w), 1 / n, rtol=1e-6)
    k = m - 1
    stratum = np.isclose(w, (n - k) / (n * k), rtol=1e-6)
    np.testing.assert_array_equal(stratum.sum(axis=1), np.ones(m))
    self.assertFalse(stratum[:, 0].all())  # not the column-0 fill bug
    # A weighting of the data set: every row sums to 1.
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)

  def test_full_batch_weights_are_finite(self):
    # N == B: stratum weight (N - K)/(N K) = 1/(N K), still positive.
    w = np.exp(tcvae.mss_log_weights(4, 4).astype(np.float64))
    np.testing.assert_allclose(w[0], [1 / 4, 1 / 12, 1 / 3, 1 / 3], rtol=1e-6)


class DecomposedKlTest(parameterized.TestCase):

  @parameterized.parameters('mws', 'mss')
  def test_matches_brute_force(self, estimator):
    z, mean, logvar = _batch()
    got = tcvae.decomposed_kl(z, mean, logvar, 100, estimator)
    want = _brute_force(z, mean, logvar, 100, estimator)
    for key in ('mi', 'tc', 'dwkl', 'kl'):
      np.testing.assert_allclose(float(got[key]), want[key], rtol=1e-4,
                                 atol=1e-5, err_msg=key)

  @parameterized.parameters('mws', 'mss')
  def test_terms_telescope_to_kl(self, estimator):
    z, mean, logvar = _batch(seed=3)
    got = tcvae.decomposed_kl(z, mean, logvar, 100, estimator)
    total = float(got['mi'] + got['tc'] + got['dwkl'])
    np.testing.assert_allclose(total, float(got['kl']), rtol=1e-5, atol=1e-5)
    # kl is the one-sample estimate of log q(z|x) - log p(z), in float64.
    z64, m64, l64 = (a.astype(np.float64) for a in (z, mean, logvar))
    log_qzx = (-0.5 * (np.log(2 * np.pi) + l64)
               - (z64 - m64) ** 2 / (2 * np.exp(l64))).sum(-1)
    log_pz = (-0.5 * np.log(2 * np.pi) - z64 ** 2 / 2).sum(-1)
    np.testing.assert_allclose(float(got['kl']), np.mean(log_qzx - log_pz),
                               rtol=1e-5, atol=1e-5)
    penalty = jax.jit(tcvae.beta_tcvae_penalty)(got, alpha=1.0, beta=1.0,
                                                gamma=1.0)
    np.testing.assert_allclose(float(penalty), float(got['kl']), rtol=1e-5,
                               atol=1e-5)

  @parameterized.parameters('mws', 'mss')
  def test_one_dimension_has_no_total_correlation(self, estimator):
    z, mean, logvar = _batch(m=6, dims=1, seed=4)
    got = tcvae.decomposed_kl(z, mean, logvar, 60, estimator)
    self.assertAlmostEqual(float(got['tc']), 0.0, places=6)

  def test_penalty_weights(self):
    terms = {'mi': jnp.float32(1.0), 'tc': jnp.float32(2.0),
             'dwkl': jnp.float32(3.0)}
    self.assertAlmostEqual(float(tcvae.beta_tcvae_penalty(terms)),
                           1 + 6 * 2 + 3)
    self.assertAlmostEqual(
        float(tcvae.beta_tcvae_penalty(terms, alpha=0.5, beta=2, gamma=0)), 4.5)

  @parameterized.parameters('mws', 'mss')
  def test_inside_outer_jit(self, estimator):
    # As in a train step: wrapped in the caller's jit, settings closed over.
    z, mean, logvar = _batch(seed=5)
    direct = tcvae.decomposed_kl(z, mean, logvar, 100, estimator)
    step = jax.jit(lambda *a: tcvae.decomposed_kl(*a, dataset_size=100,
                                                  estimator=estimator))
    jitted = step(z, mean, logvar)
    want = _brute_force(z, mean, logvar, 100, estimator)
    for key in direct:
      np.testing.assert_allclose(float(jitted[key]), float(direct[key]),
                                 rtol=1e-6, atol=1e-6, err_msg=key)
      np.testing.assert_allclose(float(jitted[key]), want[key], rtol=1e-4,
                                 atol=1e-5, err_msg=key)

  def test_full_batch_mss_is_finite_with_finite_grads(self):
    z, mean, logvar = _batch(m=4, seed=6)
    loss = lambda mu: tcvae.beta_tcvae_penalty(
        tcvae.decomposed_kl(z, mu, logvar, 4, 'mss'))
    value, grad = jax.jit(jax.value_and_grad(loss))(mean)
    self.assertTrue(np.isfinite(float(value)))
    self.assertTrue(np.all(np.isfinite(np.asarray(grad))))

  def test_bad_inputs(self):
    z, mean, logvar = _batch()
    with self.assertRaisesRegex(ValueError, "unknown estimator 'msw'.*'mws', "
                                "'mss'"):
      tcvae.decomposed_kl(z, mean, logvar, 100, 'msw')
    for estimator in ('mws', 'mss'):
      with self.assertRaisesRegex(ValueError, r'dataset_size \(3\).*\(5\)'):
        tcvae.decomposed_kl(z, mean, logvar, 3, estimator)
    with self.assertRaisesRegex(ValueError, 'at least 2'):
      tcvae.decomposed_kl(z[:1], mean[:1], logvar[:1], 100, 'mss')
    with self.assertRaisesRegex(ValueError, r'must all be \[M, D\]'):
      tcvae.decomposed_kl(z, mean[:, :2], logvar, 100)


if __name__ == '__main__':
  absltest.main()

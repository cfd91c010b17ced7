"""Cholesky and triangular solves in plain JAX against float64 NumPy, and a
sharded MFA EM step over four CPU devices (where LAPACK custom calls used
to deadlock)."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from msdr import sharding
from msdr.models import mfa
from msdr.models import small_linalg


def spd(rng, batch, n):
  a = rng.normal(size=batch + (n, n))
  return a @ np.swapaxes(a, -1, -2) + n * np.eye(n)


class SmallLinalgTest(absltest.TestCase):

  def test_cholesky_matches_numpy(self):
    a = spd(np.random.default_rng(0), (3, 2), 7)
    lower = np.asarray(small_linalg.cholesky(jnp.asarray(a, jnp.float32)))
    np.testing.assert_allclose(lower, np.linalg.cholesky(a), rtol=1e-4,
                               atol=1e-4)
    self.assertTrue(np.all(np.triu(lower, 1) == 0))

  def test_triangular_solves_match_numpy(self):
    rng = np.random.default_rng(1)
    lower = np.tril(rng.normal(size=(4, 6, 6))) + 4 * np.eye(6)
    b = rng.normal(size=(4, 6, 3))
    f32 = lambda t: jnp.asarray(t, jnp.float32)
    np.testing.assert_allclose(small_linalg.solve_lower(f32(lower), f32(b)),
                               np.linalg.solve(lower, b), rtol=1e-4,
                               atol=1e-5)
    upper = np.swapaxes(lower, -1, -2)
    np.testing.assert_allclose(small_linalg.solve_upper(f32(upper), f32(b)),
                               np.linalg.solve(upper, b), rtol=1e-4,
                               atol=1e-5)
    unit = np.tril(lower, -1) + np.eye(6)
    np.testing.assert_allclose(
        small_linalg.solve_lower(f32(unit * 7), f32(b), unit_diagonal=True),
        np.linalg.solve(np.tril(unit * 7, -1) + np.eye(6), b), rtol=1e-4,
        atol=1e-4)
    a = spd(rng, (2,), 5)
    b = rng.normal(size=(2, 5, 4))
    np.testing.assert_allclose(
        small_linalg.cho_solve(small_linalg.cholesky(f32(a)), f32(b)),
        np.linalg.solve(a, b), rtol=1e-4, atol=1e-5)

  def test_cho_solve_with_more_columns_than_rows(self):
    # k > n takes the inverse-then-multiply path.
    rng = np.random.default_rng(2)
    a = spd(rng, (2,), 6)
    b = rng.normal(size=(2, 6, 40))
    f32 = lambda t: jnp.asarray(t, jnp.float32)
    np.testing.assert_allclose(
        small_linalg.cho_solve(small_linalg.cholesky(f32(a)), f32(b)),
        np.linalg.solve(a, b), rtol=1e-4, atol=1e-5)

  def test_sharded_em_step_returns(self):
    mesh = sharding.make_mesh(4)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {'weights': jnp.full((10,), 0.1),
              'mean': jax.random.normal(k1, (10, 4096)),
              'factors': 0.1 * jax.random.normal(k2, (10, 4096, 16)),
              'variance': jnp.ones((10, 4096))}
    r = jax.device_put(jax.random.normal(k3, (8, 4096)),
                       sharding.data_sharding(mesh))
    new = jax.block_until_ready(jax.jit(mfa.em_step)(params, r))
    self.assertTrue(all(np.all(np.isfinite(v)) for v in
                        jax.tree.leaves(new)))


if __name__ == '__main__':
  absltest.main()

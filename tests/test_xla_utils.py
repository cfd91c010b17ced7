"""msdr.xla_utils: materialize is an identity, eagerly and under jit."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from msdr import xla_utils


class MaterializeTest(absltest.TestCase):

  def test_identity_for_floats_ints_and_nan(self):
    x = jnp.array([[np.nan, 1.5], [2.0, -3.0]])
    i = jnp.arange(6).reshape(2, 3)
    for fn in (xla_utils.materialize, jax.jit(xla_utils.materialize)):
      a, b = fn(x, i)
      np.testing.assert_array_equal(a, x)  # NaN first: still passed through
      np.testing.assert_array_equal(b, i)
      self.assertEqual(b.dtype, i.dtype)

  def test_differentiable(self):
    grad = jax.grad(lambda x: xla_utils.materialize(x * x)[0].sum())(
        jnp.array([1.0, 2.0]))
    np.testing.assert_allclose(grad, [2.0, 4.0])


if __name__ == '__main__':
  absltest.main()

"""msdr.xla_utils: computed is fn and materialize an identity, eagerly and
under jit."""

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


class ComputedTest(absltest.TestCase):

  def test_equals_the_function(self):
    fn = lambda x, i: (jnp.exp(x) * 2.0, {'i': i + 1, 'sum': x.sum()})
    x = jnp.array([[0.5, 1.5], [2.0, -3.0]])
    i = jnp.arange(6).reshape(2, 3)
    want = jax.tree.map(np.asarray, fn(x, i))
    for computed in (xla_utils.computed, jax.jit(xla_utils.computed,
                                                 static_argnums=0)):
      got = computed(fn, x, i)
      self.assertEqual(jax.tree.structure(got), jax.tree.structure(want))
      for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
        self.assertEqual(a.dtype, b.dtype)

  def test_differentiable(self):
    grad = jax.grad(lambda x: xla_utils.computed(
        lambda v: jnp.sin(v), x).sum())(jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(grad, np.cos([0.0, 1.0]), rtol=1e-6)


class OptionsTest(absltest.TestCase):

  def test_known_options_pass_and_unknown_ones_are_dropped(self):
    self.assertEqual(xla_utils.known_options(xla_utils.CPU_VECTOR_OPTIONS),
                     xla_utils.CPU_VECTOR_OPTIONS)
    self.assertEqual(xla_utils.known_options(
        {'xla_cpu_prefer_vector_width': 512, 'xla_no_such_option': 1}), {})
    self.assertEqual(xla_utils.known_options({}), {})


if __name__ == '__main__':
  absltest.main()

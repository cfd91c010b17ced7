"""The JAX logistic regression against scikit-learn's objective minimised
independently with SciPy's L-BFGS-B in float64."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from msdr.eval import linear


def reference_logistic_regression(x, y, c=1.0):
  """argmin 0.5 ||W||^2 + C sum_i -log softmax(x_i W + b)[y_i]."""
  classes, labels = np.unique(y, return_inverse=True)
  k, m = x.shape[1], len(classes)
  rows = np.arange(len(y))

  def objective(theta):
    w, b = theta[:k * m].reshape(k, m), theta[k * m:]
    z = x @ w + b
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    g = np.exp(logp)
    g[rows, labels] -= 1.0
    value = 0.5 * np.sum(w * w) - c * logp[rows, labels].sum()
    return value, np.concatenate([(w + c * x.T @ g).ravel(),
                                  c * g.sum(axis=0)])

  result = optimize.minimize(objective, np.zeros(k * m + m), jac=True,
                             method='L-BFGS-B',
                             options=dict(maxiter=2000, gtol=1e-10))
  return result.x[:k * m].reshape(k, m), result.x[k * m:], classes


def _objective(x, y, w, b):
  """scikit-learn's scaled objective, float64: the mean loss + |W|^2 / 2N."""
  z = x @ w + b
  z = z - z.max(axis=1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
  return (0.5 * np.sum(w * w) - logp[np.arange(len(y)), y].sum()) / len(y)


class LogisticRegressionTest(parameterized.TestCase):

  # The objective's two layouts; float32 sums leave the flatter 17-class
  # optimum about 1e-3 off (as they did with jax.nn.log_softmax).
  @parameterized.parameters((4, 5e-4), (17, 1.5e-3))
  def test_matches_the_float64_reference(self, num_classes, atol):
    self.assertEqual(num_classes < linear._CLASS_MAJOR_BELOW,
                     num_classes == 4)
    rng = np.random.default_rng(0)
    n = 100 * num_classes
    x = rng.normal(size=(n, 5))
    y = np.argmax(x @ rng.normal(size=(5, num_classes)) +
                  rng.gumbel(size=(n, num_classes)),
                  axis=1) * 3 + 1  # labels 1, 4, 7, 10, ...
    model = linear.fit_logistic_regression(x, y, max_iter=1000, tol=1e-5)
    w, b, classes = reference_logistic_regression(x, y)
    np.testing.assert_array_equal(model.classes, classes)
    np.testing.assert_allclose(model.weights, w, atol=atol)
    np.testing.assert_allclose(model.bias, b, atol=atol)
    want = classes[np.argmax(x @ w + b, axis=1)]
    np.testing.assert_array_equal(model.predict(x), want)

  @parameterized.parameters(3, 17)
  def test_mean_log_loss_and_gradient_in_either_layout(self, num_classes):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 4))
    y = rng.integers(num_classes, size=50)
    w = rng.normal(size=(4, num_classes))
    b = rng.normal(size=num_classes)
    data = linear._log_loss_data(jnp.asarray(x, jnp.float32),
                                 jnp.asarray(y, jnp.int32), num_classes)
    loss = lambda w, b: linear._mean_log_loss(w, b, data)
    value, (grad_w, grad_b) = jax.value_and_grad(loss, argnums=(0, 1))(
        jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32))
    z = x @ w + b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    want = -np.mean(np.log(p[np.arange(50), y]))
    p[np.arange(50), y] -= 1.0
    np.testing.assert_allclose(value, want, rtol=1e-5)
    np.testing.assert_allclose(grad_w, x.T @ p / 50, atol=1e-6)
    np.testing.assert_allclose(grad_b, p.mean(axis=0), atol=1e-6)

  def test_stops_by_scikit_learns_rules(self):
    # scikit-learn minimises the objective divided by C N and stops once no
    # gradient entry exceeds tol: check that in float64 at the returned fit,
    # on a separable problem whose unregularised optimum is at infinity (so
    # only the stopping rule ends the run short of max_iter).
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    y = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0)
    tol = 1e-3
    model = linear.fit_logistic_regression(x, y, tol=tol, max_iter=1000)
    z = x @ model.weights + model.bias
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    n = len(y)
    grad_w = model.weights / n + x.T @ p / n
    grad_b = p.sum(axis=0) / n
    largest = max(np.abs(grad_w).max(), np.abs(grad_b).max())
    self.assertLess(largest, 1.5 * tol)  # float32 gradients: some slack
    # A tighter tol runs on and lowers the objective further.
    tighter = linear.fit_logistic_regression(x, y, tol=1e-6, max_iter=1000)
    objective = lambda m: _objective(x, y, m.weights, m.bias)
    self.assertLess(objective(tighter), objective(model))

  def test_concurrent_fits_equal_one_at_a_time(self):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 4))
    ys = rng.integers(3, size=(3, 200))
    for got, y in zip(linear.fit_logistic_regressions(x, ys), ys):
      want = linear.fit_logistic_regression(x, y)
      np.testing.assert_array_equal(got.weights, want.weights)
      np.testing.assert_array_equal(got.bias, want.bias)

  def test_single_class_predicts_itself(self):
    model = linear.fit_logistic_regression(np.zeros((5, 2)), [3] * 5)
    np.testing.assert_array_equal(model.predict(np.ones((2, 2))), [3, 3])
    self.assertEqual(model.accuracy(np.ones((2, 2)), [3, 3]), 1.0)


if __name__ == '__main__':
  absltest.main()

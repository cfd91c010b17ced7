"""The JAX logistic regression against scikit-learn's objective minimised
independently with SciPy's L-BFGS-B in float64."""

from absl.testing import absltest
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


class LogisticRegressionTest(absltest.TestCase):

  def test_matches_the_float64_reference(self):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    y = np.argmax(x @ rng.normal(size=(5, 4)) + rng.gumbel(size=(400, 4)),
                  axis=1) * 3 + 1  # labels 1, 4, 7, 10
    model = linear.fit_logistic_regression(x, y)
    w, b, classes = reference_logistic_regression(x, y)
    np.testing.assert_array_equal(model.classes, classes)
    np.testing.assert_allclose(model.weights, w, atol=5e-4)
    np.testing.assert_allclose(model.bias, b, atol=5e-4)
    want = classes[np.argmax(x @ w + b, axis=1)]
    np.testing.assert_array_equal(model.predict(x), want)

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

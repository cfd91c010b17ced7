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

  def test_single_class_predicts_itself(self):
    model = linear.fit_logistic_regression(np.zeros((5, 2)), [3] * 5)
    np.testing.assert_array_equal(model.predict(np.ones((2, 2))), [3, 3])
    self.assertEqual(model.accuracy(np.ones((2, 2)), [3, 3]), 1.0)


if __name__ == '__main__':
  absltest.main()

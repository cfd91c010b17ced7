"""SAP against disentanglement_lib's algorithm written with scikit-learn's
LinearSVC(C=0.01, class_weight='balanced'), and its known behaviours."""

import warnings

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from sklearn import exceptions
from sklearn import svm

from msdr.errors import UserInputError
from msdr.eval import disentanglement as dm
from msdr.eval import sap as sap_lib


def reference_sap(mus, ys, mus_test, ys_test):
  scores = np.zeros((mus.shape[1], ys.shape[1]))
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', exceptions.ConvergenceWarning)
    for i in range(mus.shape[1]):
      for j in range(ys.shape[1]):
        clf = svm.LinearSVC(C=0.01, class_weight='balanced')
        clf.fit(mus[:, i:i + 1], ys[:, j])
        scores[i, j] = np.mean(clf.predict(mus_test[:, i:i + 1])
                               == ys_test[:, j])
  ranked = np.sort(scores, axis=0)
  return np.mean(ranked[-1] - ranked[-2])


def make_case(seed, n=800, sizes=(2, 3, 5, 8), k=6):
  rng = np.random.default_rng(seed)
  factors = np.stack([rng.integers(s, size=2 * n) for s in sizes], axis=1)
  codes = factors @ rng.normal(size=(len(sizes), k))
  codes = codes + rng.normal(size=codes.shape)
  codes[:, 0] = 3 * factors[:, 0] + 0.1 * rng.normal(size=2 * n)
  return codes[:n], factors[:n], codes[n:], factors[n:]


class SapTest(parameterized.TestCase):

  @parameterized.parameters(0, 1, 2)
  def test_matches_sklearn_reference(self, seed):
    case = make_case(seed)
    # The same optima as liblinear's: equal to float rounding, not just 0.01.
    self.assertAlmostEqual(dm.sap(*case), reference_sap(*case), delta=1e-6)

  def test_tied_and_constant_codes_match_sklearn_reference(self):
    # Codes with many equal values (the active sets are cut between sorted
    # positions) and a dead code.
    a, b, c, d = make_case(7, n=600)
    a[:, 1], c[:, 1] = np.round(a[:, 1]), np.round(c[:, 1])
    a[:, 2], c[:, 2] = 0.5 * b[:, 2], 0.5 * d[:, 2]
    a[:, 3], c[:, 3] = 1.5, 1.5
    self.assertAlmostEqual(dm.sap(a, b, c, d), reference_sap(a, b, c, d),
                           delta=1e-6)

  def test_perfect_code_stays_low_as_in_the_reference(self):
    rng = np.random.default_rng(3)
    factors = rng.integers(10, size=(1000, 2))
    codes = np.concatenate([factors + 0.01 * rng.normal(size=(1000, 2)),
                            rng.normal(size=(1000, 1))], axis=1)
    ours = dm.sap(codes[:500], factors[:500], codes[500:], factors[500:])
    want = reference_sap(codes[:500], factors[:500], codes[500:],
                         factors[500:])
    self.assertAlmostEqual(ours, want, delta=0.01)
    self.assertLess(ours, 0.5)  # a C = 0.01 SVM on one code separates few

  def test_permuting_codes_leaves_sap_unchanged(self):
    a, b, c, d = make_case(4)
    order = [3, 0, 5, 1, 4, 2]
    self.assertAlmostEqual(dm.sap(a, b, c, d),
                           dm.sap(a[:, order], b, c[:, order], d), places=6)

  def test_continuous_factors_use_squared_correlation(self):
    rng = np.random.default_rng(5)
    y = rng.normal(size=(300, 2))
    z = np.stack([y[:, 0] + 0.3 * rng.normal(size=300),
                  rng.normal(size=300), np.full(300, 2.0)], axis=1)
    corr = np.corrcoef(np.concatenate([z[:, :2], y], axis=1), rowvar=False)
    scores = np.zeros((3, 2))
    scores[:2] = np.square(corr[:2, 2:])
    ranked = np.sort(scores, axis=0)
    got = dm.sap(z, y, z, y, continuous_factors=True)
    self.assertAlmostEqual(got, np.mean(ranked[-1] - ranked[-2]), places=10)

  def test_prefix_moments(self):
    x = np.random.default_rng(4).normal(size=(2, 3, 7))
    got = sap_lib._prefix_moments(x)
    self.assertEqual(got.shape, (2, 3, 8, 3))
    for i in range(8):  # the sums over the first i entries
      head = x[..., :i]
      np.testing.assert_allclose(got[..., i, 0], i)
      np.testing.assert_allclose(got[..., i, 1], head.sum(axis=-1),
                                 atol=1e-12)
      np.testing.assert_allclose(got[..., i, 2], (head**2).sum(axis=-1),
                                 atol=1e-12)

  def test_bad_inputs(self):
    a, b, c, d = make_case(6, n=50)
    with self.assertRaisesRegex(UserInputError, 'NaN'):
      dm.sap(np.where(a > 1, np.nan, a), b, c, d)
    with self.assertRaisesRegex(UserInputError, 'single value'):
      dm.sap(a, np.zeros_like(b), c, d)
    with self.assertRaisesRegex(UserInputError, 'K >= 2'):
      dm.sap(a[:, :1], b, c[:, :1], d)
    self.assertEqual(sap_lib.score_matrix(a, b, c, d).shape, (6, 4))


if __name__ == '__main__':
  absltest.main()

"""Explicitness and modularity_explicitness against disentanglement_lib's
algorithm written with scikit-learn (LogisticRegression, StandardScaler-style
z-scoring, MultiLabelBinarizer + roc_auc_score)."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from sklearn import linear_model
from sklearn import metrics
from sklearn import preprocessing

from msdr.errors import UserInputError
from msdr.eval import disentanglement as dm
from msdr.eval import explicitness


def reference_explicitness(codes_train, y_train, codes_test, y_test):
  mean, std = codes_train.mean(0), codes_train.std(0)
  x_train, x_test = (codes_train - mean) / std, (codes_test - mean) / std
  train, test = [], []
  for j in range(y_train.shape[1]):
    clf = linear_model.LogisticRegression().fit(x_train, y_train[:, j])
    mlb = preprocessing.MultiLabelBinarizer()
    train.append(metrics.roc_auc_score(
        mlb.fit_transform(y_train[:, j:j + 1]), clf.predict_proba(x_train)))
    test.append(metrics.roc_auc_score(
        mlb.fit_transform(y_test[:, j:j + 1]), clf.predict_proba(x_test)))
  return np.mean(train), np.mean(test)


def make_case(seed, n=400, k=5, sizes=(3, 4, 6)):
  rng = np.random.default_rng(seed)
  factors = np.stack([rng.integers(s, size=2 * n) for s in sizes], axis=1)
  mixing = rng.normal(size=(len(sizes), k))
  codes = factors @ mixing + rng.normal(scale=1.5, size=(2 * n, k))
  return codes[:n], factors[:n], codes[n:], factors[n:]


class ExplicitnessTest(parameterized.TestCase):

  @parameterized.parameters(0, 1, 2)
  def test_matches_sklearn_reference(self, seed):
    case = make_case(seed)
    want_train, want_test = reference_explicitness(*case)
    got = dm.modularity_explicitness(*case)
    self.assertAlmostEqual(got['explicitness_train'], want_train, delta=0.01)
    self.assertAlmostEqual(got['explicitness_test'], want_test, delta=0.01)
    self.assertAlmostEqual(got['modularity'],
                           dm.modularity(case[0], case[1]), places=12)

  def test_roc_auc_matches_sklearn_with_ties(self):
    rng = np.random.default_rng(3)
    labels = rng.integers(4, size=200)
    scores = np.round(rng.uniform(size=(200, 4)), 1)  # many ties
    want = metrics.roc_auc_score(np.eye(4)[labels], scores)
    got = explicitness.roc_auc_macro(labels, scores, np.arange(4))
    self.assertAlmostEqual(got, want, places=12)

  def test_perfect_codes_are_fully_explicit_and_dead_codes_are_safe(self):
    rng = np.random.default_rng(4)
    factors = rng.integers(5, size=(600, 2))
    codes = np.concatenate([factors + 0.01 * rng.normal(size=(600, 2)),
                            np.zeros((600, 1))], axis=1)  # one dead code
    got = dm.modularity_explicitness(codes[:300], factors[:300],
                                     codes[300:], factors[300:])
    self.assertGreater(got['explicitness_test'], 0.99)
    self.assertGreater(got['modularity'], 0.6)  # the dead code scores 0

  def test_single_valued_factor_is_an_error(self):
    codes = np.random.default_rng(5).normal(size=(50, 3))
    factors = np.zeros((50, 2), np.int64)
    with self.assertRaisesRegex(UserInputError, 'at least two factor values'):
      explicitness.explicitness(codes, factors, codes, factors)


if __name__ == '__main__':
  absltest.main()

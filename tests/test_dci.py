"""DCI against scikit-learn's GradientBoostingClassifier (disentanglement_lib's
classifier) and disentanglement_lib's scoring formulas, and its known
behaviours. All JAX runs share two compiled shapes (N = 300 train, 200 test,
9 trees per round, K = 4 or 3 codes)."""

# pylint: disable=protected-access

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np
import scipy.stats
from sklearn import ensemble

from msdr.errors import UserInputError
from msdr.eval import dci as dci_lib
from msdr.eval import gbt
from msdr.eval import gbt_search
from msdr.eval import gbt_tree
from msdr.eval import disentanglement as dm

SIZES = (2, 3, 5)  # one two-class factor (a single tree per round)


def make_case(seed, k=4, n=300, n_test=200):
  """Entangled codes: a random linear mix of the factors plus noise."""
  rng = np.random.default_rng(seed)
  factors = np.stack([rng.integers(s, size=n + n_test) for s in SIZES], 1)
  codes = factors @ rng.normal(size=(len(SIZES), k))
  codes = codes + rng.normal(size=codes.shape)
  return codes[:n], factors[:n], codes[n:], factors[n:]


def disentangled_case(seed):
  """Code i is a noisy monotone function of factor i alone."""
  rng = np.random.default_rng(seed)
  factors = np.stack([rng.integers(s, size=500) for s in SIZES], 1)
  codes = np.stack([np.tanh(factors[:, i] - s / 2) + 0.05 * rng.normal(size=500)
                    for i, s in enumerate(SIZES)], axis=1)
  return codes[:300], factors[:300], codes[300:], factors[300:]


# disentanglement_lib's scoring, verbatim apart from names.
def reference_disentanglement(importance):
  per_code = 1. - scipy.stats.entropy(importance.T + 1e-11,
                                      base=importance.shape[1])
  if importance.sum() == 0.:
    importance = np.ones_like(importance)
  code_importance = importance.sum(axis=1) / importance.sum()
  return np.sum(per_code * code_importance)


def reference_completeness(importance):
  per_factor = 1. - scipy.stats.entropy(importance + 1e-11,
                                        base=importance.shape[0])
  if importance.sum() == 0.:
    importance = np.ones_like(importance)
  factor_importance = importance.sum(axis=0) / importance.sum()
  return np.sum(per_factor * factor_importance)


class DciTest(parameterized.TestCase):

  def assert_scores_close(self, got, want, delta):
    self.assertEqual(set(got), {'disentanglement', 'completeness',
                                'informativeness_train',
                                'informativeness_test'})
    for name in want:
      self.assertAlmostEqual(got[name], want[name], delta=delta, msg=name)

  @parameterized.parameters(0, 1)
  def test_matches_sklearn(self, seed):
    case = make_case(seed)
    ours = dci_lib.gbt_importance(*case)
    # sklearn's random_state=None draws its feature order from NumPy's
    # global RNG: seed it, so the reference (and the test) is reproducible.
    np.random.seed(seed)
    want = dci_lib.gbt_importance(*case, backend='sklearn')
    # Per factor: importances and accuracies as sklearn's own random feature
    # order makes them vary (about 0.005 between random states).
    np.testing.assert_allclose(ours[0], want[0], atol=0.03)
    np.testing.assert_allclose(ours[1], want[1], atol=0.02)
    np.testing.assert_allclose(ours[2], want[2], atol=0.02)
    scores = dci_lib.dci(*case)
    self.assert_scores_close(scores, {
        'disentanglement': dci_lib.disentanglement(want[0]),
        'completeness': dci_lib.completeness(want[0]),
        'informativeness_train': np.mean(want[1]),
        'informativeness_test': np.mean(want[2])}, delta=0.01)
    self.assertEqual(scores, dm.dci(*case))

  def assert_first_round_matches(self, case):
    """One round: sklearn's raw scores for one of its random feature orders.

    Small nodes often have equally good splits on several features; sklearn
    breaks such ties by a random feature order, so the check is that some
    random_state gives the same decision_function (train and test, so the
    thresholds too) on at least 98% of the samples.
    """
    codes, factors, codes_test, factors_test = case
    fits = gbt._fit_jax(*dci_lib._check_inputs(*case), num_rounds=1)
    center = lambda s: s - s.mean(axis=-1, keepdims=True)  # sklearn's link
    for j, (_, _, raw, raw_test, _) in enumerate(fits):
      best = 0.0
      for random_state in range(20):
        model = ensemble.GradientBoostingClassifier(
            n_estimators=1, random_state=random_state).fit(codes, factors[:, j])
        same = []
        for x, ours in ((codes, raw.T), (codes_test, raw_test.T)):
          want = model.decision_function(x).reshape(len(x), -1)
          if want.shape[1] > 1:
            want, ours = center(want), center(ours)
          same.append(np.mean(np.all(np.abs(want - ours) < 1e-5, axis=1)))
        best = max(best, min(same))
        if best == 1.0:
          break
      self.assertGreaterEqual(best, 0.98, f'factor {j}')

  def test_concurrent_groups_boost_as_one_program(self):
    # Factors boosted in separate groups (threads) get the trees they get
    # together: the same raw scores up to float rounding.
    case = dci_lib._check_inputs(*make_case(5))
    together = gbt._fit_jax(*case, num_rounds=3, workers=1)
    grouped = gbt._fit_jax(*case, num_rounds=3, workers=2)
    for one, other in zip(together, grouped):
      np.testing.assert_array_equal(one[0], other[0])
      for a, b in zip(one[2:], other[2:]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    self.assertEqual(gbt._groups([1, 5, 40, 32, 32], 2), [[2, 1, 0], [3, 4]])
    self.assertEqual(gbt._groups([3, 4], 8), [[1], [0]])

  @parameterized.parameters(2, 3)
  def test_first_round_is_sklearns(self, seed):
    self.assert_first_round_matches(make_case(seed))

  def test_ties_and_arbitrary_labels(self):
    codes, factors, codes_test, factors_test = make_case(4)
    # Half-integer codes: many exactly tied values; labels need not be 0..C-1.
    codes, codes_test = np.round(codes * 2) / 2, np.round(codes_test * 2) / 2
    relabel = lambda f: np.stack([np.where(f[:, 0] == 1, 7, -3), 10 * f[:, 1],
                                  f[:, 2] - 2], axis=1)
    case = (codes, relabel(factors), codes_test, relabel(factors_test))
    self.assert_first_round_matches(case)
    want = dci_lib.dci(*case, backend='sklearn')
    self.assert_scores_close(dci_lib.dci(*case), want, delta=0.01)

  def test_disentangled_code_scores_high_and_rotation_low(self):
    codes, factors, codes_test, factors_test = disentangled_case(5)
    scores = dci_lib.dci(codes, factors, codes_test, factors_test)
    self.assertGreater(scores['disentanglement'], 0.9)
    self.assertGreater(scores['completeness'], 0.9)
    self.assertEqual(scores['informativeness_train'], 1.0)
    rotation = scipy.stats.special_ortho_group.rvs(3, random_state=0)
    rotated = dci_lib.dci(codes @ rotation, factors, codes_test @ rotation,
                          factors_test)
    self.assertLess(rotated['disentanglement'],
                    scores['disentanglement'] - 0.5)
    self.assertLess(rotated['completeness'], scores['completeness'] - 0.5)
    self.assertGreater(rotated['informativeness_train'], 0.95)

  def test_permuting_codes_permutes_importance(self):
    codes, factors, codes_test, factors_test = make_case(6)
    order = [2, 0, 3, 1]
    imp = dci_lib.gbt_importance(codes, factors, codes_test, factors_test)
    permuted = dci_lib.gbt_importance(codes[:, order], factors,
                                      codes_test[:, order], factors_test)
    # Equal up to ties between features, broken by feature index.
    np.testing.assert_allclose(permuted[0], imp[0][order], atol=0.03)
    np.testing.assert_allclose(permuted[1], imp[1], atol=0.02)
    self.assert_scores_close(
        dci_lib.dci(codes[:, order], factors, codes_test[:, order],
                    factors_test),
        dci_lib.dci(codes, factors, codes_test, factors_test), delta=0.01)

  def test_dead_code_dimension_has_no_importance(self):
    codes, factors, codes_test, factors_test = disentangled_case(7)
    with_dead = lambda c: np.concatenate([c[:, :1], np.full((len(c), 1), 0.3),
                                          c[:, 1:]], axis=1)
    imp, train_acc, test_acc = dci_lib.gbt_importance(
        with_dead(codes), factors, with_dead(codes_test), factors_test)
    alive = dci_lib.gbt_importance(codes, factors, codes_test, factors_test)
    np.testing.assert_array_equal(imp[1], 0.0)
    np.testing.assert_array_equal(imp[[0, 2, 3]], alive[0])
    np.testing.assert_array_equal(train_acc, alive[1])
    np.testing.assert_array_equal(test_acc, alive[2])
    # A dead code has weight 0 in disentanglement; completeness counts it.
    self.assertAlmostEqual(dci_lib.disentanglement(imp),
                           dci_lib.disentanglement(alive[0]), places=9)
    want = dci_lib.gbt_importance(with_dead(codes), factors,
                                  with_dead(codes_test), factors_test,
                                  backend='sklearn')
    np.testing.assert_array_equal(want[0][1], 0.0)
    np.testing.assert_allclose(imp, want[0], atol=0.03)
    # No code varies: no splits, the prior's majority class is predicted, and
    # disentanglement_lib's formulas give 0 for an all-zero matrix.
    dead = np.full((len(codes), 2), 0.3)
    scores = dci_lib.dci(dead, factors, dead[:200], factors_test)
    majority = [np.mean(f == np.bincount(g).argmax())
                for f, g in zip(factors_test.T, factors.T)]
    self.assert_scores_close(scores, {
        'disentanglement': 0.0, 'completeness': 0.0,
        'informativeness_test': np.mean(majority)}, delta=1e-9)

  def test_single_valued_factor(self):
    codes, factors, codes_test, factors_test = make_case(8)
    constant = lambda f, v: np.concatenate([f[:, :1], np.full((len(f), 1), v),
                                            f[:, 1:]], axis=1)
    test_values = np.where(np.arange(len(codes_test)) < 50, 4, 9)
    case = (codes, constant(factors, 4), codes_test,
            constant(factors_test, test_values[:, None]))
    imp, train_acc, test_acc = dci_lib.gbt_importance(*case)
    rest = dci_lib.gbt_importance(codes, factors, codes_test, factors_test)
    np.testing.assert_array_equal(imp[:, 1], 0.0)
    np.testing.assert_array_equal(imp[:, [0, 2, 3]], rest[0])
    self.assertEqual(train_acc[1], 1.0)
    self.assertEqual(test_acc[1], 0.25)  # predicts 4; 50 of 200 test rows are
    np.testing.assert_array_equal(train_acc[[0, 2, 3]], rest[1])
    want = dci_lib.gbt_importance(*case, backend='sklearn')
    np.testing.assert_array_equal(want[0][:, 1], 0.0)
    self.assertEqual((want[1][1], want[2][1]), (1.0, 0.25))

  # (1, 8): one block per step, the fallback to a full search at times;
  # (1, 10**4): one block per step, never a fallback. tied_bounds: code 2 is
  # code 0 with the order inside each block reversed and the residuals are
  # eighths (exact sums), so every bound of code 2 equals one of code 0 but
  # the gains inside differ: a step that did not take tied blocks in top_k's
  # order (bound, then index) would skip some.
  @parameterized.parameters((32, 8), (1, 8), (1, 10**4), (1, 10**4, True),
                            (2, 10**4, True))
  def test_pruned_split_search_is_exact(self, candidates, max_steps,
                                        tied_bounds=False):
    rng = np.random.default_rng(11)
    n, k, t = 200, 3, 5
    codes = rng.normal(size=(n, k)).astype(np.float32)
    codes[:, 1] = np.round(codes[:, 1] * 3)  # ties: splits only at run ends
    codes[:, 2] = np.round(codes[:, 2] * 10)
    r = np.where(rng.random((t, n)) < 0.2, 1.0, 0.0) - rng.random((t, n)) / 4
    if tied_bounds:
      block = gbt_search.BLOCK
      rank = np.argsort(np.argsort(codes[:, 0], kind='stable'), kind='stable')
      codes[:, 2] = rank // block * block + block - 1 - rank % block
      r = rng.integers(-8, 9, size=(t, n)) / 8
    _, sorted_index, valid = gbt._sort_columns(codes)
    flat_index = np.arange(t)[:, None, None, None] * (n + 1) + sorted_index
    to_sorted = lambda a: np.pad(a, [(0, 0), (0, 1)],
                                 constant_values=-1).reshape(-1)[flat_index]
    rs = to_sorted(r).astype(np.float32)
    rs[to_sorted(np.zeros((t, n))) < 0] = 0.0
    leaf = rng.integers(4, size=(t, n))
    stats = None
    old = gbt_search.CANDIDATES, gbt_search.MAX_STEPS
    gbt_search.CANDIDATES, gbt_search.MAX_STEPS = candidates, max_steps
    try:
      # A fresh function, so the trace reads the patched constants.
      search = jax.jit(lambda *a: gbt_search.search(*a))  # pylint: disable=unnecessary-lambda
      full_search = jax.jit(gbt_search.full_search)
      for depth in range(3):
        num_nodes = 2**depth
        sorted_node = to_sorted(leaf >> (2 - depth))
        splittable = rng.random((num_nodes, t)) < 0.9
        (gain, pos, feat), stats, _ = search(rs, sorted_node, valid,
                                             splittable, stats)
        want = full_search(rs, sorted_node, valid, splittable)
        np.testing.assert_allclose(gain, want[0], rtol=1e-5)
        found = np.isfinite(gain)
        np.testing.assert_array_equal(np.where(found, feat, 0),
                                      np.where(found, want[2], 0))
        # The same partition (equal positions up to ones with no node sample
        # between them): equal numbers of the node's samples on the left.
        natural = np.swapaxes(sorted_node, -1, -2).reshape(t, k, -1)
        for m, tree in zip(*np.nonzero(found)):
          in_node = natural[tree, feat[m, tree]] == m
          self.assertEqual(in_node[:pos[m, tree] + 1].sum(),
                           in_node[:want[1][m, tree] + 1].sum())
    finally:
      gbt_search.CANDIDATES, gbt_search.MAX_STEPS = old

  def test_cross_rank_and_sorted_routing(self):
    rng = np.random.default_rng(15)
    n, k, t = 100, 3, 2
    codes = rng.normal(size=(n, k)).astype(np.float32)
    codes[:, 1] = np.round(codes[:, 1])  # ties
    rank, sorted_index, valid = gbt._sort_columns(codes)
    cross = np.asarray(gbt._cross_rank(rank, sorted_index))
    for f in range(k):
      for kk in range(k):
        for p in range(sorted_index[kk].size):
          i, j = p % gbt_search.BLOCK, p // gbt_search.BLOCK
          sample = sorted_index[kk, i, j]
          want = n if sample == n else np.argsort(
              np.argsort(codes[:, f], kind='stable'), kind='stable')[sample]
          self.assertEqual(cross[f, kk, i, j], want)
    # Routing in sorted order = routing in sample order, then sorted.
    flat_index = np.arange(t)[:, None, None, None] * (n + 1) + sorted_index
    to_sorted = lambda a: np.pad(a, [(0, 0), (0, 1)],
                                 constant_values=-1).reshape(-1)[flat_index]
    node = rng.integers(2, size=(t, n))
    feat = rng.integers(k, size=(t, 2))
    pos = rng.integers(n, size=(t, 2))
    split = rng.random((t, 2)) < 0.8
    trees = np.arange(t)[:, None]
    right = ((rank[feat[trees, node], np.arange(n)] > pos[trees, node]) &
             split[trees, node])
    got = jax.jit(gbt_tree._route_sorted)(
        to_sorted(node).astype(np.int8), cross, feat, pos, split)
    np.testing.assert_array_equal(got, to_sorted(2 * node + right))
    # Whole trees: the same with the table as with per-level gathers.
    r = rng.normal(size=(t, n + 1)).astype(np.float32)
    r[:, n] = 0.0
    sorted_x = np.pad(codes.T, [(0, 0), (0, 1)], constant_values=np.inf)[
        np.arange(k)[:, None, None], sorted_index]
    grow = jax.jit(gbt_tree.grow)
    with_table = grow(r, sorted_index, valid, rank, sorted_x, cross)
    gathered = grow(r, sorted_index, valid, rank, sorted_x, None)
    for a, b in zip(jax.tree.leaves(with_table), jax.tree.leaves(gathered)):
      np.testing.assert_array_equal(a, b)
    self.assertEqual(cross.dtype, np.int16)
    old, gbt._CROSS_RANK_ELEMENTS = gbt._CROSS_RANK_ELEMENTS, cross.size - 1
    try:  # a table over the limit: None, and grow gathers instead
      self.assertIsNone(gbt._cross_rank(rank, sorted_index))
    finally:
      gbt._CROSS_RANK_ELEMENTS = old

  def test_top_blocks_is_top_k_in_column_order(self):
    # Many ties (bounds of six values, half -inf): the same entries as one
    # top_k over all blocks laid out column by column.
    rng = np.random.default_rng(16)
    top_blocks = jax.jit(gbt_search.top_blocks, static_argnums=1)
    for k, num_blocks, q in ((4, 50, 8), (3, 5, 7), (6, 3, 8), (1, 40, 8)):
      for _ in range(10):
        v = rng.integers(0, 6, size=(3, k, num_blocks)).astype(np.float32)
        v[rng.random(v.shape) < 0.5] = -np.inf
        top, feat, column = map(np.asarray, top_blocks(v, q))
        flat = np.swapaxes(v, -1, -2).reshape(3, -1)
        order = np.argsort(-flat, axis=-1, kind='stable')[:, :q]
        want = np.take_along_axis(flat, order, axis=-1)
        np.testing.assert_array_equal(top, want)
        finite = np.isfinite(want)
        np.testing.assert_array_equal((column * k + feat)[finite],
                                      order[finite])

  def test_prefix_sums(self):
    rng = np.random.default_rng(13)
    for length in (1, 5, 32, 33, 313):
      x = rng.integers(0, 5, size=(3, 2, length)).astype(np.float32)
      np.testing.assert_array_equal(gbt_search._prefix_natural(x),
                                    np.cumsum(x, axis=-1))
    terms = [np.float32(v) for v in rng.integers(0, 9, size=7)]
    self.assertEqual(gbt_search._pairwise_sum(terms), sum(terms))
    self.assertEqual(gbt_search._pairwise_sum(terms, np.maximum), max(terms))

  def test_folded_reductions(self):
    rng = np.random.default_rng(14)
    for length in (1, 7, 10):
      x = rng.normal(size=(3, length)).astype(np.float32)
      got = gbt_tree._reduce([x, x], ['max', 'min'], fold=True)
      np.testing.assert_array_equal(got[0], x.max(axis=1))
      np.testing.assert_array_equal(got[1], x.min(axis=1))
      ints = rng.integers(-9, 9, size=(3, length)).astype(np.float32)
      np.testing.assert_array_equal(
          gbt_tree._reduce([ints], ['sum'], fold=True)[0], ints.sum(axis=1))

  def test_bracket_finds_the_samples_a_split_falls_between(self):
    rng = np.random.default_rng(12)
    n, k, t = 200, 3, 5
    codes = rng.normal(size=(n, k)).astype(np.float32)
    _, sorted_index, valid = gbt._sort_columns(codes)
    flat_index = np.arange(t)[:, None, None, None] * (n + 1) + sorted_index
    to_sorted = lambda a: np.pad(a, [(0, 0), (0, 1)],
                                 constant_values=-1).reshape(-1)[flat_index]
    leaf = rng.integers(4, size=(t, n))
    rs = to_sorted(rng.normal(size=(t, n))).astype(np.float32)
    search = jax.jit(gbt_search.search)
    stats = None
    for depth in range(3):
      m = 2**depth
      sorted_node = to_sorted(leaf >> (2 - depth))
      _, stats, c_end = search(rs, sorted_node, valid, np.ones((m, t), bool),
                               stats)
      feat = rng.integers(k, size=(m, t))
      pos = rng.integers(20, n - 20, size=(m, t))
      last, first = jax.jit(gbt_search.bracket)(sorted_node, c_end, feat, pos)
      natural = np.swapaxes(sorted_node, -1, -2).reshape(t, k, -1)
      for node in range(m):
        for tree in range(t):
          where = np.flatnonzero(natural[tree, feat[node, tree]] == node)
          p = pos[node, tree]
          self.assertEqual(last[node, tree], where[where <= p].max())
          self.assertEqual(first[node, tree], where[where > p].min())

  def test_scores_from_importance_match_disentanglement_lib(self):
    rng = np.random.default_rng(9)
    for shape in ((5, 3), (2, 4), (6, 1), (1, 3)):
      importance = rng.random(shape) * (rng.random(shape) < 0.7)
      importance[0] = 0.0  # a dead code
      if shape[1] > 1:
        self.assertAlmostEqual(dci_lib.disentanglement(importance),
                               reference_disentanglement(importance), places=12)
      else:  # scipy's base-1 entropy divides by 0; see the module docstring
        self.assertEqual(dci_lib.disentanglement(importance), 1.0)
      if shape[0] > 1:
        self.assertAlmostEqual(dci_lib.completeness(importance),
                               reference_completeness(importance), places=12)
      else:
        self.assertEqual(dci_lib.completeness(importance), 1.0)
    zero = np.zeros((4, 3))
    self.assertAlmostEqual(dci_lib.disentanglement(zero),
                           reference_disentanglement(zero), places=12)
    self.assertAlmostEqual(dci_lib.completeness(zero),
                           reference_completeness(zero), places=12)

  def test_bad_inputs(self):
    a, b, c, d = make_case(10, n=40, n_test=20)
    with self.assertRaisesRegex(UserInputError, 'NaN'):
      dci_lib.dci(np.where(a > 1, np.nan, a), b, c, d)
    with self.assertRaisesRegex(UserInputError, 'NaN'):
      dci_lib.dci(a, b, np.where(c > 1, np.nan, c), d)
    with self.assertRaisesRegex(UserInputError, 'infinite'):
      dci_lib.dci(np.where(a > 1, np.inf, a), b, c, d)
    with self.assertRaisesRegex(UserInputError, 'non-zero number of rows'):
      dci_lib.dci(a[:-1], b, c, d)
    with self.assertRaisesRegex(UserInputError, 'number of columns'):
      dci_lib.dci(a, b, c[:, :3], d)
    with self.assertRaisesRegex(UserInputError, 'number of columns'):
      dci_lib.dci(a, b, c, d[:, :2])
    with self.assertRaisesRegex(UserInputError, 'integer'):
      dci_lib.dci(a, b + 0.5, c, d)
    with self.assertRaisesRegex(UserInputError, r'\[N, K\]'):
      dci_lib.dci(a[:, 0], b, c, d)
    with self.assertRaisesRegex(UserInputError, 'backend'):
      dci_lib.dci(a, b, c, d, backend='torch')
    with self.assertRaisesRegex(UserInputError, 'num_rounds'):
      dci_lib.gbt_importance(a, b, c, d, num_rounds=0)


if __name__ == '__main__':
  absltest.main()

"""Tests for msdr.eval.disentanglement against an independent NumPy reference
written here from disentanglement_lib's published algorithms (sklearn is not in
the venv, so mutual_info_score is hand-written from its contingency formula)."""

from __future__ import annotations

from unittest import mock

from absl.testing import absltest, parameterized
import numpy as np

from msdr.errors import UserInputError
from msdr.eval import disentanglement as dis

N, K, F = 500, 6, 4
VALUES = (3, 5, 8, 4)


# ---- NumPy reference (disentanglement_lib, float64) ----

def ref_discretize(x, num_bins=20):
  out = np.zeros(x.shape, np.int64)
  for i in range(x.shape[1]):
    out[:, i] = np.digitize(x[:, i], np.histogram(x[:, i], num_bins)[1][:-1])
  return out


def ref_mutual_info_score(labels_true, labels_pred):
  _, a = np.unique(labels_true, return_inverse=True)
  _, b = np.unique(labels_pred, return_inverse=True)
  table = np.zeros((a.max() + 1, b.max() + 1))
  np.add.at(table, (a, b), 1)
  n = table.sum()
  pi, pj = table.sum(1), table.sum(0)
  if pi.size == 1 or pj.size == 1:  # sklearn: a single-valued side gives 0
    return 0.0
  nz = table > 0
  outer = np.outer(pi, pj)[nz]
  p = table[nz] / n
  mi = p * (np.log(table[nz]) - np.log(n)) + p * (np.log(n) * 2 - np.log(outer))
  mi = np.where(np.abs(mi) < np.finfo(mi.dtype).eps, 0.0, mi)
  return max(mi.sum(), 0.0)


def ref_mi_matrix(mus, ys):
  return np.array([[ref_mutual_info_score(ys[:, j], mus[:, i])
                    for j in range(ys.shape[1])] for i in range(mus.shape[1])])


def ref_entropy(ys):
  return np.array([ref_mutual_info_score(y, y) for y in ys.T])


def ref_mig(codes, factors, num_bins=20):
  m = ref_mi_matrix(ref_discretize(codes, num_bins), factors)
  entropy = ref_entropy(factors)
  sorted_m = np.sort(m, axis=0)[::-1]
  keep = entropy > 0  # msdr's documented choice for constant factors
  return np.mean((sorted_m[0, keep] - sorted_m[1, keep]) / entropy[keep])


def ref_modularity(codes, factors, num_bins=20):
  mi = ref_mi_matrix(ref_discretize(codes, num_bins), factors)
  squared_mi = mi**2
  max_squared_mi = np.max(squared_mi, axis=1)
  numerator = np.sum(squared_mi, axis=1) - max_squared_mi
  denominator = max_squared_mi * (squared_mi.shape[1] - 1.)
  with np.errstate(divide='ignore', invalid='ignore'):
    delta = numerator / denominator
  score = 1. - delta
  score[max_squared_mi == 0.] = 0.
  return np.mean(score)


def ref_scalable_disentanglement_score(gen_factors, latents, diff_quantile):
  num_gen, num_lat = gen_factors.shape[1], latents.shape[1]
  max_deviations = np.max(np.abs(latents - latents.mean(axis=0)), axis=0)
  cum_deviations = np.zeros([num_lat, num_gen])
  for i in range(num_gen):
    unique_factors = np.unique(gen_factors[:, i], axis=0)
    for value in unique_factors:
      match = gen_factors[:, i] == value
      e_loc = np.mean(latents[match, :], axis=0)
      diffs = np.abs(latents[match, :] - e_loc)
      cum_deviations[:, i] += np.percentile(diffs, q=diff_quantile * 100,
                                            axis=0)
    cum_deviations[:, i] /= unique_factors.shape[0]
  irs_matrix = 1.0 - cum_deviations / max_deviations[:, np.newaxis]
  scores = irs_matrix.max(axis=1)
  if np.sum(max_deviations) > 0.0:
    return np.average(scores, weights=max_deviations)
  return np.mean(scores)


def ref_irs(codes, factors, diff_quantile=0.99, num_bins=20):
  ys_discrete = ref_discretize(factors, num_bins)
  active = codes.var(axis=0) > 0.
  if not active.any():
    return 0.0
  return ref_scalable_disentanglement_score(ys_discrete, codes[:, active],
                                            diff_quantile)


# ---- data ----

def random_factors(rng, n=N, values=VALUES):
  return np.stack([rng.integers(0, v, n) for v in values], axis=1)


def entangled_case(seed, n=N):
  """Codes mixing factors plus noise, float32 (what the metrics see)."""
  rng = np.random.default_rng(seed)
  factors = random_factors(rng, n) * 3 - 2  # arbitrary integer values
  mix = rng.normal(size=(F, K))
  codes = factors @ mix + rng.normal(size=(n, K)) * 2.0
  return codes.astype(np.float32), factors


def disentangled_case(seed=0):
  rng = np.random.default_rng(seed)
  factors = random_factors(rng)
  codes = np.concatenate(
      [factors + rng.normal(size=(N, F)) * 0.01, rng.normal(size=(N, K - F))],
      axis=1).astype(np.float32)
  return codes, factors


METRICS = (('mig', dis.mig, ref_mig), ('modularity', dis.modularity,
                                       ref_modularity),
           ('irs', dis.irs, ref_irs))


class DisentanglementTest(parameterized.TestCase):

  def test_histogram_discretize_matches_numpy(self):
    codes, _ = entangled_case(0)
    codes[:, 2] = 1.25  # constant column: np.histogram's [v - 0.5, v + 0.5]
    codes[7, 0] = codes[:, 0].max()
    got = np.asarray(dis.histogram_discretize(codes))
    np.testing.assert_array_equal(got, ref_discretize(codes))
    self.assertEqual(got.min(), 1)
    self.assertEqual(got[:, 0].max(), 20)

  def test_histogram_discretize_integers_match_numpy(self):
    factors = np.stack([np.arange(N) % 31 - 7, np.full(N, 3), np.arange(N) % 3,
                        (np.arange(N) * 7) % 45], axis=1)
    np.testing.assert_array_equal(
        np.asarray(dis.histogram_discretize(factors)), ref_discretize(factors))

  def test_mutual_info_and_entropy_match_reference(self):
    codes, factors = entangled_case(1)
    mus = ref_discretize(codes)
    np.testing.assert_allclose(
        np.asarray(dis.discrete_mutual_info(mus, factors)),
        ref_mi_matrix(mus, factors), atol=1e-6)
    np.testing.assert_allclose(np.asarray(dis.discrete_entropy(factors)),
                               ref_entropy(factors), atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(dis.discrete_entropy(factors[:, :1] * 0)), [0.0])

  @parameterized.named_parameters(
      (f'{name}_seed{seed}', fn, ref, seed)
      for name, fn, ref in METRICS for seed in (2, 3, 4))
  def test_matches_reference_on_random_codes(self, fn, ref, seed):
    codes, factors = entangled_case(seed)
    self.assertAlmostEqual(fn(codes, factors), ref(codes, factors), delta=1e-6)

  @parameterized.named_parameters((name, fn, ref) for name, fn, ref in METRICS)
  def test_fewer_samples_than_bins(self, fn, ref):
    codes, factors = entangled_case(5, n=10)
    self.assertAlmostEqual(fn(codes, factors), ref(codes, factors), delta=1e-6)

  def test_irs_diff_quantile_one(self):
    codes, factors = entangled_case(6)
    self.assertAlmostEqual(
        dis.irs(codes, factors, diff_quantile=1.0),
        ref_irs(codes, factors, diff_quantile=1.0), delta=1e-6)

  def test_irs_percentiles_by_sort_and_by_top_k(self):
    # Both ways of taking the within-group percentiles, at quantiles where
    # the top-k way needs few (0.99) to all (0.0) of a group's values.
    codes, factors = entangled_case(8)
    for q in (0.0, 0.37, 0.5, 0.99):
      want = ref_irs(codes, factors, diff_quantile=q)
      for limit in (0, N):  # 0: always the sort
        with mock.patch.object(dis, '_TOP_K_LIMIT', limit):
          self.assertAlmostEqual(dis.irs(codes, factors, diff_quantile=q),
                                 want, delta=1e-6, msg=f'q={q} limit={limit}')

  def test_disentangled_code_scores_high_and_rotation_lowers_mig(self):
    codes, factors = disentangled_case()
    self.assertGreater(dis.mig(codes, factors), 0.9)
    self.assertGreater(dis.modularity(codes, factors), 0.9)
    rotation, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(K, K)))
    rotated = (codes @ rotation).astype(np.float32)
    self.assertLess(dis.mig(rotated, factors), 0.3)
    self.assertAlmostEqual(dis.mig(rotated, factors),
                           ref_mig(rotated, factors), delta=1e-6)

  def test_dead_code_dimension(self):
    codes, factors = entangled_case(7)
    codes[:, 1] = 0.5
    for _, fn, ref in METRICS:
      self.assertAlmostEqual(fn(codes, factors), ref(codes, factors),
                             delta=1e-6)
    # The dead code counts 0 in modularity's mean; IRS ignores it.
    live = np.delete(codes, 1, axis=1)
    self.assertAlmostEqual(dis.modularity(codes, factors),
                           ref_modularity(live, factors) * (K - 1) / K,
                           delta=1e-6)
    self.assertAlmostEqual(dis.irs(codes, factors), ref_irs(live, factors),
                           delta=1e-6)
    self.assertEqual(dis.irs(np.ones((N, K), np.float32), factors), 0.0)

  def test_permuting_codes_leaves_mig_unchanged(self):
    codes, factors = entangled_case(8)
    permuted = codes[:, np.random.default_rng(0).permutation(K)]
    self.assertAlmostEqual(dis.mig(permuted, factors), dis.mig(codes, factors),
                           delta=1e-6)

  def test_constant_factor_left_out_of_mig(self):
    codes, factors = entangled_case(9)
    with_constant = factors.copy()
    with_constant[:, 3] = 4
    self.assertAlmostEqual(dis.mig(codes, with_constant),
                           ref_mig(codes, factors[:, :3]), delta=1e-6)
    with self.assertRaisesRegex(UserInputError, 'constant'):
      dis.mig(codes, np.zeros_like(factors))

  @parameterized.named_parameters((name, fn) for name, fn, _ in METRICS)
  def test_nan_codes_raise(self, fn):
    codes, factors = entangled_case(10)
    codes[3, 1] = codes[9, 4] = np.nan
    with self.assertRaisesRegex(UserInputError, '2 NaN entries'):
      fn(codes, factors)

  @parameterized.named_parameters((name, fn) for name, fn, _ in METRICS)
  def test_bad_shapes_raise(self, fn):
    codes, factors = entangled_case(11)
    with self.assertRaises(UserInputError):
      fn(codes[:-1], factors)
    with self.assertRaises(UserInputError):
      fn(codes[:, 0], factors)
    with self.assertRaises(UserInputError):
      fn(codes, factors.astype(np.float32))

  def test_too_few_codes_or_factors_raise(self):
    codes, factors = entangled_case(12)
    with self.assertRaisesRegex(UserInputError, '2 code'):
      dis.mig(codes[:, :1], factors)
    with self.assertRaisesRegex(UserInputError, '2 factors'):
      dis.modularity(codes, factors[:, :1])


if __name__ == '__main__':
  absltest.main()

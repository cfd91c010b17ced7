"""DCI (Eastwood & Williams 2018): disentanglement, completeness and
informativeness, as disentanglement_lib's `evaluation/metrics/dci.py` computes
them.

For every factor j, disentanglement_lib fits scikit-learn's
`GradientBoostingClassifier()` with its defaults on the train codes, and
  * column j of the importance matrix R [K, F] is |feature_importances_|;
  * informativeness_{train,test} is the accuracy mean(predict(codes) == y)
    averaged over factors (disentanglement_lib names them train_err and
    test_err, but they are accuracies);
  * disentanglement = sum_i rho_i (1 - H_F(R_i. / sum R_i.)) with
    rho_i = sum_j R_ij / sum R, H_F the entropy in base F (number of factors)
    of code i's row, 1e-11 added to every entry first;
  * completeness = sum_j rho_j (1 - H_K(R_.j / sum R_.j)), H_K in base K
    (number of codes), rho_j = column sums / sum R (so, as every non-empty
    column sums to 1, the mean over factors with a non-zero column).
  If R is all zero, rho is computed from a matrix of ones instead.

The classifier (sklearn's defaults, reproduced here in JAX): 100 boosting
rounds, learning rate 0.1, log loss, init raw score = log class prior (logit of
the prior for two classes), subsample 1.0. Each round computes the negative
gradient of the loss, r = y_c - p_c for every class c (softmax p; with two
classes a single tree and the logistic p), and fits one regression tree per
class to r:
  * depth 3, min_samples_split 2, min_samples_leaf 1, squared-error criterion
    (`friedman_mse` ranks splits identically, and sklearn >= 1.9 uses
    squared_error for the boosted trees anyway): a node is split at the
    (feature, threshold) maximising the between-children sum of squares
    (n_r s_l - n_l s_r)^2 / (n_l n_r n) of r, searched exactly over every
    threshold between consecutive distinct values of the node's samples (values
    less than 1e-7 apart count as equal, as sklearn's FEATURE_THRESHOLD); a
    node with fewer than 2 samples, constant residuals (sklearn: impurity <=
    machine epsilon; here: all float32 residuals equal) or all features
    constant on it is a leaf;
  * thresholds are the midpoint of the two values the split falls between;
  * each leaf then holds one Newton step, sum(r) / sum(p (1 - p)), times
    (C - 1) / C with C > 2 classes (sklearn's multinomial formula); 0 where the
    denominator is 0; the raw scores move by 0.1 times the leaf value.
Prediction is the argmax of the raw scores (raw >= 0 for two classes).
`feature_importances_` is the sum over all trees and splits of the split's
between-children sum of squares per feature, normalised to sum 1 (sklearn's
per-tree impurity decrease averaged over trees; the normalisations cancel).

The JAX backend grows all the trees of a round (one per class and factor)
together, a few at a time so the arrays stay in cache, with no sorting inside
the jit: each code column is sorted once on the host and its positions are laid
out in blocks of B = 32 ([B, N / B], position j B + i at [i, j]). Per tree
level, the residuals and the samples' current nodes are gathered into every
column's sorted order, and the best split of every node of every tree is found
exactly in two steps:
  1. per block, the node's residual sum, absolute sum and count (summed for
     left children only; a right child's are its parent's minus its
     sibling's) and their block-level cumulative sums give the exact gain of
     the split after each block's last position, and an upper bound on the
     gain of any split inside the block (the gain is a convex function of the
     left sum and count over a concave one, and the block confines both);
  2. only the blocks whose bound reaches the best block-end gain (rarely more
     than a few dozen of the K N / B) are searched position by position; if
     some node has more than 128 such blocks the level falls back to full
     cumulative sums over every position.
Samples are routed by their rank in the split column (the exact partition);
test samples by the thresholds. Exact ties between candidate splits, which
sklearn breaks by a random feature order (disentanglement_lib leaves
random_state=None, so its own scores vary by about 0.005), go to the lowest
code index, then the lowest threshold. Constant code columns are left out of
the search. Arithmetic is float32 (sklearn: float64 gradients and sums),
which can flip near-ties; where sklearn's float64 rounding decides a gradient
or hessian (p within ~1e-16 of 0 or 1) it is reproduced. Not reproduced:
values chained by gaps under 1e-7 are grouped over the whole column here, per
node in sklearn. In the tests one boosting round gives sklearn's
decision_function exactly (for one of its random feature orders) and 100
rounds give DCI scores within 0.01 of it.

Speed, N = 10,000 train and 5,000 test codes, K = 10, factors of 3, 6, 40,
32 and 32 values (11,300 trees), on a 2-core CPU shared with other jobs (load
average about 4): 22-24 s warm, on one core (sklearn: 375 s in the same
conditions), 13.5 s at load average 2; growing one tree takes about 12 ns
per (code, sample), much of it per-op overhead. The jit compiles once per
(N, K, test N, class counts of the factors): 10-17 s at that size.

`backend='sklearn'` fits scikit-learn's GradientBoostingClassifier itself:
the exact reference path (minutes at N = 10,000; scikit-learn is imported only
then).

Deviations from disentanglement_lib, where it fails: a factor taking a single
value in the train set (sklearn refuses to fit it) gets importance 0 for every
code and predicts that value (train accuracy 1, test accuracy the fraction of
test rows with that value), with either backend. With F = 1 factor (or K = 1
code) the base-1 entropy is undefined; that code's (factor's) term is 1 - 0
(a distribution over one outcome has no uncertainty).

Bad input (NaN or infinite codes, wrong ranks, mismatched shapes, non-integer
factors) raises `UserInputError`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from msdr.errors import UserInputError

NUM_ROUNDS = 100
LEARNING_RATE = 0.1
MAX_DEPTH = 3  # the tree growth below is written for depth 3
FEATURE_THRESHOLD = 1e-7
_TWO_53 = float(2.0**53)


# ---------------------------------------------------------------- checking


def _check_codes(codes, name: str) -> np.ndarray:
  codes = np.asarray(codes)
  if codes.ndim != 2 or not (np.issubdtype(codes.dtype, np.floating) or
                             np.issubdtype(codes.dtype, np.integer)):
    raise UserInputError(f'{name} must be a numeric [N, K] array; got shape '
                         f'{codes.shape} and dtype {codes.dtype}')
  codes = codes.astype(np.float32)
  num_nan = int(np.isnan(codes).sum())
  if num_nan:
    raise UserInputError(f'{name} contain {num_nan} NaN entries')
  num_inf = int(np.isinf(codes).sum())
  if num_inf:
    raise UserInputError(f'{name} contain {num_inf} infinite entries')
  return codes


def _check_factors(factors, name: str) -> np.ndarray:
  factors = np.asarray(factors)
  if factors.ndim != 2 or not (np.issubdtype(factors.dtype, np.integer) or
                               factors.dtype == np.bool_):
    raise UserInputError(f'{name} must be an integer [N, F] array; got shape '
                         f'{factors.shape} and dtype {factors.dtype}')
  return factors.astype(np.int64)


def _check_inputs(codes_train, factors_train, codes_test, factors_test):
  codes_train = _check_codes(codes_train, 'codes_train')
  codes_test = _check_codes(codes_test, 'codes_test')
  factors_train = _check_factors(factors_train, 'factors_train')
  factors_test = _check_factors(factors_test, 'factors_test')
  for split, codes, factors in (('train', codes_train, factors_train),
                                ('test', codes_test, factors_test)):
    if codes.shape[0] != factors.shape[0] or codes.shape[0] == 0:
      raise UserInputError(f'codes_{split} and factors_{split} need the same, '
                           f'non-zero number of rows; got {codes.shape} and '
                           f'{factors.shape}')
  if codes_train.shape[1] != codes_test.shape[1] or codes_train.shape[1] == 0:
    raise UserInputError('codes_train and codes_test need the same, non-zero '
                         f'number of columns; got {codes_train.shape} and '
                         f'{codes_test.shape}')
  if (factors_train.shape[1] != factors_test.shape[1] or
      factors_train.shape[1] == 0):
    raise UserInputError('factors_train and factors_test need the same, '
                         f'non-zero number of columns; got '
                         f'{factors_train.shape} and {factors_test.shape}')
  return codes_train, factors_train, codes_test, factors_test


# ------------------------------------------------------------ the DCI scores


def _entropy_complement(p: np.ndarray, base: int) -> np.ndarray:
  """1 - scipy.stats.entropy(p, base=base) along axis 0 (p normalised there)."""
  p = p / p.sum(axis=0, keepdims=True)
  entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0),
                    axis=0)
  if base == 1:  # one outcome: no uncertainty (scipy would divide by log 1)
    return np.ones(p.shape[1:])
  return 1.0 - entropy / np.log(base)


def disentanglement(importance) -> float:
  """disentanglement_lib's `disentanglement` of an importance matrix [K, F]."""
  importance = np.asarray(importance, np.float64)
  per_code = _entropy_complement(importance.T + 1e-11, importance.shape[1])
  if importance.sum() == 0.0:
    importance = np.ones_like(importance)
  code_importance = importance.sum(axis=1) / importance.sum()
  return float(np.sum(per_code * code_importance))


def completeness(importance) -> float:
  """disentanglement_lib's `completeness` of an importance matrix [K, F]."""
  importance = np.asarray(importance, np.float64)
  per_factor = _entropy_complement(importance + 1e-11, importance.shape[0])
  if importance.sum() == 0.0:
    importance = np.ones_like(importance)
  factor_importance = importance.sum(axis=0) / importance.sum()
  return float(np.sum(per_factor * factor_importance))


def dci(codes_train, factors_train, codes_test, factors_test,
        backend: str = 'jax') -> dict:
  """The DCI scores, as disentanglement_lib's `compute_dci`.

  Args:
    codes_train, codes_test: float [N, K] codes (e.g. encoder means).
    factors_train, factors_test: int [N, F] ground-truth factor values.
    backend: 'jax' (the vectorised reimplementation) or 'sklearn' (fits
      scikit-learn's GradientBoostingClassifier, the exact reference).

  Returns:
    dict with 'disentanglement', 'completeness', 'informativeness_train' and
    'informativeness_test' (mean accuracy over factors).
  """
  importance, train_accuracy, test_accuracy = gbt_importance(
      codes_train, factors_train, codes_test, factors_test, backend)
  return {
      'disentanglement': disentanglement(importance),
      'completeness': completeness(importance),
      'informativeness_train': float(np.mean(train_accuracy)),
      'informativeness_test': float(np.mean(test_accuracy)),
  }


def gbt_importance(codes_train, factors_train, codes_test, factors_test,
                   backend: str = 'jax', num_rounds: int = NUM_ROUNDS):
  """Importance matrix and accuracies of one boosted classifier per factor.

  Args:
    codes_train, codes_test: float [N, K] codes.
    factors_train, factors_test: int [N, F] factors.
    backend: 'jax' or 'sklearn' (see `dci`).
    num_rounds: boosting rounds (sklearn's n_estimators; DCI uses 100). With
      'jax' it is not part of the compiled shape.

  Returns:
    (importance float64 [K, F] whose non-zero columns sum to 1, train accuracy
    float64 [F], test accuracy float64 [F]).
  """
  if backend not in ('jax', 'sklearn'):
    raise UserInputError(f"backend must be 'jax' or 'sklearn'; got {backend!r}")
  if int(num_rounds) != num_rounds or num_rounds < 1:
    raise UserInputError(f'num_rounds must be a positive integer; got '
                         f'{num_rounds}')
  codes_train, factors_train, codes_test, factors_test = _check_inputs(
      codes_train, factors_train, codes_test, factors_test)
  if backend == 'sklearn':
    return _sklearn_importance(codes_train, factors_train, codes_test,
                               factors_test, int(num_rounds))
  return _jax_importance(codes_train, factors_train, codes_test, factors_test,
                         int(num_rounds))


def _sklearn_importance(codes_train, factors_train, codes_test, factors_test,
                        num_rounds):
  from sklearn import ensemble  # pylint: disable=g-import-not-at-top
  num_codes, num_factors = codes_train.shape[1], factors_train.shape[1]
  importance = np.zeros((num_codes, num_factors))
  train_accuracy = np.zeros(num_factors)
  test_accuracy = np.zeros(num_factors)
  for j in range(num_factors):
    values = np.unique(factors_train[:, j])
    if len(values) == 1:  # sklearn cannot fit a single class; see module doc
      train_accuracy[j] = 1.0
      test_accuracy[j] = np.mean(factors_test[:, j] == values[0])
      continue
    model = ensemble.GradientBoostingClassifier(n_estimators=num_rounds)
    model.fit(codes_train, factors_train[:, j])
    importance[:, j] = np.abs(model.feature_importances_)
    train_accuracy[j] = np.mean(model.predict(codes_train) ==
                                factors_train[:, j])
    test_accuracy[j] = np.mean(model.predict(codes_test) == factors_test[:, j])
  return importance, train_accuracy, test_accuracy


# ------------------------------------------------------------- JAX backend


_BLOCK = 32  # positions per block of the blocked prefix sums


def _prefix_natural(x: jax.Array) -> jax.Array:
  """Inclusive prefix sum along the last axis."""
  length = x.shape[-1]
  if length <= _BLOCK:
    rows = [x[..., 0]]
    for i in range(1, length):
      rows.append(rows[-1] + x[..., i])
    return jnp.stack(rows, axis=-1)
  pad = -length % _BLOCK
  padded = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)])
  blocked = jnp.swapaxes(padded.reshape(x.shape[:-1] + (-1, _BLOCK)), -1, -2)
  out = jnp.swapaxes(_prefix_blocked(blocked), -1, -2)
  return out.reshape(padded.shape)[..., :length]


def _prefix_blocked(x: jax.Array) -> jax.Array:
  """Inclusive prefix sum of x [..., B, NB] in position order p = j B + i.

  Positions are laid out transposed, so the chain of adds over the B rows of
  a block runs along contiguous memory; the NB block totals are summed
  recursively. On CPU this is several times faster than jnp.cumsum.
  """
  rows = [x[..., 0, :]]
  for i in range(1, x.shape[-2]):
    rows.append(rows[-1] + x[..., i, :])
  totals = rows[-1]
  offsets = _prefix_natural(totals) - totals
  # The barrier keeps XLA from recomputing the sums inside each consumer.
  return jax.lax.optimization_barrier(
      jnp.stack(rows, axis=-2) + offsets[..., None, :])


def _split_gain_with_totals(s_left, n_left, s_total, n_total, valid):
  n_right = n_total - n_left
  d = n_right * s_left - n_left * (s_total - s_left)
  ok = valid & (n_left > 0) & (n_right > 0)
  return jnp.where(ok, d * d / jnp.where(ok, n_left * n_right, 1.0), -jnp.inf)


def _split_gain(s_left, n_left, valid):
  """Proxy (n_r s_l - n_l s_r)^2 / (n_l n_r) of every candidate split.

  Args:
    s_left, n_left: [T, K, B, NB] residual sum and count of the node's samples
      at or before each sorted position (the last position holds the totals).
    valid: bool, broadcastable, positions where a split may fall.

  Returns:
    [T, K, B, NB] gains, -inf where no split is possible.
  """
  return _split_gain_with_totals(s_left, n_left, s_left[..., -1:, -1:],
                                 n_left[..., -1:, -1:], valid)


def _best_split(s_left, n_left, valid):
  """Best split of each tree and node: ([T] gain, position, feature).

  Exact ties go to the lowest feature, then the lowest position. The gains are
  reduced over each block's rows first; only the winning block's column is
  searched for the position.
  """
  t, k, block, num_blocks = s_left.shape
  column_best = _split_gain(s_left, n_left, valid).max(axis=-2)  # [T, K, NB]
  best = column_best.max(axis=(1, 2))
  column_key = jnp.arange(k * num_blocks).reshape(k, num_blocks)
  column = jnp.where(column_best == best[:, None, None], column_key,
                     k * num_blocks).min(axis=(1, 2))
  column = jnp.minimum(column, k * num_blocks - 1)
  feat, j = column // num_blocks, column % num_blocks
  trees = jnp.arange(t)
  pick = lambda a: jnp.broadcast_to(a, s_left.shape)[trees, feat, :, j]
  total = lambda a: jnp.broadcast_to(a, s_left.shape)[:, 0, -1, -1][:, None]
  gain = _split_gain_with_totals(pick(s_left), pick(n_left), total(s_left),
                                 total(n_left), pick(valid))  # [T, B]
  # The winning column's gains are recomputed outside the fused reduction, so
  # take their own maximum rather than comparing with `best`.
  row = jnp.argmax(gain, axis=1)
  best = jnp.where(jnp.isfinite(best), gain[trees, row], best)
  return best, (j * block + row).astype(jnp.int32), feat.astype(jnp.int32)


_CANDIDATES = 128  # blocks searched position by position per node


def _members(sorted_node, num_nodes):
  """bool [M, ...]: whether the sample at each position is in node m."""
  return sorted_node == jnp.arange(num_nodes).reshape(
      (num_nodes,) + (1,) * sorted_node.ndim)


def _full_search(rs, sorted_node, valid, splittable):
  """Exact best split of every (node, tree) from full-length prefix sums.

  Args: as `_search`.

  Returns:
    ([M, T] gain, position, feature).
  """
  m, t = splittable.shape
  member = _members(sorted_node, m).astype(jnp.float32)
  s, c = _prefix_blocked(jnp.stack([rs * member, member]))
  flat = lambda a: a.reshape((m * t,) + a.shape[2:])
  allowed = valid & splittable.reshape(m * t, 1, 1, 1)
  return tuple(v.reshape(m, t) for v in _best_split(flat(s), flat(c),
                                                    allowed))


def _search(rs, sorted_node, valid, splittable, parent_stats=None):
  """Exact best split of every (node, tree), pruned by block bounds.

  For each block of B sorted positions, the node's residual sum, sum of
  absolute residuals and count give the exact gain of the split after the
  block's last position and a bound on the gain of any split inside it: the
  left sum lies between s0 - (negatives) and s0 + (positives), the left count
  between c0 and c0 + count (less the ends that a valid block end already
  gives), and the gain is the ratio of a convex function of (sum, count) to a
  concave one, so the bound is the largest numerator at a corner over the
  smallest denominator at an end. Only blocks whose bound reaches
  the best block-end gain are searched position by position; if any (node,
  tree) of the chunk has more than _CANDIDATES such blocks, every node is
  searched in full instead.

  Args:
    rs: [T, K, B, NB] residuals in each feature's sorted order.
    sorted_node: int [T, K, B, NB] node of the sample there (-1: none).
    valid: bool [K, B, NB] whether a split may fall after the position.
    splittable: bool [M, T] nodes that may split.
    parent_stats: the block statistics returned for the previous level, or
      None at the root. Only left children are summed; a right child's
      statistics are its parent's minus its sibling's.

  Returns:
    (([M, T] gain, position, feature), block statistics); gain is -inf where
    there is no split.
  """
  m, t = splittable.shape
  k, block, num_blocks = valid.shape
  num_positions = block * num_blocks
  left = sorted_node == 2 * jnp.arange(max(m // 2, 1)).reshape(-1, 1, 1, 1, 1)
  x = rs * left
  stats = jnp.stack([x.sum(axis=-2), jnp.abs(x).sum(axis=-2),
                     left.sum(axis=-2).astype(jnp.float32)], axis=1)
  if parent_stats is not None:  # [M // 2, 3, T, K, NB] -> [M, 3, T, K, NB]
    stats = jnp.stack([stats, parent_stats - stats], axis=1).reshape(
        (m,) + stats.shape[1:])
  block_sum, block_abs, block_count = (stats[:, i] for i in range(3))
  s_end, c_end = _prefix_natural(jnp.stack([block_sum, block_count]))
  s0, c0 = s_end - block_sum, c_end - block_count
  s_total, n = s_end[..., -1:], c_end[..., -1:]  # [M, T, K, 1]
  block_ok = splittable[:, :, None, None]
  end_gain = _split_gain_with_totals(s_end, c_end, s_total, n,
                                     valid[:, -1, :] & block_ok)
  # Bound on the splits inside each block.
  lo = s0 - 0.5 * (block_abs - block_sum)  # minus the negatives
  hi = s0 + 0.5 * (block_abs + block_sum)  # plus the positives
  # Left counts of the partitions inside the block that no valid block end
  # (this one's or the previous one's) already gives.
  end_valid = valid[:, -1, :]  # [K, NB]
  previous_valid = jnp.pad(end_valid[:, :-1], [(0, 0), (1, 0)])
  c_lo = jnp.maximum(c0 + previous_valid, 1.0)
  c_hi = jnp.minimum(c0 + block_count - end_valid, n - 1.0)
  corner = lambda s, c: jnp.square(n * s - c * s_total)
  numerator = jnp.maximum(jnp.maximum(corner(lo, c_lo), corner(lo, c_hi)),
                          jnp.maximum(corner(hi, c_lo), corner(hi, c_hi)))
  denominator = jnp.minimum(c_lo * (n - c_lo), c_hi * (n - c_hi))
  inside = valid[:, :-1, :].any(axis=1) & block_ok & (c_lo <= c_hi)
  bound = jnp.where(inside, numerator / jnp.where(inside, denominator, 1.0),
                    -jnp.inf) * (1.0 + 1e-4)  # slack for float32 rounding
  best_end = end_gain.max(axis=(2, 3))  # [M, T]
  candidate = (bound >= best_end[:, :, None, None]) & jnp.isfinite(bound)
  num_candidates = min(_CANDIDATES, k * num_blocks)
  overflow = (candidate.sum(axis=(2, 3)) > num_candidates).any()

  def pruned(rs, sorted_node, valid, splittable, candidate, bound, end_gain,
             best_end, s0, c0, s_total, n):
    big = jnp.iinfo(jnp.int32).max
    # The best block end: highest gain, then lowest feature and position.
    end_key = (jnp.arange(k)[:, None] * num_positions +
               jnp.arange(num_blocks) * block + block - 1)
    key_end = jnp.where(end_gain == best_end[:, :, None, None], end_key,
                        big).min(axis=(2, 3))
    # Every position of the candidate blocks.
    flat_bound = jnp.where(candidate, bound, -jnp.inf).reshape(m, t, -1)
    top, index = jax.lax.top_k(flat_bound, num_candidates)  # [M, T, Q]
    feat, j = index // num_blocks, index % num_blocks
    nodes = jnp.arange(m)[:, None, None]
    trees = jnp.arange(t)[None, :, None]
    inner_member = sorted_node[trees, feat, :, j] == nodes[..., None]
    inner_member = inner_member.astype(jnp.float32)  # [M, T, Q, B]
    upper = jnp.triu(jnp.ones((block, block), jnp.float32))
    cumsum = lambda a: jnp.matmul(a, upper, precision=jax.lax.Precision.HIGHEST)
    at = lambda a: a[nodes, trees, feat, j][..., None]
    s = at(s0) + cumsum(rs[trees, feat, :, j] * inner_member)
    c = at(c0) + cumsum(inner_member)
    ok = valid[feat, :, j] & jnp.isfinite(top)[..., None]
    totals = lambda a: a[nodes, trees, feat, 0][..., None]
    gain = _split_gain_with_totals(s, c, totals(s_total), totals(n), ok)
    best_inner = gain.max(axis=(2, 3))
    key = (feat * num_positions + j * block)[..., None] + jnp.arange(block)
    key_inner = jnp.where(gain == best_inner[:, :, None, None], key,
                          big).min(axis=(2, 3))
    best = jnp.maximum(best_inner, best_end)
    first = jnp.where(best_inner > best_end, key_inner,
                      jnp.where(best_end > best_inner, key_end,
                                jnp.minimum(key_inner, key_end)))
    first = jnp.where(jnp.isfinite(best), first, 0)
    return best, first % num_positions, first // num_positions

  def full(rs, sorted_node, valid, splittable, *_):
    return _full_search(rs, sorted_node, valid, splittable)

  return jax.lax.cond(overflow, full, pruned, rs, sorted_node, valid,
                      splittable, candidate, bound, end_gain, best_end, s0, c0,
                      s_total, n), stats


def _node_stats(r, node, num_nodes):
  """[T, M] sample counts, and whether the node's residuals vary.

  sklearn makes a node a leaf when its impurity (the variance of r) is at most
  machine epsilon; in float32 that is residuals that are all equal.
  """
  member = node[:, None, :] == jnp.arange(num_nodes)[None, :, None]
  rr = r[:, None, :]
  count = member.sum(axis=-1).astype(jnp.float32)
  varies = (jnp.where(member, rr, -jnp.inf).max(axis=-1) >
            jnp.where(member, rr, jnp.inf).min(axis=-1))
  return count, varies


def _thresholds(node, right, value, split, num_nodes):
  """[T, M] midpoints between the last left and first right value."""
  member = node[:, None, :] == jnp.arange(num_nodes)[None, :, None]
  right, value = right[:, None, :], value[:, None, :]
  lo = jnp.where(member & ~right, value, -jnp.inf).max(axis=-1)
  hi = jnp.where(member & right, value, jnp.inf).min(axis=-1)
  mid = lo / 2 + hi / 2  # sklearn: x_l / 2 + x_r / 2, x_l if that rounds up
  return jnp.where(split, jnp.where(mid >= hi, lo, mid), jnp.inf)


def _grow_trees(r, sorted_index, valid, rank, x):
  """Grows one depth-3 regression tree per row of r.

  Args:
    r: [T, N + 1] residuals, one tree per row, with a 0 column appended.
    sorted_index: int [K, B, NB] sample at sorted position j B + i of each
      feature (N past the end).
    valid: bool [K, B, NB] whether a split may fall after that position.
    rank: int [K, N] sorted position of each sample in each feature.
    x: [K, N] train codes.

  Returns:
    (leaf [T, N] in 0..7, feats and thresholds: per level [T, M] arrays,
    importance [T, K] between-children sums of squares).
  """
  t, n = r.shape
  n -= 1
  k = sorted_index.shape[0]
  # Gathers from the flattened rows: [T, K, B, NB] with no transposes.
  flat_index = jnp.arange(t).reshape(t, 1, 1, 1) * (n + 1) + sorted_index
  to_sorted = lambda a: a.reshape(-1).at[flat_index].get(
      mode='promise_in_bounds')
  rs = to_sorted(r)
  node = jnp.zeros((t, n + 1), jnp.int32).at[:, n].set(-1)
  active = jnp.ones((t, 1), bool)
  importance = jnp.zeros((t, k), jnp.float32)
  columns = jnp.arange(n)[None, :]
  r = r[:, :n]
  feats, thresholds, stats = [], [], None
  for depth in range(MAX_DEPTH):
    num_nodes = 2**depth
    count, varies = _node_stats(r, node[:, :n], num_nodes)
    splittable = active & (count >= 2) & varies  # [T, M]
    found, stats = _search(rs, to_sorted(node), valid, splittable.T,
                           None if depth == 0 else stats)
    gain, pos, feat = (v.T for v in found)  # [T, M]
    split = splittable & jnp.isfinite(gain)
    importance += jnp.einsum(
        'tm,tmk->tk', jnp.where(split, gain / jnp.maximum(count, 1.0), 0.0),
        jax.nn.one_hot(feat, k, dtype=jnp.float32))
    sample_node = node[:, :n]
    feat_s = jnp.take_along_axis(feat, sample_node, axis=1)  # [T, N]
    right = (rank[feat_s, columns] > jnp.take_along_axis(
        pos, sample_node, axis=1)) & jnp.take_along_axis(
            split, sample_node, axis=1)
    thresholds.append(_thresholds(sample_node, right, x[feat_s, columns],
                                  split, num_nodes))
    feats.append(feat)
    node = node.at[:, :n].set(2 * sample_node + right)
    active = jnp.repeat(split, 2, axis=1)
  return node[:, :n], feats, thresholds, importance


def _descend(x, feats, thresholds):
  """[T, Nt] leaf of each sample of x [K, Nt] in each tree, by thresholds."""
  node = jnp.zeros((feats[0].shape[0], x.shape[1]), jnp.int32)
  columns = jnp.arange(x.shape[1])[None, :]
  for feat, threshold in zip(feats, thresholds):
    value = x[jnp.take_along_axis(feat, node, axis=1), columns]
    node = 2 * node + (value > jnp.take_along_axis(threshold, node, axis=1))
  return node


def _round53(v):
  """v rounded to a multiple of 2^-53 (float64's spacing just below 1)."""
  return jnp.round(v * _TWO_53) * (1.0 / _TWO_53)


def _gradients(raw, y, pad_index, tree_index, multiclass):
  """Negative gradient r and hessian p (1 - p) as sklearn computes them.

  Args:
    raw: [T, N] raw scores.
    y: [T, N] bool, whether the sample has the tree's class.
    pad_index: int [G, C] rows of [raw; 0; -inf] forming each factor's
      softmax (a two-class factor is softmax([0, raw])).
    tree_index: int [T] each tree's entry in the flattened [G * C] layout.
    multiclass: bool [T, 1].

  Returns:
    (r, h), each [T, N].
  """
  n = raw.shape[1]
  ext = jnp.concatenate(
      [raw, jnp.zeros((1, n)), jnp.full((1, n), -jnp.inf)], axis=0)
  z = ext[pad_index]  # [G, C, N]
  is_top = jnp.arange(z.shape[1])[:, None] == jnp.argmax(z, axis=1)[:, None]
  e = jnp.exp(z - jnp.max(z, axis=1, keepdims=True))
  total = e.sum(axis=1, keepdims=True)
  p = e / total
  # 1 - p without cancellation: the top class's is the sum of the others'.
  q = jnp.where(is_top,
                jnp.where(is_top, 0.0, e).sum(axis=1, keepdims=True) / total,
                1.0 - p)
  p = p.reshape(-1, n)[tree_index]
  q = q.reshape(-1, n)[tree_index]
  big = p >= 0.5
  q53 = _round53(q)
  # sklearn: r = y - p in float64 (multinomial; the binomial r is exact) and
  # the hessian uses prob = y - r, so the smaller of p, 1 - p is rounded.
  r = jnp.where(y, jnp.where(big & multiclass, q53, q), -p)
  h = jnp.where(big, p * q53, jnp.where(y, _round53(p) * q, p * q))
  return r, h


@functools.partial(jax.jit, static_argnames=('trees_per_chunk',))
def _boost(x, x_test, rank, sorted_index, valid, y, init_raw, pad_index,
           tree_index, multiclass, scale, num_rounds, trees_per_chunk):
  """num_rounds (traced) rounds of boosting of T one-class trees at once.

  The trees of a round are grown `trees_per_chunk` at a time, so that the
  per-level arrays [chunk, K, N] stay in cache.

  Returns:
    (raw train scores [T, N], raw test scores [T, Nt], importance [T, K]).
  """
  k, n = x.shape
  t = y.shape[0]
  num_chunks = -(-t // trees_per_chunk)
  pad = num_chunks * trees_per_chunk - t

  def chunked(a):  # [T, ...] -> [chunks, trees_per_chunk, ...]
    a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1))
    return a.reshape((num_chunks, trees_per_chunk) + a.shape[1:])

  def unchunked(a):
    return a.reshape((-1,) + a.shape[2:])[:t]

  def grow_chunk(r):
    return _grow_trees(r, sorted_index, valid, rank, x)

  def one_round(_, carry):
    raw, raw_test, importance = carry
    r, h = _gradients(raw, y, pad_index, tree_index, multiclass)
    leaf, feats, thresholds, gain = jax.tree.map(
        unchunked, jax.lax.map(grow_chunk, chunked(
            jnp.pad(r, [(0, 0), (0, 1)]))))
    numerator, denominator = [], []
    for l in range(2**MAX_DEPTH):
      member = leaf == l
      numerator.append(jnp.where(member, r, 0.0).sum(axis=-1))
      denominator.append(jnp.where(member, h, 0.0).sum(axis=-1))
    numerator = jnp.stack(numerator, axis=1)
    denominator = jnp.stack(denominator, axis=1)
    value = LEARNING_RATE * scale[:, None] * jnp.where(
        denominator > 0.0,
        numerator / jnp.where(denominator > 0.0, denominator, 1.0), 0.0)
    leaf_test = _descend(x_test, feats, thresholds)
    return (raw + jnp.take_along_axis(value, leaf, axis=1),
            raw_test + jnp.take_along_axis(value, leaf_test, axis=1),
            importance + gain)

  init = (jnp.broadcast_to(init_raw[:, None], (t, n)),
          jnp.broadcast_to(init_raw[:, None], (t, x_test.shape[1])),
          jnp.zeros((t, k), jnp.float32))
  return jax.lax.fori_loop(0, num_rounds, one_round, init)


def _sort_columns(x: np.ndarray):
  """Sorted layout (see `_grow_trees`) of float32 codes [N, K].

  Returns:
    (rank int32 [K, N], sorted_index int32 [K, B, NB], valid bool [K, B, NB]);
    position p = j B + i of a feature is stored at [i, j].
  """
  n, k = x.shape
  perm = np.argsort(x, axis=0, kind='stable')
  rank = np.empty((n, k), np.int32)
  np.put_along_axis(rank, perm, np.arange(n, dtype=np.int32)[:, None], axis=0)
  xs = np.take_along_axis(x, perm, axis=0).astype(np.float64)
  run_end = np.zeros((n, k), bool)
  # sklearn: a split needs the next value above this one + FEATURE_THRESHOLD.
  run_end[:-1] = xs[1:] > xs[:-1] + FEATURE_THRESHOLD
  num_blocks = -(-n // _BLOCK)
  pad = num_blocks * _BLOCK - n
  perm = np.concatenate([perm, np.full((pad, k), n)], axis=0)
  run_end = np.concatenate([run_end, np.zeros((pad, k), bool)], axis=0)
  blocked = lambda a: a.T.reshape(k, num_blocks, _BLOCK).transpose(0, 2, 1)
  return rank.T, blocked(perm).astype(np.int32), blocked(run_end)


_CHUNK_ELEMENTS = 2**18


def _trees_per_chunk(n: int, k: int, num_trees: int) -> int:
  """Trees grown together: [chunk, K, N] arrays of about 2^18 elements."""
  chunk = max(1, _CHUNK_ELEMENTS // (n * k))
  num_chunks = -(-num_trees // chunk)
  return -(-num_trees // num_chunks)


def _fit_jax(codes_train, factors_train, codes_test, factors_test, num_rounds):
  """Boosts every factor's classifier at once.

  Returns:
    One entry per factor: None for a factor with a single train value, else
    (train labels [N] in 0..C-1, test labels [Nt] (-1 for values not seen in
    training), raw train scores [C', N], raw test scores [C', Nt] and split
    gains [C', K] per tree), C' = 1 for two classes (sklearn's
    decision_function), C otherwise.
  """
  fits = []
  for j in range(factors_train.shape[1]):
    values, labels = np.unique(factors_train[:, j], return_inverse=True)
    if len(values) == 1:
      fits.append(None)
      continue
    index = np.minimum(np.searchsorted(values, factors_test[:, j]),
                       len(values) - 1)
    labels_test = np.where(values[index] == factors_test[:, j], index, -1)
    fits.append((len(values), labels.reshape(-1), labels_test))
  boosted = [fit for fit in fits if fit is not None]
  if not boosted:
    return fits

  n = codes_train.shape[0]
  num_classes = max(c for c, _, _ in boosted)
  # Tree t is class c of boosted factor g; a two-class factor has a single
  # tree (for its second class), whose softmax row is [0, raw].
  ys, init_raw, tree_index, multiclass, scale, trees_of = [], [], [], [], [], []
  pad_index = np.full((len(boosted), num_classes), -1, np.int64)
  for g, (c, labels, _) in enumerate(boosted):
    prior = np.bincount(labels, minlength=c) / n
    first = len(ys)
    if c == 2:
      ys.append(labels == 1)
      init_raw.append(np.log(prior[1] / prior[0]))
      tree_index.append(g * num_classes + 1)
      multiclass.append(False)
      scale.append(1.0)
      pad_index[g, :2] = (-2, first)
    else:
      for cls in range(c):
        ys.append(labels == cls)
        init_raw.append(np.log(prior[cls]))
        tree_index.append(g * num_classes + cls)
        multiclass.append(True)
        scale.append((c - 1) / c)
        pad_index[g, cls] = first + cls
    trees_of.append(slice(first, len(ys)))
  num_trees = len(ys)
  # Rows num_trees and num_trees + 1 of the softmax input are 0 and -inf.
  pad_index = np.where(pad_index == -2, num_trees,
                       np.where(pad_index == -1, num_trees + 1, pad_index))

  rank, sorted_index, valid = _sort_columns(codes_train)
  # Columns constant to within FEATURE_THRESHOLD never split: leave them out
  # (keeping one, so that the arrays are not empty).
  keep = np.flatnonzero(valid.any(axis=(1, 2)))
  keep = keep if len(keep) else np.zeros(1, np.int64)
  raw, raw_test, gain = jax.device_get(_boost(
      jnp.asarray(codes_train[:, keep].T), jnp.asarray(codes_test[:, keep].T),
      jnp.asarray(rank[keep]), jnp.asarray(sorted_index[keep]),
      jnp.asarray(valid[keep]), jnp.asarray(np.stack(ys)),
      jnp.asarray(np.asarray(init_raw, np.float32)),
      jnp.asarray(pad_index.astype(np.int32)),
      jnp.asarray(np.asarray(tree_index, np.int32)),
      jnp.asarray(np.asarray(multiclass)[:, None]),
      jnp.asarray(np.asarray(scale, np.float32)),
      jnp.asarray(num_rounds, jnp.int32),
      trees_per_chunk=_trees_per_chunk(n, len(keep), num_trees)))
  all_gain = np.zeros((num_trees, codes_train.shape[1]))
  all_gain[:, keep] = gain
  trees = iter(trees_of)
  for j, fit in enumerate(fits):
    if fit is not None:
      t = next(trees)
      fits[j] = fit[1:] + (np.asarray(raw[t], np.float64),
                           np.asarray(raw_test[t], np.float64), all_gain[t])
  return fits


def _jax_importance(codes_train, factors_train, codes_test, factors_test,
                    num_rounds):
  num_codes, num_factors = codes_train.shape[1], factors_train.shape[1]
  importance = np.zeros((num_codes, num_factors))
  train_accuracy = np.zeros(num_factors)
  test_accuracy = np.zeros(num_factors)
  fits = _fit_jax(codes_train, factors_train, codes_test, factors_test,
                  num_rounds)
  for j, fit in enumerate(fits):
    if fit is None:  # a single value: predicted everywhere, no importance
      train_accuracy[j] = 1.0
      test_accuracy[j] = np.mean(factors_test[:, j] == factors_train[0, j])
      continue
    labels, labels_test, raw, raw_test, gain = fit
    total = gain.sum(axis=0)
    if total.sum() > 0:
      importance[:, j] = total / total.sum()
    predict = lambda s: (s[0] >= 0 if len(s) == 1 else np.argmax(s, axis=0))
    train_accuracy[j] = np.mean(predict(raw) == labels)
    test_accuracy[j] = np.mean(predict(raw_test) == labels_test)
  return importance, train_accuracy, test_accuracy

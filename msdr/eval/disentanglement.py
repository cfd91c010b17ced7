"""Disentanglement metrics: MIG, modularity and IRS, as disentanglement_lib
(google-research) computes them from codes and ground-truth factors; the
interventional FactorVAE and BetaVAE scores live in `msdr.eval.interventional`
and are re-exported here, so `dm.factor_vae_score` and `dm.beta_vae_score`
work, `modularity_explicitness` adds `msdr.eval.explicitness`, `sap` is
`msdr.eval.sap.sap`, and `dci` is `msdr.eval.dci.dci` (disentanglement,
completeness and informativeness from gradient-boosted trees).

Inputs are `codes` float [N, K] (one row per sample, e.g. encoder means) and
`factors` int [N, F] (ground-truth factor values, any integers). Codes are cast
to float32 on entry; every result equals disentanglement_lib's on the
float32-cast codes, up to float32 rounding (~1e-7) in the final sums.

  histogram_discretize  per column, `np.digitize(x, np.histogram(x, num_bins)
                        [1][:-1])`: num_bins equal-width bins between the
                        column's min and max (a constant column v uses the
                        range [v - 0.5, v + 0.5], as np.histogram does); bins
                        are numbered 1..num_bins and the max lands in bin
                        num_bins.
  discrete_mutual_info  [K, F] matrix of sklearn's mutual_info_score(y_j, z_i)
                        in nats, from contingency tables; like sklearn (>= 1.0),
                        exactly 0 when either side takes a single value.
  discrete_entropy      [F] entropies in nats (= mutual_info_score(y, y)).
  mig                   mean over factors j of (m[1st, j] - m[2nd, j]) / H(y_j)
                        with m the MI of the histogram-discretized codes, sorted
                        over codes. Deviation: a constant factor (H = 0, where
                        disentanglement_lib divides by zero) is left out of the
                        mean; all factors constant is an error.
  modularity            mean over codes of 1 - (sum_j mi_ij^2 - max_j mi_ij^2) /
                        (max_j mi_ij^2 (F - 1)); a code whose MI is 0 with every
                        factor (dead) scores 0.
  irs                   disentanglement_lib's `compute_irs`: the factors are
                        histogram-discretized (`num_bins`, as its
                        `make_discretizer`), constant code columns are dropped
                        (0.0 if all are), and `scalable_disentanglement_score`'s
                        avg_score is returned: per factor i and value v, the
                        `diff_quantile` percentile (numpy's linear method) of
                        |z - E[z | y_i = v]| within the group, averaged over
                        values, divided by max |z - mean z|; the score of a code
                        is max_i (1 - that), averaged over codes weighted by
                        max |z - mean z|.

Bad input (a NaN or infinite code, wrong rank, mismatched N, non-integer
factors, too few codes or factors for the metric) raises `UserInputError`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from msdr.errors import UserInputError
from msdr.eval import checks
from msdr.eval import explicitness as explicitness_lib
from msdr.eval.dci import dci  # pylint: disable=unused-import
from msdr.eval.interventional import beta_vae_score  # pylint: disable=unused-import
from msdr.eval.interventional import factor_vae_score  # pylint: disable=unused-import
from msdr.eval.sap import sap  # pylint: disable=unused-import

_HIGHEST = jax.lax.Precision.HIGHEST


def _check_pair(codes, factors) -> tuple[np.ndarray, np.ndarray]:
  codes = checks.check_codes(codes)
  factors = checks.check_labels(factors, 'factors')
  if codes.shape[0] != factors.shape[0] or codes.shape[0] == 0:
    raise UserInputError('codes and factors need the same, non-zero number of '
                         f'rows; got {codes.shape} and {factors.shape}')
  return codes, factors


def _check_num_bins(num_bins: int) -> int:
  if int(num_bins) != num_bins or num_bins < 1:
    raise UserInputError(f'num_bins must be a positive integer; got {num_bins}')
  return int(num_bins)


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Maps each column's distinct values to 0..C_j-1 (sorted order).

  Args:
    labels: int [N, F].

  Returns:
    (int32 [N, F] labels, int32 [F] number of distinct values per column).
  """
  columns, counts = [], []
  for column in labels.T:
    values, inverse = np.unique(column, return_inverse=True)
    columns.append(inverse.reshape(-1))
    counts.append(len(values))
  relabeled = np.stack(columns, axis=1) if columns else labels
  return relabeled.astype(np.int32), np.asarray(counts, np.int32)


def _lower_edges(x: np.ndarray, num_bins: int) -> np.ndarray:
  """The first num_bins edges of np.histogram for each column of x.

  For float32 x these are np.histogram's float32 edges. For integer x they are
  the edges rounded up to integers, which `x >= edge` treats exactly as
  np.digitize treats np.histogram's float64 edges.

  Args:
    x: float32 or integer [N, K].
    num_bins: number of bins.

  Returns:
    [num_bins, K] edges, float32 (float x) or int64 (integer x).
  """
  edges = np.stack(
      [np.histogram_bin_edges(column, num_bins)[:-1] for column in x.T], axis=1)
  if np.issubdtype(x.dtype, np.integer):
    return np.ceil(edges).astype(np.int64)
  return edges.astype(np.float32)


def _digitize(x: jax.Array, lower_edges: jax.Array) -> jax.Array:
  """np.digitize per column: the number of lower edges <= x, in 1..num_bins."""
  return jax.vmap(
      lambda e, c: jnp.searchsorted(e, c, side='right'),
      in_axes=(1, 1), out_axes=1)(lower_edges, x).astype(jnp.int32)


_digitize_jit = jax.jit(_digitize)


def histogram_discretize(codes, num_bins: int = 20) -> jax.Array:
  """Discretizes each column into num_bins equal-width bins (numbered 1..num_bins).

  Args:
    codes: float or integer [N, K]; floats are cast to float32.
    num_bins: number of bins.

  Returns:
    int32 [N, K] bin numbers, equal to np.digitize(x, np.histogram(x,
    num_bins)[1][:-1]) per column.
  """
  num_bins = _check_num_bins(num_bins)
  x = np.asarray(codes)
  if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
    x = checks.check_labels(x, 'codes')
    if x.shape[0] == 0:
      raise UserInputError('codes must have at least one row')
    edges = _lower_edges(x, num_bins)
    # Shift so int32 holds the values; comparisons are unchanged.
    offset = np.minimum(x.min(axis=0), edges.min(axis=0))
    return _digitize_jit(jnp.asarray(x - offset, jnp.int32),
                         jnp.asarray(edges - offset, jnp.int32))
  x = checks.check_codes(x)
  if x.shape[0] == 0:
    raise UserInputError('codes must have at least one row')
  return _digitize_jit(jnp.asarray(x), jnp.asarray(_lower_edges(x, num_bins)))


def _counts(labels: jax.Array, num_values: int) -> jax.Array:
  """float32 [F, C] occurrences of each value 0..C-1 in each column."""
  return jax.nn.one_hot(labels, num_values, dtype=jnp.float32).sum(axis=0)


def _mutual_info(code_labels: jax.Array, factor_labels: jax.Array,
                 num_code_values: int, num_factor_values: int) -> jax.Array:
  """[K, F] mutual information (nats) of label columns, 0-based labels."""
  n = code_labels.shape[0]
  a = jax.nn.one_hot(code_labels, num_code_values, dtype=jnp.float32)
  b = jax.nn.one_hot(factor_labels, num_factor_values, dtype=jnp.float32)
  joint = jnp.einsum('nkb,nfc->kfbc', a, b, precision=_HIGHEST)
  code_marginal = joint.sum(axis=3, keepdims=True)
  factor_marginal = joint.sum(axis=2, keepdims=True)
  safe = lambda c: jnp.log(jnp.where(c > 0, c, 1.0))
  terms = joint / n * (safe(joint) + jnp.log(float(n)) - safe(code_marginal) -
                       safe(factor_marginal))
  mi = jnp.maximum(jnp.where(joint > 0, terms, 0.0).sum(axis=(2, 3)), 0.0)
  # As sklearn: MI with a single-valued variable is exactly 0.
  code_single = (code_marginal[:, 0, :, 0] > 0).sum(axis=1) <= 1
  factor_single = (factor_marginal[0, :, 0, :] > 0).sum(axis=1) <= 1
  return jnp.where(code_single[:, None] | factor_single[None, :], 0.0, mi)


def _entropy(labels: jax.Array, num_values: int) -> jax.Array:
  """[F] entropy (nats) of label columns, 0-based labels."""
  n = labels.shape[0]
  counts = _counts(labels, num_values)
  logs = jnp.log(float(n)) - jnp.log(jnp.where(counts > 0, counts, 1.0))
  return jnp.where(counts > 0, counts / n * logs, 0.0).sum(axis=1)


_mutual_info_jit = jax.jit(_mutual_info, static_argnums=(2, 3))
_entropy_jit = jax.jit(_entropy, static_argnums=(1,))


def discrete_mutual_info(mus_discrete, ys) -> jax.Array:
  """Mutual information of every discrete code with every factor.

  Args:
    mus_discrete: int [N, K] discrete codes (e.g. from histogram_discretize).
    ys: int [N, F] factors.

  Returns:
    float32 [K, F]; entry (i, j) is sklearn's mutual_info_score(ys[:, j],
    mus_discrete[:, i]) in nats.
  """
  codes = checks.check_labels(mus_discrete, 'mus_discrete')
  ys = checks.check_labels(ys, 'ys')
  if codes.shape[0] != ys.shape[0] or codes.shape[0] == 0:
    raise UserInputError('mus_discrete and ys need the same, non-zero number of '
                         f'rows; got {codes.shape} and {ys.shape}')
  codes, code_values = _relabel(codes)
  ys, factor_values = _relabel(ys)
  return _mutual_info_jit(jnp.asarray(codes), jnp.asarray(ys),
                          int(code_values.max(initial=1)),
                          int(factor_values.max(initial=1)))


def discrete_entropy(ys) -> jax.Array:
  """Entropy of every factor.

  Args:
    ys: int [N, F] factors.

  Returns:
    float32 [F] entropies in nats (sklearn's mutual_info_score(y, y)).
  """
  ys = checks.check_labels(ys, 'ys')
  if ys.shape[0] == 0:
    raise UserInputError('ys must have at least one row')
  ys, values = _relabel(ys)
  return _entropy_jit(jnp.asarray(ys), int(values.max(initial=1)))


def _code_bins(codes: np.ndarray, num_bins: int) -> tuple[jax.Array, jax.Array]:
  return jnp.asarray(codes), jnp.asarray(_lower_edges(codes, num_bins))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _mig(codes, lower_edges, factor_labels, num_bins, num_factor_values):
  code_labels = _digitize(codes, lower_edges) - 1
  mi = _mutual_info(code_labels, factor_labels, num_bins, num_factor_values)
  entropy = _entropy(factor_labels, num_factor_values)
  top2 = jax.lax.top_k(mi.T, 2)[0]
  valid = entropy > 0
  gaps = (top2[:, 0] - top2[:, 1]) / jnp.where(valid, entropy, 1.0)
  return jnp.where(valid, gaps, 0.0).sum() / valid.sum()


def mig(codes, factors, num_bins: int = 20) -> float:
  """Mutual Information Gap (Chen et al. 2018) as disentanglement_lib has it.

  Args:
    codes: float [N, K] codes, K >= 2.
    factors: int [N, F] ground-truth factors.
    num_bins: histogram bins per code.

  Returns:
    Mean over non-constant factors of the gap between the two largest MIs
    (over codes), divided by the factor's entropy. Constant factors (entropy
    0) are left out.
  """
  codes, factors = _check_pair(codes, factors)
  num_bins = _check_num_bins(num_bins)
  if codes.shape[1] < 2:
    raise UserInputError(f'mig needs at least 2 code dimensions; got '
                         f'{codes.shape[1]}')
  labels, values = _relabel(factors)
  if not np.any(values > 1):
    raise UserInputError('mig needs a factor with more than one value; all '
                         f'{factors.shape[1]} factors are constant')
  return float(_mig(*_code_bins(codes, num_bins), jnp.asarray(labels),
                    num_bins, int(values.max())))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _modularity(codes, lower_edges, factor_labels, num_bins,
                num_factor_values):
  code_labels = _digitize(codes, lower_edges) - 1
  mi = _mutual_info(code_labels, factor_labels, num_bins, num_factor_values)
  squared = mi**2
  max_squared = squared.max(axis=1)
  dead = max_squared == 0
  numerator = squared.sum(axis=1) - max_squared
  denominator = jnp.where(dead, 1.0, max_squared) * (mi.shape[1] - 1)
  return jnp.where(dead, 0.0, 1.0 - numerator / denominator).mean()


def modularity(codes, factors, num_bins: int = 20) -> float:
  """Modularity (Ridgeway & Mozer 2018) as disentanglement_lib has it.

  Args:
    codes: float [N, K] codes.
    factors: int [N, F] ground-truth factors, F >= 2.
    num_bins: histogram bins per code.

  Returns:
    Mean over codes of 1 - (sum of squared MIs - max squared MI) /
    (max squared MI * (F - 1)); codes with zero MI to every factor score 0.
  """
  codes, factors = _check_pair(codes, factors)
  num_bins = _check_num_bins(num_bins)
  if factors.shape[1] < 2:
    raise UserInputError('modularity needs at least 2 factors; got '
                         f'{factors.shape[1]}')
  labels, values = _relabel(factors)
  return float(_modularity(*_code_bins(codes, num_bins), jnp.asarray(labels),
                           num_bins, int(values.max())))


def modularity_explicitness(codes_train, factors_train, codes_test,
                            factors_test, num_bins: int = 20) -> dict:
  """disentanglement_lib's modularity_explicitness: modularity of the train
  codes and explicitness (`msdr.eval.explicitness`) on train and test.

  Returns:
    dict with 'modularity', 'explicitness_train' and 'explicitness_test'.
  """
  _check_pair(codes_test, factors_test)
  scores = {'modularity': modularity(codes_train, factors_train, num_bins)}
  scores.update(explicitness_lib.explicitness(
      codes_train, factors_train, codes_test, factors_test))
  return scores


def _linear_interpolation(lower: jax.Array, upper: jax.Array,
                          t: jax.Array) -> jax.Array:
  """numpy's linear percentile between two order statistics, its formula
  (from the nearer end, so t = 0 or 1 gives the value itself)."""
  diff = upper - lower
  return jnp.where(t >= 0.5, upper - diff * (1 - t), lower + diff * t)


def _order_ranks(counts: jax.Array, q: float):
  """(0-based ranks below and above numpy's linear q-index in groups of
  `counts` values, [C] each, and the fraction t [C, 1] between them)."""
  index = q * jnp.maximum(counts - 1, 0).astype(jnp.float32)
  below = jnp.floor(index)
  t = (index - below)[:, None]
  below = below.astype(jnp.int32)
  return below, jnp.minimum(below + 1, jnp.maximum(counts - 1, 0)), t


def _group_percentiles_sorted(values, label, counts, q):
  """[C, K] linear q-percentile of each column's values [N, K] within each
  group (label [N] in 0..C-1, counts [C]), by one sort of the columns by
  (group, value); garbage for empty groups."""
  keys = jnp.broadcast_to(label[:, None], values.shape)
  _, ordered = jax.lax.sort((keys, values), dimension=0, num_keys=2)
  n = values.shape[0]
  starts = jnp.cumsum(counts) - counts
  below, above, t = _order_ranks(counts, q)
  at = lambda rank: ordered[jnp.clip(starts + rank, 0, n - 1)]
  return _linear_interpolation(at(below), at(above), t)


def _group_percentiles_top(values, label, counts, q, top):
  """As `_group_percentiles_sorted`, from each group's `top` largest values
  per column (`lax.top_k` of the group's values, the others masked), for a
  q near 1: every group's ranks below and above its q-index must be among
  its `top` largest. Several times faster than the sort on a CPU."""
  def largest(group):  # [K, top], descending
    masked = jnp.where(label == group, values.T, -jnp.inf)
    return jax.lax.top_k(masked, top)[0]
  ordered = jax.lax.map(largest, jnp.arange(counts.shape[0]))  # [C, K, top]
  below, above, t = _order_ranks(counts, q)
  at = lambda rank: jnp.take_along_axis(
      ordered, jnp.clip(counts - 1 - rank, 0, top - 1)[:, None, None],
      axis=2)[..., 0]
  return _linear_interpolation(at(below), at(above), t)


def _largest_needed(counts: np.ndarray, q: float) -> int:
  """How many of a group's largest values reach its order statistics below
  and above numpy's linear q-index, at most over groups of `counts`."""
  counts = np.asarray(counts, np.int64)
  index = np.float32(q) * np.maximum(counts - 1, 0).astype(np.float32)
  return int(np.max(counts - np.floor(index).astype(np.int64), initial=1))


# Up to this many largest values per group, IRS's percentiles come from
# `lax.top_k` of each group (k = 36 at the benchmark size) rather than a
# sort by (group, value): 4.5 against 20 ms per factor at N = 10,000.
_TOP_K_LIMIT = 128


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _irs(codes, labels, counts, num_bins, diff_quantile, top):
  max_deviations = jnp.abs(codes - codes.mean(axis=0)).max(axis=0)

  def per_factor(label, int_counts):
    one_hot = jax.nn.one_hot(label, num_bins, dtype=jnp.float32)
    counts = int_counts.astype(jnp.float32)
    group_means = jnp.einsum('nc,nk->ck', one_hot, codes, precision=_HIGHEST)
    group_means = group_means / jnp.maximum(counts, 1.0)[:, None]
    diffs = jnp.abs(codes - group_means[label])
    if top:
      quantiles = _group_percentiles_top(diffs, label, int_counts,
                                         diff_quantile, top)
    else:
      quantiles = _group_percentiles_sorted(diffs, label, int_counts,
                                            diff_quantile)
    present = counts > 0
    total = jnp.where(present[:, None], quantiles, 0.0).sum(axis=0)
    return total / present.sum()

  cum_deviations = jax.vmap(per_factor, in_axes=(1, 1), out_axes=1)(
      labels, counts)
  active = max_deviations > 0
  normalized = cum_deviations / jnp.where(active, max_deviations, 1.0)[:, None]
  scores = (1.0 - normalized).max(axis=1)
  weights = jnp.where(active, max_deviations, 0.0)
  return (jnp.where(active, scores, 0.0) * weights).sum() / weights.sum()


def irs(codes, factors, diff_quantile: float = 0.99,
        num_bins: int = 20) -> float:
  """Interventional Robustness Score (Suter et al. 2019), disentanglement_lib's.

  Args:
    codes: float [N, K] codes.
    factors: int [N, F] ground-truth factors.
    diff_quantile: quantile of the within-group deviations, in [0, 1] (1.0 is
      the paper's max).
    num_bins: histogram bins for the factors (disentanglement_lib's
      make_discretizer of the factors; factors with <= num_bins evenly spaced
      values keep their partition).

  Returns:
    The IRS avg_score over non-constant code dimensions (weighted by their
    max deviation from the mean); 0.0 if every code dimension is constant.
  """
  codes, factors = _check_pair(codes, factors)
  num_bins = _check_num_bins(num_bins)
  if not 0.0 <= diff_quantile <= 1.0:
    raise UserInputError(f'diff_quantile must be in [0, 1]; got {diff_quantile}')
  if not np.any(codes.max(axis=0) > codes.min(axis=0)):
    return 0.0
  edges = _lower_edges(factors, num_bins)
  offset = np.minimum(factors.min(axis=0), edges.min(axis=0))
  labels = np.asarray(_digitize_jit(
      jnp.asarray(factors - offset, jnp.int32),
      jnp.asarray(edges - offset, jnp.int32))) - 1
  counts = np.stack([np.bincount(column, minlength=num_bins)
                     for column in labels.T], axis=1)  # [num_bins, F]
  top = _largest_needed(counts, diff_quantile)
  return float(_irs(jnp.asarray(codes), jnp.asarray(labels),
                    jnp.asarray(counts, jnp.int32), num_bins,
                    float(diff_quantile), top if top <= _TOP_K_LIMIT else 0))

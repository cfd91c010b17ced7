"""sklearn's GradientBoostingClassifier (its defaults) in vectorized JAX,
for DCI's importances (`msdr.eval.dci`, whose docstring states what is
reproduced: log loss, depth-3 regression trees per class, Newton leaves,
impurity-decrease importances).

The JAX backend (this module: the boosting rounds; `msdr.eval.gbt_tree`: the
tree growth; `msdr.eval.gbt_search`: the split search) grows all the trees of
a round (one per class and factor) together, a few at a time so the arrays
stay in cache, with no sorting inside the jit: each code column is sorted once
on the host and its positions are laid out in blocks of B = 32 ([B, N / B],
position j B + i at [i, j]). Each tree's residuals are gathered into every
column's sorted order once; the samples' nodes there are routed level by
level with no gather, from a table of every sample's rank in every column
laid out in every column's sorted order (`_cross_rank`: K^2 N int16 for
N < 32767, 2 MB at the benchmark size; 6.4% faster rounds on one core than
gathering the nodes per level, which is done instead where the table would
pass _CROSS_RANK_ELEMENTS). The best split of every node of every tree
is found exactly in two steps:
  1. per block, the node's residual sum, absolute sum and count (summed for
     left children only, as pairwise sums that XLA fuses into one pass; a
     right child's are its parent's minus its sibling's) and their
     block-level cumulative sums give the exact gain of the split after each
     block's last position, and an upper bound on the gain of any split
     inside the block: the block confines the left sum and count to a box,
     and the gain, a convex function of them over a positive concave one, is
     quasiconvex, so its maximum over the box is at a corner;
  2. the blocks whose bound reaches the best gain found so far are searched
     position by position, the 32 of highest bound at a time, until no
     remaining block can beat the best (one step for most nodes, rarely more
     than three; after eight, every position of the chunk's level is
     searched instead, so bounds too loose to prune cost no more than that).
Samples are routed by their rank in the split column (the exact partition);
test samples by the thresholds: the midpoint between the values at the node's
last sample at or before the split position and at its first sample after it,
both located from the node's block counts and one block's positions. Exact
ties between candidate splits, which sklearn breaks by a random feature order
(disentanglement_lib leaves random_state=None, so its own scores vary by about
0.005), go to the lowest code index, then the lowest threshold. Constant code
columns are left out of the search. Arithmetic is float32 (sklearn: float64
gradients and sums), which can flip near-ties; where sklearn's float64
rounding decides a gradient or hessian (p within ~1e-16 of 0 or 1) it is
reproduced. Not reproduced: values chained by gaps under 1e-7 are grouped over
the whole column here, per node in sklearn. In the tests one boosting round
gives sklearn's decision_function exactly (for one of its random feature
orders) and 100 rounds give DCI scores within 0.01 of it.

Speed, N = 10,000 train and 5,000 test codes, K = 10, factors of 3, 6, 40, 32
and 32 values (11,300 trees), alone on a 2-core AVX-512 CPU (2026-11-29):
DCI 2.9-3.2 s warm in five benchmark runs (the boosting about 5 s on one
core, about 4.5 ns per (tree, code, sample)); compiled with 512-bit vectors
preferred (`xla_utils.CPU_VECTOR_OPTIONS`, about 4.5% faster). On a CPU the
factors of runs this long are split into one group per core, balanced by tree
count, and boosted concurrently, one program each: as one program XLA spreads
the ops over both cores but at about 40% more CPU time (20 rounds: 1.16 s wall,
2.0 s CPU against 0.75 s, 1.44 s). Trees of different factors are independent,
but a group's padding can change float rounding, and so break near-ties, vs one
program. The jit compiles once per group shape (N, K, test N, class counts of
the group's factors): 10-12 s each at that size, 23-29 s for the first call.
"""

from __future__ import annotations

from concurrent import futures
import functools

import jax
import jax.numpy as jnp
import numpy as np

from msdr import xla_utils
from msdr.eval import gbt_search
from msdr.eval import gbt_tree

NUM_ROUNDS = 100
LEARNING_RATE = 0.1
FEATURE_THRESHOLD = 1e-7
_TWO_53 = float(2.0**53)


def _round53(v):
  """v rounded to a multiple of 2^-53 (float64's spacing just below 1)."""
  return jnp.round(v * _TWO_53) * (1.0 / _TWO_53)


def _gradients(raw, y, classes):
  """Negative gradient r and hessian p (1 - p) as sklearn computes them.

  Args:
    raw: [T, N] raw scores.
    y: [T, N] bool, whether the sample has the tree's class.
    classes: (static) each factor's class count, in tree order: a factor of
      C > 2 classes has C consecutive trees (softmax over them), a two-class
      factor one tree (for its second class; softmax([0, raw])).

  Returns:
    (r, h), each [T, N].
  """
  r, h = [], []
  first = 0
  for c in classes:
    trees = 1 if c == 2 else c
    z = raw[first:first + trees]
    y_c = y[first:first + trees]
    first += trees
    if c == 2:
      z = jnp.concatenate([jnp.zeros_like(z), z])
    top_z = z.max(axis=0, keepdims=True)
    top = z == top_z
    e, = xla_utils.materialize(jnp.exp(z - top_z))
    total = e.sum(axis=0, keepdims=True)
    # 1 - p without cancellation for a top class: the sum of the others' e
    # (each other top class has e = 1).
    others = (jnp.where(top, 0.0, e).sum(axis=0, keepdims=True) +
              top.sum(axis=0, keepdims=True).astype(jnp.float32) - 1.0)
    p = e / total
    q = jnp.where(top, others / total, 1.0 - p)
    p, q = p[-trees:], q[-trees:]
    big = p >= 0.5
    q53 = _round53(q)
    # sklearn: r = y - p in float64 (multinomial; the binomial r is exact) and
    # the hessian uses prob = y - r, so the smaller of p, 1 - p is rounded.
    r.append(jnp.where(y_c, jnp.where(big & (c > 2), q53, q), -p))
    h.append(jnp.where(big, p * q53, jnp.where(y_c, _round53(p) * q, p * q)))
  return jnp.concatenate(r), jnp.concatenate(h)


def _boost_rounds(x, x_test, rank, sorted_index, valid, cross_rank, y,
                  init_raw, scale, num_rounds, classes, trees_per_chunk):
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

  padded_x = jnp.concatenate([x, jnp.full((k, 1), jnp.inf, x.dtype)], axis=1)
  sorted_x = padded_x[jnp.arange(k)[:, None, None], sorted_index]

  def grow_chunk(r):
    return gbt_tree.grow(r, sorted_index, valid, rank, sorted_x, cross_rank)

  def one_round(_, carry):
    raw, raw_test, importance = carry
    r, h = _gradients(raw, y, classes)
    leaf, feats, thresholds, gain = jax.tree.map(
        unchunked, jax.lax.map(grow_chunk, chunked(
            jnp.pad(r, [(0, 0), (0, 1)]))))
    numerator, denominator = gbt_tree.leaf_sums(r, h, leaf)
    value = LEARNING_RATE * scale[:, None] * jnp.where(
        denominator > 0.0,
        numerator / jnp.where(denominator > 0.0, denominator, 1.0), 0.0)
    leaf_test = gbt_tree.descend(x_test, feats, thresholds)
    return (raw + gbt_tree.pick(leaf, value),
            raw_test + gbt_tree.pick(leaf_test, value),
            importance + gain)

  init = (jnp.broadcast_to(init_raw[:, None], (t, n)),
          jnp.broadcast_to(init_raw[:, None], (t, x_test.shape[1])),
          jnp.zeros((t, k), jnp.float32))
  return jax.lax.fori_loop(0, num_rounds, one_round, init)


@functools.cache
def _boost():
  """`_boost_rounds` jitted, with 512-bit vectors where XLA knows the option
  (`xla_utils.CPU_VECTOR_OPTIONS`)."""
  return jax.jit(
      _boost_rounds, static_argnames=('classes', 'trees_per_chunk'),
      compiler_options=xla_utils.known_options(xla_utils.CPU_VECTOR_OPTIONS))


def _sort_columns(x: np.ndarray):
  """Sorted layout (see `gbt_tree.grow`) of float32 codes [N, K].

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
  num_blocks = -(-n // gbt_search.BLOCK)
  pad = num_blocks * gbt_search.BLOCK - n
  perm = np.concatenate([perm, np.full((pad, k), n)], axis=0)
  run_end = np.concatenate([run_end, np.zeros((pad, k), bool)], axis=0)
  block = gbt_search.BLOCK
  blocked = lambda a: a.T.reshape(k, num_blocks, block).transpose(0, 2, 1)
  return rank.T, blocked(perm).astype(np.int32), blocked(run_end)


# Largest cross-rank table (`_cross_rank`), in elements.
_CROSS_RANK_ELEMENTS = 2**25


def _cross_rank(rank, sorted_index):
  """[K, K, B, NB] rank in feature f of the sample at each sorted position of
  feature k (N past the end), int16 where N allows, or None if the table
  would exceed _CROSS_RANK_ELEMENTS (`gbt_tree.grow`)."""
  k, n = rank.shape
  if k * k * sorted_index[0].size > _CROSS_RANK_ELEMENTS:
    return None
  dtype = np.int16 if n < np.iinfo(np.int16).max else np.int32
  padded = np.concatenate([rank, np.full((k, 1), n, rank.dtype)], axis=1)
  return jnp.asarray(padded[:, sorted_index].astype(dtype))


_CHUNK_ELEMENTS = 2**18


def _trees_per_chunk(n: int, k: int, num_trees: int) -> int:
  """Trees grown together: [chunk, K, N] arrays of about 2^18 elements."""
  chunk = max(1, _CHUNK_ELEMENTS // (n * k))
  num_chunks = -(-num_trees // chunk)
  return -(-num_trees // num_chunks)


def _boost_factors(boosted, columns, codes_test, num_rounds):
  """Boosts the classifiers of `boosted` factors together (one program).

  Args:
    boosted: [(classes C, train labels [N])] of factors with C >= 2.
    columns: (codes_train [N, K'], rank, sorted_index, valid) of the kept
      code columns (`_sort_columns`) and their cross ranks (`_cross_rank`),
      built once for every group.
    codes_test: [Nt, K'] the same columns of the test codes.
    num_rounds: boosting rounds.

  Returns:
    One (raw train scores [C', N], raw test scores [C', Nt], split gains
    [C', K']) per factor, C' = 1 for two classes, C otherwise.
  """
  codes_train, rank, sorted_index, valid, cross_rank = columns
  n = codes_train.shape[0]
  # Tree t is class c of boosted factor g; a two-class factor has a single
  # tree (for its second class), whose softmax row is [0, raw].
  ys, init_raw, scale, trees_of = [], [], [], []
  for c, labels in boosted:
    prior = np.bincount(labels, minlength=c) / n
    first = len(ys)
    if c == 2:
      ys.append(labels == 1)
      init_raw.append(np.log(prior[1] / prior[0]))
      scale.append(1.0)
    else:
      for cls in range(c):
        ys.append(labels == cls)
        init_raw.append(np.log(prior[cls]))
        scale.append((c - 1) / c)
    trees_of.append(slice(first, len(ys)))
  num_trees = len(ys)
  raw, raw_test, gain = jax.device_get(_boost()(
      jnp.asarray(codes_train.T), jnp.asarray(codes_test.T),
      jnp.asarray(rank), jnp.asarray(sorted_index), jnp.asarray(valid),
      cross_rank, jnp.asarray(np.stack(ys)),
      jnp.asarray(np.asarray(init_raw, np.float32)),
      jnp.asarray(np.asarray(scale, np.float32)),
      jnp.asarray(num_rounds, jnp.int32),
      classes=tuple(c for c, _ in boosted),
      trees_per_chunk=_trees_per_chunk(n, codes_train.shape[1], num_trees)))
  return [(np.asarray(raw[t], np.float64), np.asarray(raw_test[t], np.float64),
           np.asarray(gain[t], np.float64)) for t in trees_of]


def _groups(tree_counts: list[int], workers: int) -> list[list[int]]:
  """Factors split into at most `workers` groups of similar tree counts
  (largest first, each to the lightest group)."""
  groups = [[] for _ in range(min(workers, len(tree_counts)))]
  load = [0] * len(groups)
  for i in sorted(range(len(tree_counts)), key=lambda i: -tree_counts[i]):
    g = load.index(min(load))
    groups[g].append(i)
    load[g] += tree_counts[i]
  return [g for g in groups if g]


# Boosting work (trees x train samples x kept codes x rounds) from which a CPU
# boosts groups of factors concurrently: each group is its own program, and
# its compile (~8 s) is worth it only when the run is long (1.1e9 at the
# benchmark size: 10.2 s as one program, 4.4 s as two).
_CONCURRENT_WORK = 1e9


def _workers(work: float) -> int:
  """Concurrent boosting programs: one per core on a CPU for long runs (one
  XLA CPU program uses the cores at half the efficiency), else one."""
  if jax.default_backend() != 'cpu' or work < _CONCURRENT_WORK:
    return 1
  return xla_utils.cpu_cores()


def _fit_jax(codes_train, factors_train, codes_test, factors_test, num_rounds,
             workers: int | None = None):
  """Boosts every factor's classifier; on a CPU, long runs boost groups of
  factors (similar tree counts) concurrently, one thread and program each
  (`workers` groups at most; None: `_workers`).

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
  boosted = [j for j, fit in enumerate(fits) if fit is not None]
  if not boosted:
    return fits

  rank, sorted_index, valid = _sort_columns(codes_train)
  # Columns constant to within FEATURE_THRESHOLD never split: leave them out
  # (keeping one, so that the arrays are not empty).
  keep = np.flatnonzero(valid.any(axis=(1, 2)))
  keep = keep if len(keep) else np.zeros(1, np.int64)
  columns = (codes_train[:, keep], rank[keep], sorted_index[keep],
             valid[keep], _cross_rank(rank[keep], sorted_index[keep]))
  trees = [1 if fits[j][0] == 2 else fits[j][0] for j in boosted]
  work = float(sum(trees)) * codes_train.shape[0] * len(keep) * num_rounds
  groups = _groups(trees, workers or _workers(work))

  def run(group):
    return _boost_factors([fits[boosted[i]][:2] for i in group], columns,
                          codes_test[:, keep], num_rounds)

  if len(groups) == 1:
    results = [run(groups[0])]
  else:
    with futures.ThreadPoolExecutor(len(groups)) as pool:
      results = list(pool.map(run, groups))
  for group, result in zip(groups, results):
    for i, (raw, raw_test, gain) in zip(group, result):
      j = boosted[i]
      all_gain = np.zeros((gain.shape[0], codes_train.shape[1]))
      all_gain[:, keep] = gain
      fits[j] = fits[j][1:] + (raw, raw_test, all_gain)
  return fits


def importance(codes_train, factors_train, codes_test, factors_test,
               num_rounds: int = NUM_ROUNDS):
  """(importance [K, F], train accuracy [F], test accuracy [F]) of one boosted
  classifier per factor; inputs already checked (`dci._check_inputs`) and
  every factor taking at least two train values (`dci.gbt_importance`)."""
  num_codes, num_factors = codes_train.shape[1], factors_train.shape[1]
  importance = np.zeros((num_codes, num_factors))
  train_accuracy = np.zeros(num_factors)
  test_accuracy = np.zeros(num_factors)
  fits = _fit_jax(codes_train, factors_train, codes_test, factors_test,
                  num_rounds)
  for j, fit in enumerate(fits):
    labels, labels_test, raw, raw_test, gain = fit
    total = gain.sum(axis=0)
    if total.sum() > 0:
      importance[:, j] = total / total.sum()
    predict = lambda s: (s[0] >= 0 if len(s) == 1 else np.argmax(s, axis=0))
    train_accuracy[j] = np.mean(predict(raw) == labels)
    test_accuracy[j] = np.mean(predict(raw_test) == labels_test)
  return importance, train_accuracy, test_accuracy

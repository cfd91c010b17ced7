"""The exact best split of every node of many regression trees at once
(`msdr.eval.gbt_tree`'s tree growth, one tree level per call).

Each code column is sorted once (`gbt._sort_columns`) and laid out in blocks
of BLOCK positions. Per node, block-level cumulative sums of the residual sum,
absolute sum and count give the exact gain after each block and a bound on
any split inside it; the blocks whose bound reaches the best gain found so
far are searched position by position, CANDIDATES at a time in order of
bound, until none is left, or, after MAX_STEPS steps, by `full_search`
over every position of every block (also the reference the tests hold the
loop to). The gain is sklearn's squared-error
(friedman_mse-equivalent) between-children sum of squares. `bracket` then
finds the samples a split falls between, for its threshold.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from msdr import xla_utils

BLOCK = 32  # positions per block of the blocked prefix sums


def _prefix_natural(x: jax.Array) -> jax.Array:
  """Inclusive prefix sum along the last axis: products with a triangular
  matrix within groups of BLOCK, then of the group totals (two XLA dots; a
  chain of adds along the last axis is a small kernel per element)."""
  length = x.shape[-1]
  group = min(length, BLOCK)
  padded = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, -length % group)])
  groups = padded.shape[-1] // group
  triangle = lambda size, k: jnp.triu(jnp.ones((size, size), x.dtype), k)
  out = jnp.matmul(padded.reshape(x.shape[:-1] + (groups, group)),
                   triangle(group, 0), precision=jax.lax.Precision.HIGHEST)
  if groups > 1:
    out = out + jnp.matmul(out[..., -1], triangle(groups, 1),
                           precision=jax.lax.Precision.HIGHEST)[..., None]
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


def _pairwise_sum(terms, combine=jnp.add):
  """Sum (or `combine`) of a list of arrays as a balanced tree of adds
  (float32 rounding grows with its depth, log2 of the count, not with the
  count), which XLA fuses into one elementwise pass."""
  while len(terms) > 1:
    terms = [combine(a, b) for a, b in zip(terms[0::2], terms[1::2])] + (
        [terms[-1]] if len(terms) % 2 else [])
  return terms[0]


def _block_stats(rs, sorted_node, num_left):
  """[3, M', T, K, NB] residual sum, count and absolute sum per block of the
  left children 0, 2, .., 2 M' - 2, as pairwise sums over the block's B rows
  (XLA fuses the adds into one pass; a reduction would first materialise
  the masked residuals)."""
  rows = [(rs[..., i, :], sorted_node[..., i, :]) for i in range(rs.shape[-2])]
  sums, counts, absolute = [], [], []
  for m in range(num_left):
    member = [node_i == 2 * m for _, node_i in rows]
    x = [jnp.where(l, r_i, 0.0) for l, (r_i, _) in zip(member, rows)]
    sums.append(_pairwise_sum(x))
    counts.append(_pairwise_sum([l.astype(jnp.float32) for l in member]))
    absolute.append(_pairwise_sum([jnp.abs(v) for v in x]))
  return jnp.stack([jnp.stack(sums), jnp.stack(counts), jnp.stack(absolute)])


# Blocks searched position by position per node and step (8, 16, 24, 48 and
# 64 were slower at the benchmark size).
CANDIDATES = 32
MAX_STEPS = 8  # steps before a level falls back to `full_search`


def _members(sorted_node, num_nodes):
  """bool [M, ...]: whether the sample at each position is in node m."""
  return sorted_node == jnp.arange(num_nodes).reshape(
      (num_nodes,) + (1,) * sorted_node.ndim)


def top_blocks(values, q):
  """`lax.top_k` of each row of blocks [..., K, NB] in the order (value
  descending, then column j, then feature), in two stages of short rows:
  the q columns of highest maximum (ties: lowest j), then the top q of
  their q K blocks, taken in (j, feature) order. Exact: every block
  ranked ahead of one of the top q has its column's maximum ranked ahead of
  that block's column, so the top q blocks lie in the top q columns.
  At the benchmark size the rows are 313 and 320 long instead of 3130; in
  four alternating profiles of 20 rounds on one core the candidate loop
  (top-k included) took 145-170 ms against 171-231 ms, with the same
  splits.

  Returns:
    (values [..., q], feature [..., q], column [..., q]).
  """
  k, num_blocks = values.shape[-2:]
  q_columns = min(q, num_blocks)
  column_max = _pairwise_sum([values[..., i, :] for i in range(k)],
                             jnp.maximum)
  _, columns = jax.lax.top_k(column_max, q_columns)
  columns = jnp.sort(columns, axis=-1)  # [..., q'] in j order
  picked = jnp.take_along_axis(values, columns[..., None, :], axis=-1)
  picked = jnp.swapaxes(picked, -1, -2).reshape(
      values.shape[:-2] + (q_columns * k,))  # (j, feature) order
  top, index = jax.lax.top_k(picked, q)
  return top, index % k, jnp.take_along_axis(columns, index // k, axis=-1)


def full_search(rs, sorted_node, valid, splittable):
  """Exact best split of every (node, tree) from full-length prefix sums.

  Args: as `search`.

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


def search(rs, sorted_node, valid, splittable, parent_stats=None):
  """Exact best split of every (node, tree), pruned by block bounds.

  For each block of B sorted positions, the node's residual sum, sum of
  absolute residuals and count give the exact gain of the split after the
  block's last position and a bound on the gain of any split inside it: the
  left sum lies between s0 - (negatives) and s0 + (positives), the left count
  between c0 and c0 + count (less the ends that a valid block end already
  gives), and the gain, the ratio of a convex function of (sum, count) to a
  positive concave one, is quasiconvex (its sublevel sets are convex), so its
  maximum over that box is at one of the four corners. Starting from the best
  block end, the blocks are searched position by position in the order of
  `top_blocks` (bound descending, then block column, then feature; two short
  `lax.top_k`s), CANDIDATES at a time,
  each step taking those after the last one searched whose bound reaches the
  best gain so far, until the last one searched falls below it (a while
  loop; at the benchmark size 1.05 steps per call in the first rounds, 1.5
  in the last, at most 4). The loop state is that last block, not a mask of
  the remaining ones, so a step writes no [M, T, K NB] array. If blocks may
  remain after MAX_STEPS steps, every position is searched instead
  (`full_search`).

  Args:
    rs: [T, K, B, NB] residuals in each feature's sorted order.
    sorted_node: int [T, K, B, NB] node of the sample there (-1: none).
    valid: bool [K, B, NB] whether a split may fall after the position.
    splittable: bool [M, T] nodes that may split.
    parent_stats: the block statistics [3, M / 2, T, K, NB] returned for the
      previous level, or None at the root. Only left children are summed; a
      right child's statistics are its parent's minus its sibling's.

  Returns:
    (([M, T] gain, position, feature), block statistics, [M, T, K, NB]
    node sample counts up to each block's end); gain is -inf where there is
    no split.
  """
  m, t = splittable.shape
  k, block, num_blocks = valid.shape
  num_positions = block * num_blocks
  stats = _block_stats(rs, sorted_node, max(m // 2, 1))
  if parent_stats is not None:  # [3, M // 2, T, K, NB] -> [3, M, T, K, NB]
    stats = jnp.stack([stats, parent_stats - stats], axis=2).reshape(
        (3, m) + stats.shape[2:])

  def prefixes(stats):  # sums and counts up to each block's end and start
    s_end, c_end = _prefix_natural(stats[:2])
    starts = jnp.stack([s_end - stats[0], c_end - stats[1]])
    totals = jnp.stack([s_end[..., -1], c_end[..., -1]])
    return s_end, c_end, starts, totals

  # Into buffers: the CPU compiler would otherwise recompute the prefix sums
  # and the bounds inside each of their consumers (block-end keys, the loop's
  # gathers): 100 rounds 10% faster, 3.37 against 3.73 s. Computed inside
  # `xla_utils.computed`, they are written once, with no copies.
  s_end, c_end, starts, totals = xla_utils.computed(prefixes, stats)
  s_total, n = totals[..., None]  # [M, T, K, 1] each

  def bounds(s_end, c_end, starts, stats, splittable):
    """([M, T, K, NB] bound inside each block, gain at its end)."""
    s0, c0 = starts
    block_sum, block_count, block_abs = stats
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
    # The gain is quasiconvex in (s, c) (a convex function over a positive
    # concave one: its sublevel sets are convex), so its maximum over the box
    # [lo, hi] x [c_lo, c_hi] is at a corner.
    inside = valid[:, :-1, :].any(axis=1) & block_ok & (c_lo <= c_hi)
    def corners(c):
      # The larger gain of the two corners at left count c: the numerator
      # (n s - c S)^2 is largest at the s of larger |n s - c S|, so two
      # divisions serve the four corners (4% faster rounds, same values).
      top = jnp.maximum(jnp.abs(n * lo - c * s_total),
                        jnp.abs(n * hi - c * s_total))
      return jnp.square(top) / jnp.where(inside, c * (n - c), 1.0)
    bound = jnp.maximum(corners(c_lo), corners(c_hi))
    bound = jnp.where(inside, bound, -jnp.inf) * (1.0 + 1e-4)  # float32 slack
    return bound, end_gain

  bound, end_gain = xla_utils.computed(
      bounds, s_end, c_end, starts, stats, splittable)
  best_end = end_gain.max(axis=(2, 3))  # [M, T]
  big = jnp.iinfo(jnp.int32).max
  # The best block end: highest gain, then lowest feature and position.
  end_key = (jnp.arange(k)[:, None] * num_positions +
             jnp.arange(num_blocks) * block + block - 1)
  key_end = jnp.where(end_gain == best_end[:, :, None, None], end_key,
                      big).min(axis=(2, 3))
  nodes = jnp.arange(m)[:, None, None]
  trees = jnp.arange(t)[None, :, None]
  num_candidates = min(CANDIDATES, k * num_blocks)
  # Blocks are taken in `top_blocks`' order: bound descending, then block
  # column, then feature.
  block_order = jnp.arange(num_blocks) * k + jnp.arange(k)[:, None]  # [K, NB]

  def search_blocks(state):
    """Searches the Q blocks that come after the last one searched (in
    `top_blocks`' order) and whose bound reaches the best gain; returns the
    new best and last searched."""
    best, key, last, last_index, steps = state
    last4, last_index4 = last[..., None, None], last_index[..., None, None]
    after = ((bound < last4) |
             ((bound == last4) & (block_order > last_index4)))
    top, feat, j = top_blocks(
        jnp.where(after & (bound >= best[..., None, None]), bound, -jnp.inf),
        num_candidates)  # [M, T, Q]
    index = j * k + feat
    member = sorted_node[trees, feat, :, j] == nodes[..., None]
    member = member.astype(jnp.float32)  # [M, T, Q, B]
    start = starts[:, nodes, trees, feat, j][..., None]  # [2, M, T, Q, 1]
    s = start[0] + _prefix_natural(rs[trees, feat, :, j] * member)
    c = start[1] + _prefix_natural(member)
    ok = valid[feat, :, j] & jnp.isfinite(top)[..., None]
    total = totals[:, nodes, trees, feat][..., None]  # [2, M, T, Q, 1]
    gain = _split_gain_with_totals(s, c, total[0], total[1], ok)
    best_q = gain.max(axis=(2, 3))
    key_q = (feat * num_positions + j * block)[..., None] + jnp.arange(block)
    key_q = jnp.where(gain == best_q[:, :, None, None], key_q,
                      big).min(axis=(2, 3))
    key = jnp.where(best_q > best, key_q,
                    jnp.where(best > best_q, key, jnp.minimum(key, key_q)))
    best = jnp.maximum(best, best_q)
    # The last searched: reductions, not a slice of top_k's output (XLA would
    # merge that slice with top_k's and sort the whole row instead).
    last = top.min(axis=-1)
    last_index = jnp.where(top == last[..., None], index, -1).max(axis=-1)
    return best, key, last, last_index, steps + 1

  def more(state):
    """Whether blocks may remain: those after the last one searched have
    bounds at most its bound (-inf: fewer than Q were left)."""
    best, _, last, _, _ = state
    return ((last >= best) & (last > -jnp.inf)).any()

  state = (best_end, key_end, jnp.full((m, t), jnp.inf),
           jnp.full((m, t), -1, jnp.int32), 0)
  state = jax.lax.while_loop(
      lambda state: more(state) & (state[-1] < MAX_STEPS), search_blocks,
      state)
  best, key = state[:2]
  key = jnp.where(jnp.isfinite(best), key, 0)
  found = (best, key % num_positions, key // num_positions)
  # Bounds too loose to prune (e.g. residuals equal but for rounding): every
  # position of every block instead, so that no level costs more than that.
  found = jax.lax.cond(
      more(state), lambda: full_search(rs, sorted_node, valid, splittable),
      lambda: found)
  return found, stats, c_end


def _in_block_counts(sorted_node, nodes, trees, feat, block_index):
  """[..., M, T, B] running count of node m's samples along one block of
  feat (feat, block_index: [..., M, T])."""
  member = sorted_node[trees, feat, :, block_index] == nodes[..., None]
  return _prefix_natural(member.astype(jnp.float32))


def bracket(sorted_node, c_end, feat, pos):
  """Sorted positions, in feature feat, of node m's last sample at or before
  pos and of its first sample after it (the values the split falls between).

  Args:
    sorted_node: int [T, K, B, NB] node of the sample at each position.
    c_end: [M, T, K, NB] node sample counts up to each block's end (`search`).
    feat, pos: int [M, T] each node's split.

  Returns:
    (last_left, first_right) int [M, T] positions; meaningless where the node
    does not split.
  """
  m, t = feat.shape
  block, num_blocks = sorted_node.shape[-2:]
  nodes = jnp.arange(m)[:, None]
  trees = jnp.arange(t)[None, :]
  counts = c_end[nodes, trees, feat]  # [M, T, NB]

  def before(counts, j):  # the node's samples in the blocks before block j
    return jnp.where(
        j > 0, jnp.take_along_axis(counts, jnp.maximum(j - 1, 0)[..., None],
                                   axis=-1)[..., 0], 0.0)

  j = pos // block
  in_block = _in_block_counts(sorted_node, nodes, trees, feat, j)
  num_left = before(counts, j) + jnp.take_along_axis(
      in_block, (pos % block)[..., None], axis=-1)[..., 0]
  # Positions of the node's q-th samples (1-based) in feat's order, for
  # q = num_left and num_left + 1 at once ([2, M, T]: half the ops).
  q = jnp.stack([num_left, num_left + 1.0])
  counts = jnp.broadcast_to(counts, (2,) + counts.shape)
  j = jnp.minimum((counts < q[..., None]).sum(axis=-1), num_blocks - 1)
  in_block = _in_block_counts(sorted_node, nodes, trees, feat, j)
  i = (in_block < (q - before(counts, j))[..., None]).sum(axis=-1)
  last_left, first_right = j * block + jnp.minimum(i, block - 1)
  return last_left, first_right

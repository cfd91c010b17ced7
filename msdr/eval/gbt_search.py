"""The exact best split of every node of many regression trees at once
(`msdr.eval.gbt`'s tree growth, one tree level per call).

Each code column is sorted once (`gbt._sort_columns`) and laid out in blocks
of BLOCK positions. Per node, block-level cumulative sums of the residual sum,
absolute sum and count give the exact gain after each block and a bound on
any split inside it; only blocks whose bound reaches the best block-end gain
(at most CANDIDATES per node) are searched position by position, else the
level falls back to `full_search` over every position. The gain is sklearn's
squared-error (friedman_mse-equivalent) between-children sum of squares.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BLOCK = 32  # positions per block of the blocked prefix sums


def _prefix_natural(x: jax.Array) -> jax.Array:
  """Inclusive prefix sum along the last axis."""
  length = x.shape[-1]
  if length <= BLOCK:
    rows = [x[..., 0]]
    for i in range(1, length):
      rows.append(rows[-1] + x[..., i])
    return jnp.stack(rows, axis=-1)
  pad = -length % BLOCK
  padded = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)])
  blocked = jnp.swapaxes(padded.reshape(x.shape[:-1] + (-1, BLOCK)), -1, -2)
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


CANDIDATES = 128  # blocks searched position by position per node


def _members(sorted_node, num_nodes):
  """bool [M, ...]: whether the sample at each position is in node m."""
  return sorted_node == jnp.arange(num_nodes).reshape(
      (num_nodes,) + (1,) * sorted_node.ndim)


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
  gives), and the gain is the ratio of a convex function of (sum, count) to a
  concave one, so the bound is the largest numerator at a corner over the
  smallest denominator at an end. Only blocks whose bound reaches
  the best block-end gain are searched position by position; if any (node,
  tree) of the chunk has more than CANDIDATES such blocks, every node is
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
  num_candidates = min(CANDIDATES, k * num_blocks)
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
    return full_search(rs, sorted_node, valid, splittable)

  return jax.lax.cond(overflow, full, pruned, rs, sorted_node, valid,
                      splittable, candidate, bound, end_gain, best_end, s0, c0,
                      s_total, n), stats

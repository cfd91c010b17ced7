"""One depth-3 regression tree per row of residuals, grown exactly and many
at once (`grow`, on `msdr.eval.gbt_search`'s split search), and the descent
of new samples through them (`descend`): the tree part of `msdr.eval.gbt`,
whose docstring describes the algorithm.

Per-sample work avoids XLA gathers and separate reductions: per-node lookups
are chains of selects (`pick`), masked sums, maxima and minima one variadic
reduction (`_reduce`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from msdr.eval import gbt_search

MAX_DEPTH = 3  # the tree growth below is written for depth 3


_COMBINE = {'sum': (jax.lax.add, 0.0), 'max': (jax.lax.max, -jnp.inf),
            'min': (jax.lax.min, jnp.inf)}


def _reduce(operands, kinds, fold=False):
  """One pass over the last axis for several float32 [T, N] operands, each
  summed, maximised or minimised (`kinds`). XLA's CPU compiler fuses the
  operands' producers into one variadic reduction; separate reductions
  would each first materialise their masked input.

  fold: first combine each operand's two halves elementwise (a vectorized
  fused pass), then reduce the half-length rest: 3x faster for the
  maxima and minima of `_varies` (rounds 12% faster); no faster for sums,
  whose rounding it would change.
  """
  combine = [_COMBINE[kind][0] for kind in kinds]
  identity = [_COMBINE[kind][1] for kind in kinds]
  if fold:
    n = operands[0].shape[-1]
    half = -(-n // 2)
    pad = [(0, 0)] * (operands[0].ndim - 1) + [(0, 2 * half - n)]
    padded = [jnp.pad(x, pad, constant_values=e)
              for x, e in zip(operands, identity)]
    operands = [f(x[..., :half], x[..., half:])
                for f, x in zip(combine, padded)]
  return jax.lax.reduce(
      operands, [jnp.float32(e) for e in identity],
      lambda a, b: [f(x, y) for f, x, y in zip(combine, a, b)],
      (operands[0].ndim - 1,))


def pick(index, table):
  """table[t, index[t, n]] for a small table [T, M], by a chain of selects
  (index in 0..M-1; an XLA gather per sample is several times slower)."""
  out = jnp.broadcast_to(table[:, :1], index.shape)
  for m in range(1, table.shape[1]):
    out = jnp.where(index == m, table[:, m:m + 1], out)
  return out


def _pick_rows(feat, rows):
  """rows[feat[t, n], n] for a small [K, N] table, by a chain of selects."""
  out = jnp.broadcast_to(rows[:1], feat.shape)
  for k in range(1, rows.shape[0]):
    out = jnp.where(feat == k, rows[k:k + 1], out)
  return out


def _varies(r, node, num_nodes):
  """[M, T] whether node m's residuals are not all equal. sklearn makes a
  node a leaf when its impurity (the variance of r) is at most machine
  epsilon; in float32 that is residuals that are all equal."""
  operands = []
  for m in range(num_nodes):
    member = node == m
    operands += [jnp.where(member, r, -jnp.inf), jnp.where(member, r, jnp.inf)]
  out = _reduce(operands, ['max', 'min'] * num_nodes, fold=True)
  return jnp.stack(out[0::2]) > jnp.stack(out[1::2])


def _thresholds(sorted_x, feat, last_left, first_right, split):
  """[T, M] midpoints between the last left and first right value."""
  block = sorted_x.shape[1]
  value = lambda p: sorted_x[feat, p % block, p // block]
  lo, hi = value(last_left), value(first_right)
  mid = lo / 2 + hi / 2  # sklearn: x_l / 2 + x_r / 2, x_l if that rounds up
  return jnp.where(split, jnp.where(mid >= hi, lo, mid), jnp.inf)


def _route_sorted(sorted_node, cross_rank, feat, pos, split):
  """The children of the samples at each sorted position, from their nodes
  there and each node's split ([T, M] feat, pos, split): a sample goes
  right when its rank in the split feature (`cross_rank`) is past pos. One
  contiguous slice of cross_rank per tree and node, no per-sample gather."""
  t, num_nodes = feat.shape
  rows = []
  for i in range(t):
    right = None
    for m in range(num_nodes):
      slab = jax.lax.dynamic_index_in_dim(cross_rank, feat[i, m], 0, False)
      right_m = (slab > pos[i, m]) & split[i, m]
      right = right_m if right is None else jnp.where(
          sorted_node[i] == m, right_m, right)
    rows.append(right)
  return jnp.where(sorted_node < 0, sorted_node,
                   2 * sorted_node + jnp.stack(rows).astype(jnp.int8))


def grow(r, sorted_index, valid, rank, sorted_x, cross_rank=None):
  """Grows one depth-3 regression tree per row of r.

  Args:
    r: [T, N + 1] residuals, one tree per row, with a 0 column appended.
    sorted_index: int [K, B, NB] sample at sorted position j B + i of each
      feature (N past the end).
    valid: bool [K, B, NB] whether a split may fall after that position.
    rank: int [K, N] sorted position of each sample in each feature.
    sorted_x: [K, B, NB] train codes in that layout (inf past the end).
    cross_rank: int [K, K, B, NB], the rank in feature f of the sample at
      each sorted position of feature k ([f, k, i, j]), or None: the samples'
      nodes in sorted order are then gathered from sample order per level.

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
  node = jnp.zeros((t, n + 1), jnp.int8).at[:, n].set(-1)
  sorted_node = jnp.broadcast_to(
      jnp.where(sorted_index == n, -1, 0).astype(jnp.int8), rs.shape)
  active = jnp.ones((1, t), bool)  # [M, T]: the node's parent split
  importance = jnp.zeros((t, k), jnp.float32)
  r = r[:, :n]
  feats, thresholds, stats = [], [], None
  for depth in range(MAX_DEPTH):
    if cross_rank is None and depth:
      sorted_node = to_sorted(node)
    splittable = active & _varies(r, node[:, :n], 2**depth)
    (gain, pos, feat), stats, c_end = gbt_search.search(
        rs, sorted_node, valid, splittable, stats)
    # A node of one sample, or constant on every code, has no finite gain.
    split = splittable & jnp.isfinite(gain)
    last_left, first_right = gbt_search.bracket(sorted_node, c_end, feat, pos)
    count = c_end[:, :, 0, -1]
    threshold = _thresholds(sorted_x, feat, last_left, first_right, split)
    split, pos, feat, count, threshold = (
        a.T for a in (split, pos, feat, count, threshold))  # [T, M]
    importance += jnp.einsum(
        'tm,tmk->tk', jnp.where(split, gain.T / jnp.maximum(count, 1.0), 0.0),
        jax.nn.one_hot(feat, k, dtype=jnp.float32))
    feats.append(feat)
    thresholds.append(threshold)
    sample_node = node[:, :n]
    right = ((_pick_rows(pick(sample_node, feat), rank) >
              pick(sample_node, pos)) & pick(sample_node, split))
    node = node.at[:, :n].set(2 * sample_node + right)
    active = jnp.repeat(split.T, 2, axis=0)
    if cross_rank is not None and depth + 1 < MAX_DEPTH:
      sorted_node = _route_sorted(sorted_node, cross_rank, feat, pos, split)
  return node[:, :n], feats, thresholds, importance


def descend(x, feats, thresholds):
  """[T, Nt] leaf of each sample of x [K, Nt] in each tree, by thresholds."""
  node = jnp.zeros((feats[0].shape[0], x.shape[1]), jnp.int32)
  for feat, threshold in zip(feats, thresholds):
    value = _pick_rows(pick(node, feat), x)
    node = 2 * node + (value > pick(node, threshold))
  return node


def leaf_sums(r, h, leaf):
  """([T, L] sum of r, [T, L] sum of h) over each tree's samples per leaf
  (leaf [T, N] in 0..L-1, L = 2^MAX_DEPTH), in one pass."""
  operands = []
  for l in range(2**MAX_DEPTH):
    member = leaf == l
    operands += [jnp.where(member, r, 0.0), jnp.where(member, h, 0.0)]
  sums = _reduce(operands, ['sum'] * len(operands))
  return jnp.stack(sums[0::2], axis=1), jnp.stack(sums[1::2], axis=1)

"""SAP, the Separated Attribute Predictability score (Kumar et al. 2018), as
disentanglement_lib computes it.

A score matrix S [K, F] rates how well each single code predicts each
factor; SAP is the mean over factors of the gap between the best and the
second-best code: mean_j (S_(1)j - S_(2)j).

* Discrete factors (the default): S_ij is the test accuracy of scikit-learn's
  `LinearSVC(C=0.01, class_weight='balanced')` fitted on code i alone: for
  each class c a linear model w x + b on the one code minimising

    0.5 (w^2 + b^2) + C sum_n s_n max(0, 1 - t_n (w x_n + b))^2,

  t_n = +1 for class c and -1 otherwise, and balanced weights w_k = N /
  (classes * count of class k) as liblinear applies them: s_n = w_c for the
  positives and 1 for the rest (one-vs-rest), or each sample's own w_k when
  there are only two classes (one model, class 1 positive). liblinear
  regularises the intercept (intercept_scaling 1). With more than two
  classes the prediction is the argmax over the classes' models. All K x F x
  classes problems are 2-parameter convex problems solved together in JAX
  by Newton's method: the squared hinge is piecewise quadratic, each step
  jumps to the minimiser of the quadratic on the current active set, and it
  stops when no problem's solution moves (at most 30 steps). For one code
  the active set is a threshold on x, so a step needs only sums of
  (1, x, x^2) over a range of the sorted codes: float64 prefix sums (kept as
  float32 pairs) located by binary search, O(log N) per problem and step.
  On the tested cases every accuracy equals scikit-learn 1.9's to float
  rounding. With C = 0.01 most codes separate few classes, so SAP stays
  low even for a perfect code: that is the reference behaviour.
* Continuous factors: S_ij = Cov(z_i, y_j)^2 / (Var z_i Var y_j) (ddof 1),
  0 where Var z_i <= 1e-12.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from msdr.errors import UserInputError

_NEWTON_STEPS = 30


def _split(a: np.ndarray):
  """float64 a as float32 (hi, lo) with hi + lo = a to ~float64 precision, so
  that differences of prefix sums keep their digits in float32."""
  hi = a.astype(np.float32)
  return hi, (a - hi.astype(np.float64)).astype(np.float32)


def _prefix_moments(x: np.ndarray) -> np.ndarray:
  """[..., N + 1, 3] float64 prefix sums of (1, x, x^2) along the last axis
  (each summed along x's contiguous axis: 4x faster than one cumsum of the
  stacked moments)."""
  n = x.shape[-1]
  out = np.empty(x.shape[:-1] + (n + 1, 3))
  out[..., 0, :] = 0.0
  out[..., 1:, 0] = np.arange(1, n + 1)
  np.cumsum(x, axis=-1, out=out[..., 1:, 1])
  np.cumsum(x * x, axis=-1, out=out[..., 1:, 2])
  return out


def _first_at_or_above(values, lo, hi, threshold, inclusive):
  """First position p in [lo, hi) of each sorted row segment with
  values[p] >= threshold (> threshold if inclusive), hi if none.

  values: [R, L]; lo, hi, threshold, inclusive: [R, Q].
  """
  steps = int(np.ceil(np.log2(values.shape[-1] + 1)))
  last = values.shape[-1] - 1

  def step(_, bounds):
    lo, hi = bounds
    mid = (lo + hi) // 2
    v = jnp.take_along_axis(values, jnp.minimum(mid, last), axis=-1)
    below = jnp.where(inclusive, v <= threshold, v < threshold) & (lo < hi)
    return jnp.where(below, mid + 1, lo), jnp.where(below | (lo >= hi), hi,
                                                    mid)
  return jax.lax.fori_loop(0, steps, step, (lo, hi))[0]


def _range_moments(prefix, a, e):
  """Sums of (1, x, x^2) over sorted positions [a, e): prefix = (hi, lo)
  [R, L + 1, 3], a, e: [R, Q] -> [R, Q, 3]."""
  at = lambda p, i: jnp.take_along_axis(p, i[..., None], axis=-2)
  return sum(at(p, e) - at(p, a) for p in prefix)


@functools.partial(jax.jit, static_argnames=('num_classes',))
def _svm_accuracy(sorted_all, prefix_all, sorted_by_class, prefix_by_class,
                  start, size, weight, negative_weight, num_values, x_test,
                  labels_test, num_classes, c):
  """Test accuracy [K, F] of one-code LinearSVCs.

  Every (code k, factor j, class v) problem is solved by Newton's method on
  the squared hinge's active set, which for one code is a threshold on x:
  the positives (class v) with w x < 1 - b and the negatives with
  w x > -1 - b. Their sums of (1, x, x^2) come from prefix sums over the
  sorted codes, located by binary search, so a step costs O(log N).

  Args:
    sorted_all: [K, N] each code's sorted train values; prefix_all: (hi, lo)
      [K, N + 1, 3] prefix sums of (1, x, x^2) in that order.
    sorted_by_class, prefix_by_class: [K, F, N] / [K, F, N + 1, 3], the same
      ordered by factor j's class, then by value.
    start, size: int [F, V] each class's segment of the class order.
    weight: [F, V] the positives' (balanced) weight of each problem.
    negative_weight: [F] the negatives' weight: 1 one-vs-rest, class 0's
      weight with two classes.
    num_values: int [F]; x_test [Nt, K]; labels_test int [Nt, F] (-1: unseen).
  """
  k, f, n = sorted_by_class.shape
  v = num_classes
  flat = lambda a: a.reshape((k * f,) + a.shape[2:])
  cls_values, cls_prefix = flat(sorted_by_class), tuple(
      map(flat, prefix_by_class))
  shape = (k * f, v)
  lo = jnp.broadcast_to(start[None], (k, f, v)).reshape(shape)
  hi = lo + jnp.broadcast_to(size[None], (k, f, v)).reshape(shape)
  all_values = jnp.repeat(sorted_all, f, axis=0)  # [K F, N]
  all_prefix = tuple(jnp.repeat(p, f, axis=0) for p in prefix_all)
  zero, full = jnp.zeros(shape, jnp.int32), jnp.full(shape, n, jnp.int32)
  s_pos = jnp.broadcast_to(weight[None], (k, f, v)).reshape(shape)[..., None]
  s_neg = jnp.broadcast_to(negative_weight[None, :, None],
                           (k, f, v)).reshape(shape)[..., None]

  def active_range(values, w, margin, a, e, prefix_side):
    """Range of sorted positions in [a, e) with w x < margin (prefix_side) or
    w x > margin (not prefix_side), as (first, end)."""
    threshold = margin / jnp.where(w == 0, 1.0, w)
    # w > 0 and w x < m: x < m / w, a prefix; w < 0 flips the inequality.
    prefix = (w > 0) == prefix_side
    p = _first_at_or_above(values, a, e, threshold, ~prefix)
    first, end = jnp.where(prefix, a, p), jnp.where(prefix, p, e)
    # w = 0: every sample or none, by the sign of the margin.
    everyone = jnp.where(prefix_side, margin > 0, margin < 0)
    return (jnp.where(w == 0, a, first),
            jnp.where(w == 0, jnp.where(everyone, e, a), end))

  def step(_, params):
    w, b = params
    pos = _range_moments(cls_prefix, *active_range(cls_values, w, 1.0 - b,
                                                   lo, hi, True))
    neg_all = _range_moments(all_prefix, *active_range(
        all_values, w, -1.0 - b, zero, full, False))
    neg_own = _range_moments(cls_prefix, *active_range(
        cls_values, w, -1.0 - b, lo, hi, False))
    pos, neg = s_pos * pos, s_neg * (neg_all - neg_own)
    total, signed = pos + neg, pos - neg  # sums of s a (1, x, x^2), s a t
    h_ww = 1.0 + 2.0 * c * total[..., 2]
    h_wb = 2.0 * c * total[..., 1]
    h_bb = 1.0 + 2.0 * c * total[..., 0]
    g_w, g_b = 2.0 * c * signed[..., 1], 2.0 * c * signed[..., 0]
    # The minimiser of the quadratic on the current active set.
    det = h_ww * h_bb - h_wb * h_wb
    return (h_bb * g_w - h_wb * g_b) / det, (h_ww * g_b - h_wb * g_w) / det

  # Newton on a piecewise quadratic stops moving once the active sets stop
  # changing: iterate until every problem repeats its solution.
  def not_done(carry):
    i, params, previous = carry
    return (i < _NEWTON_STEPS) & jnp.any(
        (params[0] != previous[0]) | (params[1] != previous[1]))

  def newton(carry):
    i, params, _ = carry
    return i + 1, step(i, params), params

  zeros = jnp.zeros(shape)
  _, (w, b), _ = jax.lax.while_loop(
      not_done, newton, (0, step(0, (zeros, zeros)), (zeros, zeros)))
  w, b = w.reshape(k, f, v), b.reshape(k, f, v)
  classes = jnp.arange(v)
  # Two classes: one model, class 1 positive; class 0 is its negation.
  binary = (num_values == 2)[None, :, None]
  w = jnp.where(binary, jnp.where(classes == 0, -w[..., 1:2], w), w)
  b = jnp.where(binary, jnp.where(classes == 0, -b[..., 1:2], b), b)
  decision = x_test.T[:, None, :, None] * w[:, :, None] + b[:, :, None]
  decision = jnp.where(classes < num_values[None, :, None, None], decision,
                       -jnp.inf)  # [K, F, Nt, V]
  return jnp.mean(jnp.argmax(decision, axis=-1) == labels_test.T[None],
                  axis=-1)


def _continuous_scores(codes, factors) -> np.ndarray:
  z = codes - codes.mean(axis=0)
  y = factors - factors.mean(axis=0)
  n = codes.shape[0]
  cov = z.T @ y / (n - 1)
  var_z = np.sum(z * z, axis=0) / (n - 1)
  var_y = np.sum(y * y, axis=0) / (n - 1)
  alive = var_z[:, None] > 1e-12
  denominator = np.where(alive, var_z[:, None] * var_y[None, :], 1.0)
  return np.where(alive, np.square(cov) / denominator, 0.0)


def score_matrix(codes_train, factors_train, codes_test, factors_test,
                 continuous_factors: bool = False) -> np.ndarray:
  """S [K, F] (see the module docstring)."""
  x_train = np.asarray(codes_train, np.float64)
  y_train = np.asarray(factors_train)
  if continuous_factors:
    return _continuous_scores(x_train, y_train.astype(np.float64))
  x_test, y_test = np.asarray(codes_test, np.float64), np.asarray(factors_test)
  labels_train = np.empty(y_train.shape, np.int32)
  labels_test = np.empty(y_test.shape, np.int32)
  values = []
  for j in range(y_train.shape[1]):
    classes, labels_train[:, j] = np.unique(y_train[:, j], return_inverse=True)
    if len(classes) < 2:
      raise UserInputError(f'factor {j} takes a single value in the train '
                           'set; SAP needs at least two')
    # A test value unseen in training can never be predicted right.
    index = np.searchsorted(classes, y_test[:, j])
    seen = (index < len(classes)) & (
        classes[np.minimum(index, len(classes) - 1)] == y_test[:, j])
    labels_test[:, j] = np.where(seen, index, -1)
    values.append(len(classes))
  num_classes = max(values)
  n, num_factors = y_train.shape
  counts = np.zeros((num_factors, num_classes), np.int64)
  for j in range(num_factors):
    counts[j, :values[j]] = np.bincount(labels_train[:, j],
                                        minlength=values[j])
  # Balanced weights n / (classes * count); liblinear's one-vs-rest weighs
  # the positives by their class weight and the rest by 1; with two classes
  # each side has its own weight (one model, class 1 positive).
  present = counts > 0
  weight = np.where(present, n / (np.asarray(values)[:, None] *
                                  np.maximum(counts, 1)), 0.0)
  negative_weight = np.where(np.asarray(values) == 2, weight[:, 0], 1.0)
  start = np.cumsum(counts, axis=1) - counts
  order = np.argsort(x_train, axis=0, kind='stable')  # [N, K]
  sorted_all = np.take_along_axis(x_train, order, axis=0).T  # [K, N]
  # Per factor: the value order, stably re-sorted by class.
  small = np.int16 if num_classes < 2**15 else np.int32  # a faster sort
  by_class = np.stack([
      np.take_along_axis(order, np.argsort(
          labels_train[order, j].astype(small), axis=0, kind='stable'),
          axis=0)
      for j in range(num_factors)], axis=1)  # [N, F, K]
  sorted_by_class = np.transpose(x_train[by_class, np.arange(x_train.shape[
      1])], (2, 1, 0))  # [K, F, N]
  f32 = lambda a: np.asarray(a, np.float32)
  i32 = lambda a: np.asarray(a, np.int32)
  return np.asarray(_svm_accuracy(
      f32(sorted_all), _split(_prefix_moments(sorted_all)),
      f32(sorted_by_class), _split(_prefix_moments(sorted_by_class)),
      i32(start), i32(counts), f32(weight), f32(negative_weight), i32(values),
      f32(x_test), labels_test, num_classes, 0.01), np.float64)


def sap(codes_train, factors_train, codes_test, factors_test,
        continuous_factors: bool = False) -> float:
  """The SAP score: mean over factors of the top-two gap of `score_matrix`.

  Args:
    codes_train, codes_test: float [N, K], K >= 2.
    factors_train, factors_test: int [N, F].
    continuous_factors: score by squared correlation instead of a
      classifier (then the test set is unused).
  """
  for name, codes in (('codes_train', codes_train), ('codes_test', codes_test)):
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] < 2:
      raise UserInputError(f'{name} must be [N, K >= 2]; got {codes.shape}')
    if np.isnan(codes).any():
      raise UserInputError(f'{name} contain {int(np.isnan(codes).sum())} NaN '
                           'entries')
  if np.shape(codes_train)[0] != np.shape(factors_train)[0] or np.shape(
      codes_test)[0] != np.shape(factors_test)[0]:
    raise UserInputError('codes and factors must have the same number of rows')
  scores = np.sort(score_matrix(codes_train, factors_train, codes_test,
                                factors_test, continuous_factors), axis=0)
  return float(np.mean(scores[-1] - scores[-2]))

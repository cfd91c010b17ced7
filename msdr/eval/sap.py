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
  classes the prediction is the argmax over the classes' models. All K x F x classes problems are 2-parameter convex
  problems solved together in JAX by Newton's method (the squared hinge is
  piecewise quadratic, so Newton on the current active set converges in a
  few steps) to the exact minimisers; on the tested cases every accuracy
  equals scikit-learn 1.9's to float rounding. With C = 0.01 most codes separate few classes, so SAP stays
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


def _solve(x, t, s, c):
  """argmin_{w, b} 0.5 (w^2 + b^2) + c sum s max(0, 1 - t (w x + b))^2."""
  def step(_, params):
    w, b = params
    residual = 1.0 - t * (w * x + b)
    active = (residual > 0).astype(x.dtype) * s
    r = residual * active * t
    grad_w = w - 2 * c * jnp.sum(r * x)
    grad_b = b - 2 * c * jnp.sum(r)
    h_ww = 1 + 2 * c * jnp.sum(active * x * x)
    h_wb = 2 * c * jnp.sum(active * x)
    h_bb = 1 + 2 * c * jnp.sum(active)
    det = h_ww * h_bb - h_wb * h_wb
    return (w - (h_bb * grad_w - h_wb * grad_b) / det,
            b - (h_ww * grad_b - h_wb * grad_w) / det)
  zero = jnp.zeros((), x.dtype)
  return jax.lax.fori_loop(0, _NEWTON_STEPS, step, (zero, zero))


@functools.partial(jax.jit, static_argnames=('num_classes',))
def _svm_accuracy(x_train, labels_train, x_test, labels_test, counts,
                  num_classes, c):
  """Test accuracy [K, F] of one-code LinearSVCs.

  x_*: [N, K] codes; labels_*: [N, F] in 0..V_j - 1; counts: [F, V] train
  counts per class (0 for padding classes beyond V_j).
  """
  n = x_train.shape[0]
  present = counts > 0  # [F, V]
  num_values = present.sum(axis=1)  # [F]
  weight_of_class = jnp.where(
      present, n / (num_values[:, None] * jnp.maximum(counts, 1)), 0.0)
  classes = jnp.arange(num_classes)

  def per_code_factor(x, x_te, y, y_te, weights, v):
    own = weights[y]

    def per_class(cls):
      positive = y == cls
      # liblinear's one-vs-rest weighs the positives by their class weight
      # and the rest by 1; with two classes each side has its own weight.
      s = jnp.where(positive | (v == 2), own, 1.0)
      return _solve(x, jnp.where(positive, 1.0, -1.0), s, c)

    w, b = jax.vmap(per_class)(classes)  # [V]
    # Two classes: one model, class 1 positive; class 0 is its negation.
    w = jnp.where(v == 2, jnp.where(classes == 0, -w[1], w), w)
    b = jnp.where(v == 2, jnp.where(classes == 0, -b[1], b), b)
    decision = x_te[:, None] * w + b
    decision = jnp.where(classes < v, decision, -jnp.inf)
    return jnp.mean(jnp.argmax(decision, axis=1) == y_te)

  over_factors = jax.vmap(per_code_factor,
                          in_axes=(None, None, 1, 1, 0, 0))
  over_codes = jax.vmap(over_factors, in_axes=(1, 1, None, None, None, None))
  return over_codes(x_train, x_test, labels_train, labels_test,
                    weight_of_class, num_values)


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
  counts = np.zeros((y_train.shape[1], num_classes), np.float32)
  for j in range(y_train.shape[1]):
    counts[j, :values[j]] = np.bincount(labels_train[:, j],
                                        minlength=values[j])
  return np.asarray(_svm_accuracy(
      jnp.asarray(x_train, jnp.float32), jnp.asarray(labels_train),
      jnp.asarray(x_test, jnp.float32), jnp.asarray(labels_test),
      jnp.asarray(counts), num_classes, 0.01), np.float64)


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

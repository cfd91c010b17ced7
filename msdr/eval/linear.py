"""Linear classifiers for the metrics, in JAX.

`fit_logistic_regression` is scikit-learn's default `LogisticRegression()`:
multinomial (softmax) regression with an intercept, L2 penalty C = 1, i.e.
it minimises

  0.5 * ||W||^2 + C * sum_i -log softmax(x_i W + b)[y_i]

(the intercept b is not penalised), here by L-BFGS (optax) with a zoom line
search, on scikit-learn's scaling of that objective (divided by C N) and
with the stopping rules of the scipy L-BFGS-B it calls: the largest
gradient entry at most `tol`, or a relative decrease of the objective at
most 64 float64 eps (in float32: no decrease at all), or `max_iter`
iterations. At the benchmark size this takes 21-100 iterations per factor
where scikit-learn takes 21-96.
Classes are the sorted unique labels of `y`, as in scikit-learn; a single
class predicts itself.
"""

from __future__ import annotations

from concurrent import futures
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from msdr import xla_utils


@dataclasses.dataclass(frozen=True)
class LinearClassifier:
  weights: np.ndarray  # [K, classes]
  bias: np.ndarray  # [classes]
  classes: np.ndarray  # [classes], the label of each column

  def decision_function(self, x) -> np.ndarray:
    return np.asarray(x, np.float64) @ self.weights + self.bias

  def predict(self, x) -> np.ndarray:
    return self.classes[np.argmax(self.decision_function(x), axis=1)]

  def accuracy(self, x, y) -> float:
    return float(np.mean(self.predict(x) == np.asarray(y)))


# scipy's L-BFGS-B as scikit-learn calls it stops once the objective's
# relative decrease is at most this (scikit-learn: ftol = 64 * float64 eps).
_FTOL = 64 * float(np.finfo(np.float64).eps)


# Fewer classes than this are laid out [classes, N] in the objective, so that
# the softmax's passes run along N: XLA's CPU code vectorises a [N, C] pass
# over C, which is short (the BetaVAE score's fit, 5 classes: 61 -> 19 ms;
# at 32 and 40 classes [N, C] is as fast or faster).
_CLASS_MAJOR_BELOW = 16


def _log_loss_data(x, labels, num_classes):
  """(features, labels) in the layout `_mean_log_loss` reads, made once."""
  if num_classes < _CLASS_MAJOR_BELOW:
    return x.T, labels == jnp.arange(num_classes)[:, None]
  return x, labels[:, None]


def _mean_log_loss(w, b, data):
  """Mean -log softmax(x w + b)[label] (log-sum-exp written out: 1.3-2x
  faster on the CPU than jax.nn.log_softmax and its gather)."""
  x, labels = data
  if labels.dtype == jnp.bool_:  # [C, N] one-hot; x transposed
    z, axis = jnp.dot(w.T, x) + b[:, None], 0
    picked = jnp.sum(jnp.where(labels, z, 0.0), axis=0)
  else:
    z, axis = x @ w + b, 1
    picked = jnp.take_along_axis(z, labels, axis=1)[:, 0]
  top = jax.lax.stop_gradient(z.max(axis=axis, keepdims=True))
  log_total = jnp.log(jnp.exp(z - top).sum(axis=axis))
  return jnp.mean(jnp.squeeze(top, axis) + log_total - picked)


@functools.partial(jax.jit, static_argnames=('num_classes', 'max_iter'))
def _fit_softmax(x, labels, c, num_classes, max_iter, tol):
  n, k = x.shape
  data = _log_loss_data(x, labels, num_classes)

  def objective(params):  # scikit-learn's scaling: the mean loss
    w, b = params
    return ((0.5 / (c * n)) * jnp.sum(jnp.square(w)) +
            _mean_log_loss(w, b, data))

  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(objective)
  params = (jnp.zeros((k, num_classes), x.dtype),
            jnp.zeros((num_classes,), x.dtype))

  def step(carry):
    params, state, _, _, value = carry
    new_value, grad = value_and_grad(params, state=state)
    updates, state = solver.update(grad, state, params, value=new_value,
                                   grad=grad, value_fn=objective)
    grad_max = jnp.max(jnp.stack([jnp.max(jnp.abs(g))
                                  for g in jax.tree.leaves(grad)]))
    return (optax.apply_updates(params, updates), state, grad_max, value,
            new_value)

  def cond(carry):
    _, state, grad_max, previous, value = carry
    decrease = (previous - value) > _FTOL * jnp.maximum(
        jnp.maximum(jnp.abs(previous), jnp.abs(value)), 1.0)
    return ((optax.tree.get(state, 'count') < max_iter) & (grad_max > tol) &
            (decrease | jnp.isinf(previous)))

  inf = jnp.asarray(jnp.inf, x.dtype)
  init = (params, solver.init(params), inf, inf, inf)
  return jax.lax.while_loop(cond, step, init)[0]


def fit_logistic_regression(x, y, c: float = 1.0, max_iter: int = 100,
                            tol: float = 1e-4) -> LinearClassifier:
  """scikit-learn's default LogisticRegression, fitted on x [N, K], y [N].

  Args:
    x: features.
    y: integer (or any sortable) labels.
    c: inverse L2 strength (scikit-learn's C).
    max_iter: L-BFGS iterations at most (scikit-learn's default 100).
    tol: stop once no gradient entry (of the scaled objective) exceeds
      this (scikit-learn's tol).
  """
  x = np.asarray(x, np.float32)
  classes, labels = np.unique(np.asarray(y), return_inverse=True)
  if len(classes) == 1:
    return LinearClassifier(np.zeros((x.shape[1], 1)), np.zeros(1), classes)
  w, b = _fit_softmax(jnp.asarray(x), jnp.asarray(labels, jnp.int32),
                      float(c), len(classes), int(max_iter), float(tol))
  return LinearClassifier(np.asarray(w, np.float64), np.asarray(b, np.float64),
                          classes)


def fit_logistic_regressions(x, ys, **kwargs) -> list[LinearClassifier]:
  """`fit_logistic_regression` of x [N, K] to each label row of ys [F, N],
  fitted concurrently, one thread per core (each fit's small products use
  the cores at a fraction; the five fits of explicitness at the benchmark
  size take 0.18 s one after the other, 0.11 s on two cores)."""
  ys = list(ys)
  if len(ys) <= 1:
    return [fit_logistic_regression(x, y, **kwargs) for y in ys]
  with futures.ThreadPoolExecutor(min(len(ys), xla_utils.cpu_cores())) as pool:
    return list(pool.map(
        lambda y: fit_logistic_regression(x, y, **kwargs), ys))

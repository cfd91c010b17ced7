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

The JAX backend (`msdr.eval.gbt`) grows these trees exactly, in vectorized
JAX, all classes and factors together; its docstring gives the algorithm,
the few float32 deviations and the speed.

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

import numpy as np

from msdr.errors import UserInputError
from msdr.eval import checks
from msdr.eval import gbt
from msdr.eval.gbt import NUM_ROUNDS


# ---------------------------------------------------------------- checking


def _check_inputs(codes_train, factors_train, codes_test, factors_test):
  codes_train = checks.check_codes(codes_train, 'codes_train')
  codes_test = checks.check_codes(codes_test, 'codes_test')
  factors_train = checks.check_labels(factors_train, 'factors_train')
  factors_test = checks.check_labels(factors_test, 'factors_test')
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
  num_codes, num_factors = codes_train.shape[1], factors_train.shape[1]
  # A single-valued factor (sklearn cannot fit one; see the module doc):
  # importance 0, that value predicted everywhere.
  importance = np.zeros((num_codes, num_factors))
  train_accuracy = np.ones(num_factors)
  test_accuracy = np.mean(factors_test == factors_train[0], axis=0)
  fit = [j for j in range(num_factors)
         if np.any(factors_train[:, j] != factors_train[0, j])]
  if fit:
    backend_fn = _sklearn_importance if backend == 'sklearn' else (
        gbt.importance)
    (importance[:, fit], train_accuracy[fit],
     test_accuracy[fit]) = backend_fn(codes_train, factors_train[:, fit],
                                      codes_test, factors_test[:, fit],
                                      int(num_rounds))
  return importance, train_accuracy, test_accuracy


def _sklearn_importance(codes_train, factors_train, codes_test, factors_test,
                        num_rounds):
  """`gbt.importance` by scikit-learn itself (factors of 2+ values)."""
  from sklearn import ensemble  # pylint: disable=g-import-not-at-top
  importance, train_accuracy, test_accuracy = [], [], []
  for j in range(factors_train.shape[1]):
    model = ensemble.GradientBoostingClassifier(n_estimators=num_rounds)
    model.fit(codes_train, factors_train[:, j])
    importance.append(np.abs(model.feature_importances_))
    train_accuracy.append(np.mean(model.predict(codes_train) ==
                                  factors_train[:, j]))
    test_accuracy.append(np.mean(model.predict(codes_test) ==
                                 factors_test[:, j]))
  return (np.stack(importance, axis=1), np.array(train_accuracy),
          np.array(test_accuracy))

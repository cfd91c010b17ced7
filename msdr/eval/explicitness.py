"""Explicitness (Ridgeway & Mozer 2018) as disentanglement_lib computes it.

For each factor: z-score every code with the train set's mean and std
(ddof 0; a constant code keeps std 1 instead of dividing by 0), fit
scikit-learn's default logistic regression (`msdr.eval.linear`) from all
codes to the factor, and score its predicted class probabilities by the
macro-averaged one-vs-rest ROC-AUC, on the train set and on the test set.
Explicitness is the mean over factors. The AUC of a class is averaged over
the classes that occur in the scored set alongside other classes (a class
absent from it, or a set with one class, has no AUC); ties share ranks.
"""

from __future__ import annotations

import numpy as np

from msdr.errors import UserInputError
from msdr.eval import linear


def roc_auc_macro(labels: np.ndarray, scores: np.ndarray,
                  classes: np.ndarray) -> float:
  """Macro one-vs-rest ROC-AUC of `scores` [N, C] (column c for classes[c]).

  A positive's rank among all N scores of its column is the average of the
  ranks its ties share: (#below + #at-or-below + 1) / 2, from one sort of
  the contiguous column (an argsort along axis 0 of [N, C] is 5x slower).
  """
  columns = np.ascontiguousarray(np.asarray(scores).T)
  ordered = np.sort(columns, axis=1)
  aucs = []
  for column, label in enumerate(classes):
    positive = labels == label
    n_pos = int(positive.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
      continue
    values = columns[column, positive]
    below = np.searchsorted(ordered[column], values, side='left')
    at_or_below = np.searchsorted(ordered[column], values, side='right')
    rank_sum = (below.sum() + at_or_below.sum() + n_pos) / 2.0
    aucs.append((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
  if not aucs:
    raise UserInputError('explicitness needs at least two factor values in '
                         'each scored set')
  return float(np.mean(aucs))


def _softmax(z: np.ndarray) -> np.ndarray:
  z = z - z.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def explicitness(codes_train, factors_train, codes_test,
                 factors_test) -> dict:
  """Mean over factors of the train and test macro ROC-AUC.

  Args:
    codes_train, codes_test: float [N, K].
    factors_train, factors_test: int [N, F].

  Returns:
    dict with 'explicitness_train' and 'explicitness_test'.
  """
  x_train = np.asarray(codes_train, np.float64)
  x_test = np.asarray(codes_test, np.float64)
  mean, std = x_train.mean(axis=0), x_train.std(axis=0)
  std = np.where(std > 0, std, 1.0)
  x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
  y_train, y_test = np.asarray(factors_train), np.asarray(factors_test)
  train, test = [], []
  models = linear.fit_logistic_regressions(x_train, y_train.T)
  for j, model in enumerate(models):
    for x, y, out in ((x_train, y_train, train), (x_test, y_test, test)):
      proba = _softmax(model.decision_function(x))
      out.append(roc_auc_macro(y[:, j], proba, model.classes))
  return {'explicitness_train': float(np.mean(train)),
          'explicitness_test': float(np.mean(test))}

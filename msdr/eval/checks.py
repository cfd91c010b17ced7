"""Input checks shared by the disentanglement metrics: a clear
`UserInputError` for a bad array instead of a shape error deep in JAX."""

from __future__ import annotations

import numpy as np

from msdr.errors import UserInputError


def check_codes(codes, name: str = 'codes') -> np.ndarray:
  """A numeric [N, K] array of finite values, as float32."""
  codes = np.asarray(codes)
  if codes.ndim != 2 or not (np.issubdtype(codes.dtype, np.floating) or
                             np.issubdtype(codes.dtype, np.integer)):
    raise UserInputError(f'{name} must be a numeric [N, K] array; got shape '
                         f'{codes.shape} and dtype {codes.dtype}')
  codes = codes.astype(np.float32)
  num_nan = int(np.isnan(codes).sum())
  if num_nan:
    raise UserInputError(f'{name} contain {num_nan} NaN entries')
  num_inf = int(np.isinf(codes).sum())
  if num_inf:
    raise UserInputError(f'{name} contain {num_inf} infinite entries')
  return codes


def check_labels(labels, name: str) -> np.ndarray:
  """An integer (or bool) [N, F] array, as int64."""
  labels = np.asarray(labels)
  if labels.ndim != 2 or not (np.issubdtype(labels.dtype, np.integer) or
                              labels.dtype == np.bool_):
    raise UserInputError(f'{name} must be an integer [N, F] array; got shape '
                         f'{labels.shape} and dtype {labels.dtype}')
  return labels.astype(np.int64)

"""Interventional disentanglement metrics: they sample factors, fix one,
render observations and look at how the representation moves.

`dataset` is any object with `num_factors`, `sample_factors(key, n) -> int
[n, F]` and `observations_from_factors(factors, key) -> [n, ...]` (every
`msdr.data` dataset); `representation_fn` maps observations [n, ...] to codes
[n, K] (for a VAE: the posterior means). Observations are rendered and
encoded `chunk` images at a time, so image memory stays bounded whatever
`num_train` is (the factors, a few numbers per observation, are drawn
whole: about 40 MB at the default sizes); each chunk's codes are reduced to
per-point summaries (batch variances, mean absolute differences) where they
are computed, in float32, and only those come back. When `dataset` and
`representation_fn` trace, all the chunks of a call are one jitted loop
(one dispatch, not one per chunk: at the benchmark's sizes the BetaVAE
score renders 468 chunks), else they run eagerly, dispatched ahead of the
results they wait for, two chunks at most.

FactorVAE score (Kim & Mnih 2018, as disentanglement_lib computes it):
  1. global variances: Var (ddof 1) of each code over `num_variance_estimate`
     random observations; dimensions with std < `prune_threshold` are pruned;
  2. a training point: draw a factor k uniformly, draw `batch_size` factor
     vectors, set their factor k to the first one's, encode; the vote is
     (k, argmin over active dims of local variance / global variance);
  3. the classifier is the majority vote: each active dim predicts the factor
     that voted for it most (ties to the lowest factor index);
  4. accuracy = votes agreeing with the classifier / all votes, on
     `num_train` training points and `num_eval` fresh points.
If no dimension is active, both accuracies are 0.

BetaVAE score (Higgins et al. 2017, as disentanglement_lib computes it): a
training point draws a factor k uniformly and two batches of `batch_size`
factor vectors that agree on factor k; its features are the mean over the
batch of |code(x1) - code(x2)| and its label k. scikit-learn's default
logistic regression (`msdr.eval.linear`) is fitted on `num_train` points;
accuracies on them and on `num_eval` fresh points.
"""

from __future__ import annotations

from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from msdr.errors import UserInputError
from msdr.eval import linear

RepresentationFn = Callable[[jax.Array], jax.Array]


def _codes(codes, batch_size):
  del batch_size
  return codes


def _batch_variances(codes, batch_size):
  """Var (ddof 1) of each code over each batch of rows: [points, K]."""
  return jnp.var(codes.reshape(-1, batch_size, codes.shape[-1]), axis=1,
                 ddof=1)


def _batch_abs_differences(codes, batch_size):
  """Rows are the chunk's x1 batches then its x2 batches: the mean over each
  batch of |code(x1) - code(x2)|, [points, K]."""
  c1, c2 = jnp.split(codes, 2)
  return jnp.abs(c1 - c2).reshape(-1, batch_size, codes.shape[-1]).mean(
      axis=1)


def _encode(dataset, representation_fn, summary, batch_size, factors, key,
            index):
  """(summary of the codes of `factors` (chunk `index`'s key), number of
  non-finite codes)."""
  key = jax.random.fold_in(key, index)
  codes = jnp.asarray(representation_fn(dataset.observations_from_factors(
      jnp.asarray(factors), key)), jnp.float32)
  if codes.ndim != 2 or codes.shape[0] != factors.shape[0]:
    raise UserInputError('representation_fn must map n observations to '
                         f'codes [n, K]; got {codes.shape}')
  return summary(codes, batch_size), jnp.sum(~jnp.isfinite(codes))


def _encode_chunks(dataset, representation_fn, summary, batch_size, chunks,
                   key):
  """`_encode` of every chunk of factor rows chunks [C, rows, F], one chunk
  at a time (lax.map): (summaries [C, points, K], non-finite code count)."""
  def encode(args):
    factors, index = args
    return _encode(dataset, representation_fn, summary, batch_size, factors,
                   key, index)
  values, bad = jax.lax.map(encode, (chunks, jnp.arange(chunks.shape[0])))
  return values, bad.sum()


_encode_chunks_jitted = jax.jit(_encode_chunks, static_argnums=(0, 1, 2, 3))


def _chunk_rows(factors: np.ndarray, rows: int) -> np.ndarray:
  """[C, rows, F]: consecutive chunks of `rows` factor rows, the last padded
  with zeros (valid indices; their summaries are dropped)."""
  num_chunks = -(-factors.shape[0] // rows)
  padded = np.zeros((num_chunks * rows, factors.shape[1]), factors.dtype)
  padded[:factors.shape[0]] = factors
  return padded.reshape(num_chunks, rows, factors.shape[1])


_IN_FLIGHT = 2  # eager chunks dispatched ahead of the one being waited for


def _summaries(dataset, representation_fn, chunks: np.ndarray,
               key: jax.Array, count: int, summary=_codes,
               batch_size: int = 1) -> np.ndarray:
  """float64 [count, K]: the first `count` per-point summaries
  (`_batch_variances`, ...) of the codes of each chunk of factor rows
  chunks [C, rows, F], chunk i rendered with key fold_in(key, i);
  non-finite codes are an error.

  Rendering, encoding and summary run as one jitted program over all the
  chunks, one chunk at a time (one chunk of images in memory, and one
  dispatch instead of one per chunk), when the dataset and
  representation_fn trace (every msdr dataset and model does); otherwise
  (a NumPy representation_fn, an unhashable dataset) eagerly, chunk by
  chunk, dispatched at most `_IN_FLIGHT` ahead of the results.
  """
  try:
    values, bad = jax.device_get(_encode_chunks_jitted(
        dataset, representation_fn, summary, batch_size, jnp.asarray(chunks),
        key))
  except TypeError as e:  # tracer conversions, unhashable statics
    logging.info('interventional metric: encoding eagerly (%s)',
                 str(e).splitlines()[0])
    out = []
    for i, factors in enumerate(chunks):
      out.append(_encode(dataset, representation_fn, summary, batch_size,
                         factors, key, i))
      if i >= _IN_FLIGHT:
        out[i - _IN_FLIGHT] = jax.device_get(out[i - _IN_FLIGHT])
    out = jax.device_get(out)
    values = np.stack([np.asarray(v) for v, _ in out])
    bad = sum(int(b) for _, b in out)
  if bad:
    raise UserInputError(f'representation_fn returned {bad} non-finite codes')
  values = np.asarray(values, np.float64)
  return values.reshape(-1, values.shape[-1])[:count]


def global_variances(dataset, representation_fn: RepresentationFn,
                     key: jax.Array, num: int, chunk: int = 1024
                     ) -> np.ndarray:
  """Var (ddof 1) of every code over `num` random observations, [K]."""
  k_factors, k_obs = jax.random.split(key)
  factors = np.asarray(dataset.sample_factors(k_factors, num))
  codes = _summaries(dataset, representation_fn,
                     _chunk_rows(factors, min(chunk, num)), k_obs, num)
  return np.var(codes, axis=0, ddof=1)


def _fixed_factor_batches(dataset, key: jax.Array, points: int,
                          batch_size: int):
  """(factor index [points], factors [points * batch_size, F]) where each
  group of `batch_size` rows shares its factor k with the group's first row."""
  k_index, k_factors = jax.random.split(key)
  index = np.asarray(jax.random.randint(k_index, (points,), 0,
                                        dataset.num_factors))
  factors = np.array(dataset.sample_factors(k_factors, points * batch_size))
  factors = factors.reshape(points, batch_size, -1)
  group = np.arange(points)
  factors[group, :, index] = factors[group, 0, index][:, None]
  return index, factors.reshape(points * batch_size, -1)


def _votes(dataset, representation_fn, key, num_points, batch_size,
           variances, active, chunk) -> np.ndarray:
  """votes[k, d]: training points of factor k whose argmin was active dim d."""
  k_batch, k_obs = jax.random.split(key)
  index, factors = _fixed_factor_batches(dataset, k_batch, num_points,
                                         batch_size)
  per_chunk = min(max(1, chunk // batch_size), num_points)
  local = _summaries(dataset, representation_fn,
                     _chunk_rows(factors, per_chunk * batch_size), k_obs,
                     num_points, _batch_variances, batch_size)[:, active]
  argmin = np.argmin(local / variances[active], axis=1)
  votes = np.zeros((dataset.num_factors, int(active.sum())), np.int64)
  np.add.at(votes, (index, argmin), 1)
  return votes


def _check_counts(**counts) -> None:
  for name, value in counts.items():
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise UserInputError(f'{name} must be a positive int; got {value!r}')


def factor_vae_score(dataset, representation_fn: RepresentationFn,
                     key: jax.Array, batch_size: int = 64,
                     num_train: int = 10000, num_eval: int = 5000,
                     num_variance_estimate: int = 10000,
                     prune_threshold: float = 0.05,
                     chunk: int = 4096) -> dict:
  """The FactorVAE disentanglement score (see the module docstring).

  Args:
    dataset: a ground-truth dataset (see the module docstring).
    representation_fn: observations [n, ...] -> codes [n, K].
    key: a JAX PRNG key; the result is a function of it.
    batch_size: observations per training point (at least 2).
    num_train: training points of the majority-vote classifier.
    num_eval: evaluation points.
    num_variance_estimate: observations for the global variances.
    prune_threshold: dims whose global std is below it are inactive.
    chunk: images rendered and encoded at a time.

  Returns:
    dict with 'train_accuracy', 'eval_accuracy' and 'num_active_dims'.
  """
  _check_counts(batch_size=batch_size, num_train=num_train,
                num_eval=num_eval,
                num_variance_estimate=num_variance_estimate, chunk=chunk)
  if batch_size < 2 or num_variance_estimate < 2:
    raise UserInputError('batch_size and num_variance_estimate must be at '
                         'least 2 (variances use ddof 1)')
  k_var, k_train, k_eval = jax.random.split(key, 3)
  variances = global_variances(dataset, representation_fn, k_var,
                               num_variance_estimate, chunk)
  active = np.sqrt(variances) >= prune_threshold
  if not active.any():
    return {'train_accuracy': 0.0, 'eval_accuracy': 0.0,
            'num_active_dims': 0}
  args = (batch_size, variances, active, chunk)
  train_votes = _votes(dataset, representation_fn, k_train, num_train, *args)
  classifier = np.argmax(train_votes, axis=0)
  columns = np.arange(train_votes.shape[1])
  eval_votes = _votes(dataset, representation_fn, k_eval, num_eval, *args)
  return {
      'train_accuracy': float(train_votes[classifier, columns].sum()
                              / train_votes.sum()),
      'eval_accuracy': float(eval_votes[classifier, columns].sum()
                             / eval_votes.sum()),
      'num_active_dims': int(active.sum()),
  }


def _beta_vae_points(dataset, representation_fn, key, num_points, batch_size,
                     chunk):
  """(features [num_points, K], labels [num_points])."""
  k_index, k_f1, k_f2, k_obs = jax.random.split(key, 4)
  index = np.asarray(jax.random.randint(k_index, (num_points,), 0,
                                        dataset.num_factors))
  n = num_points * batch_size
  f1 = np.asarray(dataset.sample_factors(k_f1, n))
  f2 = np.asarray(dataset.sample_factors(k_f2, n))
  shared = np.repeat(np.arange(dataset.num_factors) == index[:, None],
                     batch_size, axis=0)
  f2 = np.where(shared, f1, f2)
  # Chunks of whole points, each rendering its x1 then its x2 batches.
  rows = min(max(1, chunk // (2 * batch_size)), num_points) * batch_size
  chunks = np.concatenate([_chunk_rows(f1, rows), _chunk_rows(f2, rows)],
                          axis=1)
  features = _summaries(dataset, representation_fn, chunks, k_obs,
                        num_points, _batch_abs_differences, batch_size)
  return features, index


def beta_vae_score(dataset, representation_fn: RepresentationFn,
                   key: jax.Array, batch_size: int = 64,
                   num_train: int = 10000, num_eval: int = 5000,
                   chunk: int = 4096) -> dict:
  """The BetaVAE disentanglement score (see the module docstring).

  Returns:
    dict with 'train_accuracy' and 'eval_accuracy'.
  """
  _check_counts(batch_size=batch_size, num_train=num_train,
                num_eval=num_eval, chunk=chunk)
  k_train, k_eval = jax.random.split(key)
  x_train, y_train = _beta_vae_points(dataset, representation_fn, k_train,
                                      num_train, batch_size, chunk)
  x_eval, y_eval = _beta_vae_points(dataset, representation_fn, k_eval,
                                    num_eval, batch_size, chunk)
  model = linear.fit_logistic_regression(x_train, y_train)
  return {'train_accuracy': model.accuracy(x_train, y_train),
          'eval_accuracy': model.accuracy(x_eval, y_eval)}

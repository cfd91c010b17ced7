"""Time of each disentanglement metric on N = 10,000 train / 5,000 test codes.

  python benchmarks/metrics.py [--num_train=10000] [--num_test=5000]
      [--repeats=3] [--sklearn_dci]

Codes are K = 10 noisy linear mixtures of F = 5 factors (sizes 3, 6, 40, 32,
32 as dSprites). The interventional scores (FactorVAE, BetaVAE) use their
default sizes over a synthetic dataset whose observations are the factors
themselves, so the metric is timed, not a renderer or an encoder. Each metric
is timed on its first call (with XLA compilation), then on --repeats warm
calls (default 3), of which the fastest is reported: other jobs on a shared
machine only add time (every warm time is in the JSON).
DCI runs on the JAX boosted trees (the evaluator's default); with
--sklearn_dci its scikit-learn reference backend is timed too (one call,
outside the suite total) for the speed ratio and the score difference.
Prints a table and writes benchmarks/results/metrics-<platform>.json.
"""

from __future__ import annotations

import os
import platform
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import results_io  # benchmarks/results_io.py

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from msdr.data import base  # pylint: disable=g-import-not-at-top
from msdr.eval import disentanglement as dm  # pylint: disable=g-import-not-at-top

_NUM_TRAIN = flags.DEFINE_integer('num_train', 10_000, 'Train codes.')
_NUM_TEST = flags.DEFINE_integer('num_test', 5_000, 'Test codes.')
_OUT = flags.DEFINE_string('out', None, 'JSON path (default: results/).')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Warm calls per metric.')
_SKLEARN_DCI = flags.DEFINE_bool(
    'sklearn_dci', False, 'Also time DCI on the scikit-learn backend.')

SIZES = (3, 6, 40, 32, 32)
K = 10


class FactorsAsObservations:
  """A ground-truth 'dataset' whose observations are its factors."""
  factor_sizes = SIZES
  num_factors = len(SIZES)

  def sample_factors(self, key, n):  # as every msdr dataset samples them
    return base.uniform_indices(key, n, SIZES)

  def observations_from_factors(self, factors, key):
    del key
    return jnp.asarray(factors, jnp.float32)


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  n = _NUM_TRAIN.value + _NUM_TEST.value
  factors = np.stack([rng.integers(s, size=n) for s in SIZES], axis=1)
  mixing = rng.normal(size=(len(SIZES), K))
  codes = factors / np.array(SIZES) @ mixing + 0.1 * rng.normal(size=(n, K))
  tr, te = slice(0, _NUM_TRAIN.value), slice(_NUM_TRAIN.value, n)
  projection = jnp.asarray(rng.normal(size=(len(SIZES), K)), jnp.float32)
  representation = jax.jit(lambda x: x / jnp.asarray(SIZES) @ projection)
  dataset = FactorsAsObservations()
  key = jax.random.key(0)
  metrics = {
      'mig': lambda: dm.mig(codes[tr], factors[tr]),
      'dci': lambda: dm.dci(codes[tr], factors[tr], codes[te], factors[te]),
      'sap': lambda: dm.sap(codes[tr], factors[tr], codes[te], factors[te]),
      'modularity_explicitness': lambda: dm.modularity_explicitness(
          codes[tr], factors[tr], codes[te], factors[te]),
      'irs': lambda: dm.irs(codes[tr], factors[tr]),
      'factor_vae_score': lambda: dm.factor_vae_score(
          dataset, representation, key),
      'beta_vae_score': lambda: dm.beta_vae_score(dataset, representation,
                                                  key),
  }
  rows = []
  for name, fn in metrics.items():
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    warm = []
    for _ in range(max(1, _REPEATS.value)):
      start = time.perf_counter()
      value = fn()
      warm.append(time.perf_counter() - start)
    rows.append({'metric': name, 'first_s': first, 'warm_s': min(warm),
                 'warm_all_s': warm, 'value': value})
  total_first = sum(r['first_s'] for r in rows)
  total_warm = sum(r['warm_s'] for r in rows)
  reference = None
  if _SKLEARN_DCI.value:
    start = time.perf_counter()
    value = dm.dci(codes[tr], factors[tr], codes[te], factors[te],
                   backend='sklearn')
    reference = {'metric': 'dci (scikit-learn backend)',
                 'seconds': time.perf_counter() - start, 'value': value}
  print('| metric | first call s (compile included) | warm s (fastest of '
        f'{max(1, _REPEATS.value)}) |')
  print('|---|---:|---:|')
  for r in rows:
    print(f"| {r['metric']} | {r['first_s']:.2f} | {r['warm_s']:.3f} |")
  print(f'| all of the above | {total_first:.2f} | {total_warm:.3f} |')
  if reference is not None:
    print(f"| {reference['metric']} | {reference['seconds']:.2f} | - |")
    jax_dci = next(r['value'] for r in rows if r['metric'] == 'dci')
    gap = max(abs(jax_dci[k] - reference['value'][k]) for k in jax_dci)
    print(f'largest |JAX - scikit-learn| over the DCI scores: {gap:.4f}')
    reference['max_abs_difference'] = gap
  device = jax.devices()[0]
  result = {
      'machine': f'{os.cpu_count()}-core {platform.machine()}',
      'platform': device.platform, 'device_kind': device.device_kind,
      'jax': jax.__version__, 'num_train': _NUM_TRAIN.value,
      'num_test': _NUM_TEST.value, 'codes': K, 'factor_sizes': SIZES,
      'rows': rows, 'total_first_s': total_first, 'total_warm_s': total_warm,
      'sklearn_dci': reference,
      'note': 'interventional scores over a factors-as-observations dataset',
  }
  results_io.write_report(result, f'metrics-{device.platform}.json',
                          _OUT.value, default=str)


if __name__ == '__main__':
  app.run(main)

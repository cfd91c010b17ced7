"""Rendering speed of the procedural datasets through the sharded pipeline.

  python benchmarks/data.py [--batch_sizes=64,256,1024] [--seconds=2]

Prints a table of images/s per dataset and batch size (steady state, after
compilation; each batch is a fresh draw of factors and nuisance, rendered on
the devices) and writes benchmarks/results/data-<platform>.json.
Targets (issue 2): >= 20,000 images/s for dsprites and >= 5,000 for
shapes3d_detail on a 2-core CPU; >= 1,000,000 for dsprites on one H100/H200.
"""

from __future__ import annotations

import os
import platform
import time

from absl import app
from absl import flags
import jax

from msdr import data
from msdr import sharding
from msdr.data import pipeline
import results_io  # benchmarks/results_io.py

_DATASETS = flags.DEFINE_list('datasets',
                              ['dsprites', 'shapes3d', 'shapes3d_detail'],
                              'Procedural datasets to time.')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['64', '256', '1024'],
                                 'Global batch sizes.')
_SECONDS = flags.DEFINE_float('seconds', 2.0, 'Timed seconds per case.')
_OUT = flags.DEFINE_string('out', None, 'JSON path (default: results/).')


def time_pipeline(pipe: pipeline.Pipeline, seconds: float) -> dict:
  """Steady-state images/s of `pipe.batch(step)` (compilation excluded)."""
  start = time.perf_counter()
  jax.block_until_ready(pipe.batch(0))
  compile_s = time.perf_counter() - start
  jax.block_until_ready(pipe.batch(1))
  steps, start = 0, time.perf_counter()
  while True:
    last = pipe.batch(2 + steps)
    steps += 1
    if steps % 4 == 0:
      jax.block_until_ready(last)
      if time.perf_counter() - start >= seconds:
        break
  elapsed = time.perf_counter() - start
  return {'images_per_second': steps * pipe.batch_size / elapsed,
          'batches': steps, 'first_batch_seconds': compile_s}


def machine() -> str:
  device = jax.devices()[0]
  if device.platform == 'cpu':
    return f'{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()})'
  return f'{jax.device_count()} x {device.device_kind}'


def main(argv):
  del argv
  mesh = sharding.make_mesh()
  rows = []
  for name in _DATASETS.value:
    dataset = data.get_dataset(name)
    for batch_size in map(int, _BATCH_SIZES.value):
      result = time_pipeline(pipeline.Pipeline(dataset, batch_size, 0, mesh),
                             _SECONDS.value)
      rows.append({'dataset': name, 'batch_size': batch_size, **result})
      print(f'{name:16s} batch {batch_size:5d}: '
            f'{result["images_per_second"]:12,.0f} images/s', flush=True)
  report = {'machine': machine(), 'platform': jax.devices()[0].platform,
            'devices': jax.device_count(), 'jax': jax.__version__,
            'rows': rows}
  print(f'\nmachine: {report["machine"]}, {report["devices"]} device(s), '
        f'jax {jax.__version__}')
  header = '| dataset | ' + ' | '.join(f'batch {b}' for b in _BATCH_SIZES.value)
  print(header + ' |')
  print('|---' * (len(_BATCH_SIZES.value) + 1) + '|')
  for name in _DATASETS.value:
    cells = [f'{r["images_per_second"]:,.0f}' for r in rows
             if r['dataset'] == name]
    print(f'| {name} | ' + ' | '.join(cells) + ' |')
  results_io.write_report(report, f'data-{report["platform"]}.json',
                          _OUT.value)


if __name__ == '__main__':
  app.run(main)

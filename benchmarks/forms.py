"""The stage-1 train step with each formulation of its convolutions.

  python benchmarks/forms.py [--forms=default,lax,...] [--batch_sizes=...]
      [--seconds=1] [--scan_steps=8] [--scan_forms=default,lax]
      [--scan_batch_sizes=64,256] [--out=PATH]

Times `benchmarks/train.py`'s msdr step (the same model, objective, batch,
sharding and donation; its --channels, --num_devices and --seed apply) with
the layers computed each of these ways:
  * default: the forms `msdr.models.networks` picks by channel counts;
  * lax: XLA's own convolutions everywhere (`lax.conv_general_dilated`,
    `lax.conv_transpose`), as a plain `nn.Conv` / `nn.ConvTranspose` model
    computes them;
  * lax_enc / lax_dec: XLA's convolutions in the encoder / the decoder only;
  * patches_phases: the 4x4 convs as 'patches', the transposed convs as
    'phases' (im2col-style products, differentiated by JAX);
  * taps: the transposed convs all as 'taps'.
and, for --scan_forms, --scan_steps steps in one jitted `lax.scan` (how much
of a step is the host's dispatch). Each row reports the fastest of chunks of
about 0.3 s (after the compiling call and 4 more), for at least --seconds,
since other jobs only add time. Prints a Markdown table and writes
benchmarks/results/forms-<platform>.json.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
import jax
from jax import lax
import results_io  # benchmarks/results_io.py
import train as train_bench  # benchmarks/train.py: the step and its flags

from msdr.models import networks
from msdr.train import loop
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS  # --batch_sizes, --seconds, --out: benchmarks/train.py's
_DIMS = ('NHWC', 'HWIO', 'NHWC')
_CONV, _CONV_T = networks.conv_s2, networks.conv_transpose_s2


def _lax_conv(x, kernel, method=None):
  del method
  return lax.conv_general_dilated(x, kernel, (2, 2), 'SAME',
                                  dimension_numbers=_DIMS)


def _lax_conv_t(x, kernel, method=None):
  del method
  return lax.conv_transpose(x, kernel, (2, 2), 'SAME', dimension_numbers=_DIMS)


def _patches(x, kernel, method=None):
  del method
  return _CONV(x, kernel, 'patches' if kernel.shape[0] == 4 else None)


def _with(method):
  return lambda x, kernel, _=None: _CONV_T(x, kernel, method)


# name -> (conv_s2, conv_transpose_s2) the modules call.
FORMS = {
    'default': (_CONV, _CONV_T),
    'lax': (_lax_conv, _lax_conv_t),
    'lax_enc': (_lax_conv, _CONV_T),
    'lax_dec': (_CONV, _lax_conv_t),
    'patches_phases': (_patches, _with('phases')),
    'taps': (_CONV, _with('taps')),
}

_FORMS = flags.DEFINE_list('forms', list(FORMS), 'Formulations to time.')
_SCAN_STEPS = flags.DEFINE_integer('scan_steps', 8,
                                   'Steps per call in the scan rows.')
_SCAN_FORMS = flags.DEFINE_list('scan_forms', ['default', 'lax'],
                                'Formulations of the scan rows.')
_SCAN_BATCH_SIZES = flags.DEFINE_list('scan_batch_sizes', ['64', '256'],
                                      'Batch sizes of the scan rows.')


@contextlib.contextmanager
def forms(name: str):
  """The modules compute their layers as FORMS[name] inside the block (they
  look `conv_s2` / `conv_transpose_s2` up when traced)."""
  networks.conv_s2, networks.conv_transpose_s2 = FORMS[name]
  try:
    yield
  finally:
    networks.conv_s2, networks.conv_transpose_s2 = _CONV, _CONV_T


def fastest_call_s(call, seconds: float) -> tuple[float, float]:
  """(first call's seconds, fastest per-call seconds over chunks)."""
  start = time.perf_counter()
  jax.block_until_ready(call())
  first = time.perf_counter() - start
  for _ in range(3):
    jax.block_until_ready(call())
  start = time.perf_counter()
  jax.block_until_ready(call())
  chunk = max(1, int(0.3 / max(time.perf_counter() - start, 1e-6)))
  best, chunks, begin = float('inf'), 0, time.perf_counter()
  while time.perf_counter() - begin < seconds or chunks < 3:
    start = time.perf_counter()
    for _ in range(chunk):
      out = call()
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - start) / chunk)
    chunks += 1
  return first, best


def time_form(name: str, batch_size: int, scan_steps: int = 0) -> dict:
  """One row: the step in form `name`, one step per call or `scan_steps`."""
  with forms(name):
    stage, state, abstract, mesh, batch, key = train_bench.jax_stage(
        batch_size)
    if scan_steps:
      step = loop.make_train_step(stage.loss, stage.optimizer)

      def steps(state, batch, key):
        def body(state, _):
          state, metrics = step(state, batch, key)
          return state, metrics['loss']
        return lax.scan(body, state, None, length=scan_steps)
      fn = jax.jit(steps, donate_argnums=0)
    else:
      fn = loop.compile_step(stage, abstract, mesh)
    box = {'state': state}

    def call():
      box['state'], out = fn(box['state'], batch, key)
      return out
    first, best = fastest_call_s(call, FLAGS.seconds)
  per_step = best / max(scan_steps, 1)
  return {'form': name + (f' (scan of {scan_steps})' if scan_steps else ''),
          'batch_size': batch_size, 'compile_seconds': first,
          'ms_per_step': per_step * 1e3, 'steps_per_second': 1 / per_step,
          'images_per_second': batch_size / per_step}


def main(argv):
  del argv
  unknown = set(_FORMS.value + _SCAN_FORMS.value) - set(FORMS)
  if unknown:
    raise app.UsageError(f'--forms takes {", ".join(FORMS)}; got '
                         f'{", ".join(sorted(unknown))}')
  cases = [(f, int(b), 0) for f in _FORMS.value for b in FLAGS.batch_sizes]
  cases += [(f, int(b), _SCAN_STEPS.value) for f in _SCAN_FORMS.value
            for b in _SCAN_BATCH_SIZES.value if _SCAN_STEPS.value]
  rows = []
  for name, batch_size, scan in cases:
    row = time_form(name, batch_size, scan)
    print(f'{row["form"]:26s} batch {batch_size:5d}: '
          f'{row["steps_per_second"]:9,.1f} steps/s '
          f'{row["images_per_second"]:11,.0f} images/s', flush=True)
    rows.append(row)
  report = train_bench.describe()
  print(f'\nmachine: {report["machine"]}, jax {report["jax"]}')
  print('| form | batch | steps/s | images/s | compile s |')
  print('|---|---:|---:|---:|---:|')
  for row in rows:
    print(f'| {row["form"]} | {row["batch_size"]} '
          f'| {row["steps_per_second"]:,.0f} '
          f'| {row["images_per_second"]:,.0f} '
          f'| {row["compile_seconds"]:.1f} |')
  report.update(benchmark='stage-1 beta_tcvae (mss) train step by layer form',
                command=sys.argv, rows=rows)
  results_io.write_report(report, f'forms-{report["platform"]}.json',
                          FLAGS.out)


if __name__ == '__main__':
  app.run(main)

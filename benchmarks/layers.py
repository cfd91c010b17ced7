"""Forward + backward time of each convolution of the stage-1 network.

  python benchmarks/layers.py [--batch_size=64] [--reps=20] [--notorch]
      [--out=PATH]

For each convolution of disentanglement_lib's 64x64 encoder and decoder (1
image channel), the time of one jitted forward + backward pass (gradients of
sum(r * layer(x)) with respect to the input and the kernel; the fastest of
--reps calls after a warmup call, as other jobs on a shared machine only
ever add time) at --batch_size, computed these ways:
  * msdr: the layer as `msdr.models.networks` computes it in the model on
    this platform (`ConvS2` / `ConvTransposeS2`; their docstrings say which
    formulation each layer takes);
  * every formulation `conv_s2` / `conv_transpose_s2` offers ('patches' /
    'shifted', 'adjoint' / 'taps' / 'phases');
  * lax: XLA's own convolution (`lax.conv_general_dilated`,
    `lax.conv_transpose`);
  * torch eager (`torch.nn.functional.conv2d` / `conv_transpose2d`, NCHW),
    when torch is importable.
Prints a Markdown table and writes benchmarks/results/layers-<platform>.json.
"""

from __future__ import annotations

import os
import platform
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import results_io  # benchmarks/results_io.py

from msdr.models import networks

_BATCH_SIZE = flags.DEFINE_integer('batch_size', 64, 'Batch size.')
_REPS = flags.DEFINE_integer('reps', 20, 'Timed calls per row (fastest).')
_NOTORCH = flags.DEFINE_bool('notorch', False, 'Skip the PyTorch column.')
_OUT = flags.DEFINE_string('out', None, 'JSON path (default: '
                           'benchmarks/results/layers-<platform>.json).')

_DIMS = ('NHWC', 'HWIO', 'NHWC')

# (name, transposed, input side, C_in, C_out, kernel size)
LAYERS = (
    ('conv 64² 1→32, 4×4', False, 64, 1, 32, 4),
    ('conv 32² 32→32, 4×4', False, 32, 32, 32, 4),
    ('conv 16² 32→64, 2×2', False, 16, 32, 64, 2),
    ('conv-transpose 4² 64→64', True, 4, 64, 64, 4),
    ('conv-transpose 8² 64→32', True, 8, 64, 32, 4),
    ('conv-transpose 16² 32→32', True, 16, 32, 32, 4),
    ('conv-transpose 32² 32→1', True, 32, 32, 1, 4),
)


def _msdr_layer(transposed: bool, c_out: int, size: int):
  """The layer function the model runs (the modules' platform choice)."""
  module = (networks.ConvTransposeS2(c_out) if transposed
            else networks.ConvS2(c_out, size))
  return lambda x, k: module.apply(
      {'params': {'kernel': k, 'bias': jnp.zeros(c_out)}}, x)


def _lax(transposed: bool):
  if transposed:
    return lambda x, k: jax.lax.conv_transpose(x, k, (2, 2), 'SAME',
                                               dimension_numbers=_DIMS)
  return lambda x, k: jax.lax.conv_general_dilated(
      x, k, (2, 2), 'SAME', dimension_numbers=_DIMS)


def _fastest_ms(fn, args, reps: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.min(times) * 1e3)


def time_jax(layer, x, k, r, reps: int) -> float:
  grad = jax.jit(jax.grad(lambda a, w: jnp.sum(r * layer(a, w)),
                          argnums=(0, 1)))
  return _fastest_ms(grad, (x, k), reps)


def time_torch(torch, transposed, x, k, r, reps: int) -> float:
  """torch eager, NCHW, the same padding (1 for 4x4 kernels, 0 for 2x2),
  on the GPU when torch sees one (then synchronised after each call)."""
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  tensor = lambda a, grad=False: torch.tensor(
      np.ascontiguousarray(a), device=device, requires_grad=grad)
  xt = tensor(np.asarray(x).transpose(0, 3, 1, 2), True)
  rt = tensor(np.asarray(r).transpose(0, 3, 1, 2))
  size = k.shape[0]
  pad = 1 if size == 4 else 0
  if transposed:  # torch's [C_in, C_out, kh, kw], flipped taps
    kt = tensor(np.asarray(k)[::-1, ::-1].transpose(2, 3, 0, 1), True)
    fn = lambda: torch.nn.functional.conv_transpose2d(xt, kt, stride=2,
                                                      padding=pad)
  else:  # [C_out, C_in, kh, kw]
    kt = tensor(np.asarray(k).transpose(3, 2, 0, 1), True)
    fn = lambda: torch.nn.functional.conv2d(xt, kt, stride=2, padding=pad)

  def step():
    xt.grad = kt.grad = None
    (rt * fn()).sum().backward()
    if device == 'cuda':
      torch.cuda.synchronize()

  step()
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return float(np.min(times) * 1e3)


def _ms(v: float) -> str:
  return f'{v:.1f}' if v >= 1 else f'{v:.2f}'


def main(argv):
  del argv
  torch = None
  if not _NOTORCH.value:
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      torch = None
  rng = np.random.default_rng(0)
  b, reps = _BATCH_SIZE.value, _REPS.value
  rows = []
  for name, transposed, side, c_in, c_out, size in LAYERS:
    out_side = 2 * side if transposed else side // 2
    x = jnp.asarray(rng.normal(size=(b, side, side, c_in)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(size, size, c_in, c_out)) * 0.1,
                    jnp.float32)
    r = jnp.asarray(rng.normal(size=(b, out_side, out_side, c_out)),
                    jnp.float32)
    row = {'layer': name, 'msdr_ms': time_jax(
        _msdr_layer(transposed, c_out, size), x, k, r, reps)}
    if transposed:
      methods = ('adjoint', 'taps', 'phases')
      form = lambda m: lambda a, w: networks.conv_transpose_s2(a, w, m)
    else:
      methods = ('shifted', 'patches') if size == 4 else ()
      form = lambda m: lambda a, w: networks.conv_s2(a, w, m)
    row['forms_ms'] = {m: time_jax(form(m), x, k, r, reps) for m in methods}
    row['lax_ms'] = time_jax(_lax(transposed), x, k, r, reps)
    if torch is not None:
      row['torch_eager_ms'] = time_torch(torch, transposed, x, k, r, reps)
    rows.append(row)
    print(f'{name:26s} msdr {_ms(row["msdr_ms"]):>6s} ms', flush=True)

  device = jax.devices()[0]
  report = {
      'machine': (f'{os.cpu_count()}-core CPU ({platform.machine()})'
                  if device.platform == 'cpu' else device.device_kind),
      'platform': device.platform, 'jax': jax.__version__,
      'torch': getattr(torch, '__version__', None),
      'torch_device': (None if torch is None else
                       'cuda' if torch.cuda.is_available() else 'cpu'),
      'batch_size': b,
      'reps': reps, 'rows': rows}
  print(f'\nmachine: {report["machine"]}, batch {b}, forward + backward, '
        f'ms (fastest of {reps})')
  print('| layer | msdr | other forms | lax | torch eager |')
  print('|---|---:|---|---:|---:|')
  for row in rows:
    forms = ', '.join(f'{m} {_ms(v)}' for m, v in row['forms_ms'].items())
    torch_ms = row.get('torch_eager_ms')
    print(f'| {row["layer"]} | {_ms(row["msdr_ms"])} | {forms or "–"} | '
          f'{_ms(row["lax_ms"])} | '
          f'{"–" if torch_ms is None else _ms(torch_ms)} |')
  results_io.write_report(report, f'layers-{report["platform"]}.json',
                          _OUT.value)


if __name__ == '__main__':
  app.run(main)

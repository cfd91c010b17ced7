"""Speed of the stage-1 beta-TCVAE train step: msdr (JAX) beside PyTorch.

  python benchmarks/train.py [--batch_sizes=64,256,1024] [--seconds=10]
      [--channels=1] [--num_devices=N] [--steps=N] [--notorch]
      [--notorch_compile] [--implementations=jax,torch,torch_compile]
      [--out=PATH]

Times msdr's real stage-1 step, exactly as training runs it: beta-TCVAE with
the MSS estimator (alpha 1, beta 6, gamma 1, N = 737,280 as dSprites, 10
latent dims, Adam 1e-4), built as a `msdr.train.loop.Stage` and jitted with
its state donated by `loop.compile_step` over `sharding.make_mesh`. Every
step sees one fixed batch of binary 64x64 images (1 channel by default)
already placed on the devices, so the model step is timed, not the input
pipeline. For each batch size it reports steps/s and images/s (steady state:
after 2 warmup steps, until --seconds have passed and at least --min_steps
steps ran), 'compile s' (the first call: trace, compile and one step) and
peak memory (GPU: the allocator's peak bytes in use per device; CPU: the
peak RSS of the process).

Beside it, when torch is importable, the same model and step in PyTorch:
disentanglement_lib's 64x64 VAE (NCHW), summed Bernoulli reconstruction,
the MSS minibatch estimator of Chen et al. 2018 and Adam 1e-4, run eagerly
('torch eager') and under torch.compile of the whole step ('torch.compile',
with cold inductor and Triton caches; a compile failure is reported in its
row). On a GPU torch uses cuDNN autotune
and TF32 matmuls (--torch_tf32), which XLA uses for float32 by default.

Every (implementation, batch) runs in a fresh subprocess (--isolate), so
compile caches, memory peaks and GPU memory pools do not leak between rows.
Prints a Markdown table and writes benchmarks/results/train-<platform>.json
(every row and a description of the machine).
"""

from __future__ import annotations

import atexit
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import types

# The checkout's msdr, whether or not it is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
import jax
import numpy as np
import results_io  # benchmarks/results_io.py

from msdr import sharding
from msdr.models import stage1
from msdr.train import loop
# pylint: enable=g-import-not-at-top,wrong-import-position

IMPLEMENTATIONS = {'jax': 'msdr (JAX)', 'torch': 'torch eager',
                   'torch_compile': 'torch.compile'}
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['64', '256', '1024'],
                                 'Global batch sizes.')
_CHANNELS = flags.DEFINE_integer('channels', 1, 'Image channels (64x64).')
_NUM_DEVICES = flags.DEFINE_integer('num_devices', None,
                                    'Devices in the mesh (default: all).')
_SECONDS = flags.DEFINE_float('seconds', 10.0,
                              'Timed seconds per row (after warmup).')
_STEPS = flags.DEFINE_integer('steps', None,
                              'Exactly this many timed steps per row '
                              '(overrides --seconds).')
_MIN_STEPS = flags.DEFINE_integer('min_steps', 3, 'Fewest timed steps.')
_WARMUP = flags.DEFINE_integer('warmup', 2,
                               'Untimed steps after the first call.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the init and the batch.')
_TORCH = flags.DEFINE_bool('torch', True,
                           'Also time PyTorch (skipped if not installed).')
_TORCH_COMPILE = flags.DEFINE_bool('torch_compile', True,
                                   'Also time torch.compile of the step.')
_TORCH_TF32 = flags.DEFINE_bool('torch_tf32', True,
                                'On CUDA, let torch use TF32 for float32 '
                                'matmuls, as XLA does by default.')
_IMPLEMENTATIONS = flags.DEFINE_list(
    'implementations', list(IMPLEMENTATIONS),
    'Which rows to run, of jax, torch, torch_compile (--notorch and '
    '--notorch_compile still drop the torch rows).')
_ISOLATE = flags.DEFINE_bool('isolate', True,
                             'Run each row in a fresh subprocess (else all '
                             'in this one: memory peaks then accumulate and '
                             "JAX's GPU memory pool is shared with torch).")
_TIMEOUT = flags.DEFINE_float('timeout', 1800.0,
                              'Seconds before an isolated row is abandoned.')
_OUT = flags.DEFINE_string('out', None, 'JSON path (default: results/).')
_WORKER = flags.DEFINE_string('worker', None,
                              "Internal: run one row ('IMPL:BATCH') or "
                              "'describe' and print it as JSON.")

DATASET = 'dsprites'
DATASET_SIZE = 737_280  # dSprites: N for the MSS estimator
IMAGE_SIDE = 64
_RESULT = 'BENCHMARK_RESULT '
_FORWARDED = ('channels', 'num_devices', 'seconds', 'steps', 'min_steps',
              'warmup', 'seed', 'torch_tf32')


class Section(types.SimpleNamespace):
  """A config section read both as `cfg.name` and `cfg['name']`, as
  `ml_collections.ConfigDict` is (which the GPU machines do not have)."""

  def __getitem__(self, name: str):
    try:
      return getattr(self, name)
    except AttributeError:
      raise KeyError(name) from None


def stage1_config(batch_size: int | None) -> Section:
  """The fields of configs.common.base_config('dsprites', 'beta_tcvae')
  .stage1 that `msdr.models.stage1.from_config` reads."""
  return Section(method='beta_tcvae', latent_dim=10, batch_size=batch_size,
                 learning_rate=1e-4, reconstruction='bernoulli', alpha=1.0,
                 beta=6.0, gamma=1.0, estimator='mss')


def images(batch_size: int, channels: int, seed: int) -> np.ndarray:
  """A fixed float32 batch [B, 64, 64, C] of values in {0, 1}."""
  rng = np.random.default_rng(seed)
  shape = (batch_size, IMAGE_SIDE, IMAGE_SIDE, channels)
  return (rng.random(shape) < 0.5).astype(np.float32)


def peak_rss() -> int:
  """Peak resident set size of this process so far, in bytes."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak if sys.platform == 'darwin' else peak * 1024  # Linux: KiB


def time_steps(step, sync) -> dict:
  """Times `step()` (one train step; returns what `sync` waits for).

  The first call is timed on its own (compilation), then --warmup untimed
  steps, then --steps steps, or chunks of about a second each until
  --seconds have passed and at least --min_steps steps ran.
  """
  start = time.perf_counter()
  first = step()
  sync(first)
  compile_s = time.perf_counter() - start
  per_step = compile_s
  for _ in range(_WARMUP.value):
    start = time.perf_counter()
    sync(step())
    per_step = time.perf_counter() - start
  if _STEPS.value:
    start = time.perf_counter()
    for _ in range(_STEPS.value):
      last = step()
    sync(last)
    steps = _STEPS.value
  else:
    chunk = max(1, int(min(1.0, _SECONDS.value / 4) / max(per_step, 1e-6)))
    steps, start = 0, time.perf_counter()
    while True:
      for _ in range(chunk):
        last = step()
      sync(last)
      steps += chunk
      if (time.perf_counter() - start >= _SECONDS.value
          and steps >= _MIN_STEPS.value):
        break
  elapsed = time.perf_counter() - start
  return {'steps_per_second': steps / elapsed, 'timed_steps': steps,
          'timed_seconds': elapsed, 'compile_seconds': compile_s,
          'first': first}


def jax_stage(batch_size: int):
  """(stage, fresh state, abstract state, mesh, batch, train key) of msdr's
  stage-1 step at `batch_size`, as `msdr.train.loop.train` sets it up."""
  channels = _CHANNELS.value
  mesh = sharding.make_mesh(_NUM_DEVICES.value)
  sharding.check_batch_size(batch_size, mesh)
  cfg = stage1_config(batch_size)
  model = stage1.from_config(cfg, channels=channels,
                             dataset_size=DATASET_SIZE)
  stage = loop.Stage(
      name='stage1',
      init=lambda k: model.init(k, (IMAGE_SIDE, IMAGE_SIDE, channels)),
      loss=lambda p, b, k, s: model.loss(p, b['image'], k, s),
      optimizer=model.optimizer(), batches=None, steps=0,
      batch_size=batch_size)
  init_key, train_key = loop.stage_keys(_SEED.value, stage.name)
  state, abstract = loop.init_state(stage, init_key, mesh)
  batch = {'image': jax.device_put(images(batch_size, channels, _SEED.value),
                                   sharding.data_sharding(mesh))}
  jax.block_until_ready((state, batch))
  return stage, state, abstract, mesh, batch, train_key


def run_jax(batch_size: int) -> dict:
  """msdr's stage-1 train step, as `msdr.train.loop.train` runs it."""
  stage, state, abstract, mesh, batch, train_key = jax_stage(batch_size)
  step_fn = loop.compile_step(stage, abstract, mesh)
  baseline_rss = peak_rss()
  box = {'state': state}
  del state

  def step():
    box['state'], metrics = step_fn(box['state'], batch, train_key)
    return box['state'], metrics

  result = time_steps(step, jax.block_until_ready)
  _, first_metrics = result.pop('first')
  row = {'first_loss': float(first_metrics['loss']), **result}
  # The executable is cached by now: lowering again compiles nothing.
  analysis = step_fn.lower(box['state'], batch, train_key).compile()
  analysis = analysis.memory_analysis()
  if analysis is not None:
    row['xla_memory_bytes'] = {
        name: int(getattr(analysis, f'{name}_size_in_bytes'))
        for name in ('argument', 'output', 'alias', 'temp')}
  peaks = [(d.memory_stats() or {}).get('peak_bytes_in_use')
           for d in mesh.devices.flat]
  if all(p is not None for p in peaks):
    row.update(peak_memory_bytes=max(peaks), peak_memory_kind='device')
  else:
    row.update(peak_memory_bytes=peak_rss(), peak_memory_kind='rss',
               baseline_rss_bytes=baseline_rss)
  row['devices'] = int(mesh.devices.size)
  return row


def torch_vae(torch, channels: int, latent_dim: int):
  """disentanglement_lib's 64x64 encoder and decoder in PyTorch (NCHW)."""
  nn = torch.nn
  encoder = nn.Sequential(
      nn.Conv2d(channels, 32, 4, 2, 1), nn.ReLU(),
      nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
      nn.Conv2d(32, 64, 2, 2), nn.ReLU(),
      nn.Conv2d(64, 64, 2, 2), nn.ReLU(),
      nn.Flatten(), nn.Linear(64 * 4 * 4, 256), nn.ReLU(),
      nn.Linear(256, 2 * latent_dim))
  decoder = nn.Sequential(
      nn.Linear(latent_dim, 256), nn.ReLU(),
      nn.Linear(256, 64 * 4 * 4), nn.ReLU(), nn.Unflatten(1, (64, 4, 4)),
      nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(),
      nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
      nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
      nn.ConvTranspose2d(32, channels, 4, 2, 1))
  return nn.ModuleDict({'encoder': encoder, 'decoder': decoder})


def torch_mss_log_weights(torch, batch_size: int, dataset_size: int):
  """log W [B, B] of minibatch stratified sampling (Chen et al. 2018):
  W[j, j] = 1/N, W[j, (j+1) % B] = (N-K)/(N K), else 1/K, K = B - 1."""
  k, n = batch_size - 1, dataset_size
  w = torch.full((batch_size, batch_size), 1.0 / k, dtype=torch.float64)
  rows = torch.arange(batch_size)
  w[rows, (rows + 1) % batch_size] = (n - k) / (n * k)
  w[rows, rows] = 1.0 / n
  return torch.log(w).float()


def run_torch(batch_size: int, compiled: bool) -> dict:
  """The same model, objective and optimizer in PyTorch, eager or compiled."""
  if compiled:
    # Cold caches, so 'compile s' is a first compile as JAX's is (XLA keeps
    # no persistent cache unless configured): a fresh inductor/triton cache.
    cache = tempfile.mkdtemp(prefix='msdr-bench-inductor-')
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    os.environ['TORCHINDUCTOR_CACHE_DIR'] = os.path.join(cache, 'inductor')
    os.environ['TRITON_CACHE_DIR'] = os.path.join(cache, 'triton')
  import torch  # pylint: disable=g-import-not-at-top
  functional = torch.nn.functional
  cuda = torch.cuda.is_available()
  device = torch.device('cuda' if cuda else 'cpu')
  if cuda:
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = _TORCH_TF32.value
    torch.backends.cuda.matmul.allow_tf32 = _TORCH_TF32.value
  else:
    torch.set_num_threads(os.cpu_count())
  torch.manual_seed(_SEED.value)
  cfg = stage1_config(batch_size)
  d = cfg.latent_dim
  model = torch_vae(torch, _CHANNELS.value, d).to(device)
  optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate,
                               betas=(0.9, 0.999), eps=1e-8)
  log_w = torch_mss_log_weights(torch, batch_size, DATASET_SIZE).to(device)
  x = torch.from_numpy(
      images(batch_size, _CHANNELS.value, _SEED.value).transpose(0, 3, 1, 2)
      .copy()).to(device)
  log_2pi = math.log(2.0 * math.pi)

  def log_density(z, mean, logvar):
    return -0.5 * (log_2pi + logvar + (z - mean) ** 2 * torch.exp(-logvar))

  def loss_fn(x):
    mean, logvar = model['encoder'](x).split(d, dim=1)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    logits = model['decoder'](z)
    recon = functional.binary_cross_entropy_with_logits(
        logits, x, reduction='sum') / x.shape[0]
    log_qzx = log_density(z, mean, logvar).sum(-1)
    log_pz = (-0.5 * (log_2pi + z ** 2)).sum(-1)
    mat = log_density(z[:, None], mean[None], logvar[None])  # [B, B, D]
    log_qz = torch.logsumexp(log_w + mat.sum(-1), dim=1)
    log_qz_marg = torch.logsumexp(log_w[:, :, None] + mat, dim=1).sum(-1)
    mi = torch.mean(log_qzx - log_qz)
    tc = torch.mean(log_qz - log_qz_marg)
    dwkl = torch.mean(log_qz_marg - log_pz)
    return recon + cfg.alpha * mi + cfg.beta * tc + cfg.gamma * dwkl

  def train_step(x):
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(x)
    loss.backward()
    optimizer.step()
    return loss.detach()

  if compiled:
    train_step = torch.compile(train_step)
  if cuda:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
  baseline_rss = peak_rss()
  sync = (lambda _: torch.cuda.synchronize()) if cuda else (lambda _: None)
  result = time_steps(lambda: train_step(x), sync)
  row = {'first_loss': float(result.pop('first')), **result}
  if cuda:
    row.update(peak_memory_bytes=int(torch.cuda.max_memory_allocated()),
               peak_memory_kind='device')
  else:
    row.update(peak_memory_bytes=peak_rss(), peak_memory_kind='rss',
               baseline_rss_bytes=baseline_rss)
  row['device'] = str(device)
  return row


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def describe() -> dict:
  """The machine: platform, devices, CPUs and library versions."""
  device = jax.devices()[0]
  if device.platform == 'cpu':
    machine = (f'{os.cpu_count()}-core CPU '
               f'({platform.processor() or platform.machine()})')
  else:
    machine = f'{jax.device_count()} x {device.device_kind}'
  return {'machine': machine, 'platform': device.platform,
          'device_kind': device.device_kind,
          'devices': jax.device_count(), 'cpu_count': os.cpu_count(),
          'python': platform.python_version(), 'jax': jax.__version__,
          'jaxlib': _version('jaxlib'), 'flax': _version('flax'),
          'optax': _version('optax'), 'torch': _version('torch')}


def run_row(impl: str, batch_size: int) -> dict:
  """One row, in this process; a failure becomes a 'failed' row."""
  try:
    if impl == 'jax':
      row = run_jax(batch_size)
    else:
      row = run_torch(batch_size, compiled=impl == 'torch_compile')
    row['status'] = 'ok'
  except Exception as e:  # pylint: disable=broad-except
    import traceback  # pylint: disable=g-import-not-at-top
    traceback.print_exc()
    message = str(e).strip().splitlines()
    row = {'status': 'failed',
           'error': f'{type(e).__name__}: {message[0] if message else ""}'}
  return row


def run_worker(what: str) -> dict:
  """A row (or the description) in a fresh process of this script."""
  command = [sys.executable, os.path.abspath(__file__), f'--worker={what}']
  command += [s for s in (flags.FLAGS[n].serialize() for n in _FORWARDED) if s]
  try:
    proc = subprocess.run(command, capture_output=True, text=True,
                          timeout=_TIMEOUT.value, check=False)
  except subprocess.TimeoutExpired:
    return {'status': 'failed', 'error': f'timed out after {_TIMEOUT.value} s'}
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith(_RESULT):
      return json.loads(line[len(_RESULT):])
  sys.stderr.write(proc.stderr[-4000:])
  tail = [l for l in proc.stderr.splitlines() if l.strip()]
  return {'status': 'failed',
          'error': f'worker exited {proc.returncode}: '
                   f'{tail[-1] if tail else "no output"}'}


def _bytes(n: int | None) -> str:
  if n is None:
    return ''
  if n >= 2 ** 30:
    return f'{n / 2 ** 30:.2f} GiB'
  return f'{n / 2 ** 20:,.0f} MiB'


def _rate(v: float) -> str:
  return f'{v:,.0f}' if v >= 100 else f'{v:.3g}'


def print_table(rows: list[dict]) -> None:
  print('| implementation | batch | steps/s | images/s | compile s '
        '| peak memory | msdr / torch eager |')
  print('|---|---:|---:|---:|---:|---:|---:|')
  notes = []
  for row in rows:
    name, batch = row['implementation'], row['batch_size']
    if row['status'] != 'ok':
      notes.append(f'{name} at batch {batch}: {row["error"]}')
      print(f'| {name} | {batch} | failed [{len(notes)}] | | | | |')
      continue
    kind = 'device' if row['peak_memory_kind'] == 'device' else 'RSS'
    ratio = row.get('msdr_over_torch_eager')
    print(f'| {name} | {batch} | {_rate(row["steps_per_second"])} '
          f'| {row["images_per_second"]:,.0f} '
          f'| {row["compile_seconds"]:.1f} '
          f'| {_bytes(row["peak_memory_bytes"])} {kind} '
          f'| {f"{ratio:.2f}x" if ratio else ""} |')
  print('\ncompile s: the first call (trace, compile, one step; for torch '
        'eager just the first step). peak memory: device = peak bytes in use '
        'per device; RSS = peak resident set of the '
        + ('row\'s own process.' if _ISOLATE.value
           else 'whole process so far (accumulates across rows).'))
  for i, note in enumerate(notes, 1):
    print(f'[{i}] {note}')


def main(argv):
  del argv
  if _WORKER.value:
    if _WORKER.value == 'describe':
      result = describe()
    else:
      impl, batch_size = _WORKER.value.split(':')
      result = run_row(impl, int(batch_size))
    print(_RESULT + json.dumps(result), flush=True)
    return

  unknown = set(_IMPLEMENTATIONS.value) - set(IMPLEMENTATIONS)
  if unknown:
    raise app.UsageError(f'--implementations takes {", ".join(IMPLEMENTATIONS)}'
                         f'; got {", ".join(sorted(unknown))}')
  run = run_worker if _ISOLATE.value else None
  report = run('describe') if run else describe()
  impls = ['jax']
  note = None
  if not _TORCH.value:
    note = 'torch rows skipped (--notorch)'
  elif importlib.util.find_spec('torch') is None:
    note = 'torch rows skipped: torch is not installed'
  else:
    impls += ['torch'] + (['torch_compile'] if _TORCH_COMPILE.value else [])
  impls = [i for i in impls if i in _IMPLEMENTATIONS.value]
  if note:
    print(note, flush=True)

  rows = []
  for batch_size in map(int, _BATCH_SIZES.value):
    for impl in impls:
      what = f'{impl}:{batch_size}'
      result = run(what) if run else run_row(impl, batch_size)
      row = {'implementation': IMPLEMENTATIONS[impl], 'batch_size': batch_size,
             **result}
      if row['status'] == 'ok':
        row['images_per_second'] = row['steps_per_second'] * batch_size
        print(f'{row["implementation"]:14s} batch {batch_size:5d}: '
              f'{row["images_per_second"]:12,.0f} images/s, compile '
              f'{row["compile_seconds"]:.1f} s', flush=True)
      else:
        print(f'{row["implementation"]:14s} batch {batch_size:5d}: failed: '
              f'{row["error"]}', flush=True)
      rows.append(row)
  eager = {r['batch_size']: r['images_per_second'] for r in rows
           if r['implementation'] == 'torch eager' and r['status'] == 'ok'}
  for row in rows:
    if (row['implementation'] == 'msdr (JAX)' and row['status'] == 'ok'
        and row['batch_size'] in eager):
      row['msdr_over_torch_eager'] = (row['images_per_second']
                                      / eager[row['batch_size']])

  report.update(
      benchmark='stage-1 beta_tcvae (mss) train step',
      settings={'dataset_size': DATASET_SIZE, 'channels': _CHANNELS.value,
                'image_shape': [IMAGE_SIDE, IMAGE_SIDE, _CHANNELS.value],
                'stage1': vars(stage1_config(None)),
                'num_devices': _NUM_DEVICES.value,
                'seconds': _SECONDS.value, 'steps': _STEPS.value,
                'min_steps': _MIN_STEPS.value, 'warmup': _WARMUP.value,
                'seed': _SEED.value, 'isolate': _ISOLATE.value,
                'torch_tf32': _TORCH_TF32.value},
      note=note, command=sys.argv, rows=rows)
  print(f'\nmachine: {report["machine"]}, {report["devices"]} device(s), '
        f'jax {report["jax"]}, flax {report["flax"]}, '
        f'torch {report["torch"] or "not installed"}')
  print_table(rows)
  results_io.write_report(report, f'train-{report["platform"]}.json',
                          _OUT.value)


if __name__ == '__main__':
  app.run(main)

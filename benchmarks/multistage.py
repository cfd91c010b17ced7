"""The method's claim on one CPU: same factors, much better reconstructions.

  python benchmarks/multistage.py [--datasets=shapes3d_detail,dsprites]
      [--models=ms_vae,ms_gan,ms_flow,ms_gmm] [--stage1_steps=1000]
      [--stage2_steps=300] [--width=16] [--workdir=runs/bench-multistage]
      [--set=stage2.learning_rate=1e-3,...] [--out=PATH]

For each dataset: one beta-TCVAE stage 1 (the dataset's multi-stage config,
`stage1_steps` steps), then each stage-2 model trained on that same frozen
stage 1 (`stage1.init_from`, `stage2_steps` steps), then the evaluator on
each run with the sizes below. The disentanglement columns are the stage-1
encoder's, identical for every row of a dataset by construction; the
reconstruction columns compare stage 1 with the multi-stage model on the
same held-out images. Targets (issue 5): multi-stage MSE <= 0.5x stage 1's on
dsprites and <= 0.3x on shapes3d_detail. Finished runs are reused (each stage
resumes from its checkpoints), so an interrupted benchmark continues.
Prints a table and writes benchmarks/results/multistage-<platform>.json.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys

from absl import app
from absl import flags
from absl import logging
import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

# pylint: disable=g-import-not-at-top
from msdr import sharding
from msdr.eval import evaluator
from msdr.train import stage1 as stage1_job
from msdr.train import stage2 as stage2_job
# pylint: enable=g-import-not-at-top

_DATASETS = flags.DEFINE_list('datasets', ['shapes3d_detail', 'dsprites'],
                              'Datasets (each has configs/<name>_<model>.py).')
_MODELS = flags.DEFINE_list('models', ['ms_vae', 'ms_gan', 'ms_flow',
                                       'ms_gmm'], 'Stage-2 models.')
_STAGE1_STEPS = flags.DEFINE_integer('stage1_steps', 1000, 'Stage-1 steps.')
_STAGE2_STEPS = flags.DEFINE_integer('stage2_steps', 300, 'Stage-2 steps.')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Batch of both stages.')
_WIDTH = flags.DEFINE_integer(
    'width', 16, 'MS-VAE / MS-GAN width (the configs default to the '
    "authors' 64, ~5 s/step at batch 64 on a 2-core CPU).")
_TRAIN_ONLY = flags.DEFINE_bool('train_only', False,
                                'Train every run, evaluate nothing.')
_NUM_EVAL = flags.DEFINE_integer('num_eval', 1000,
                                 'Held-out test images (train codes: 2x).')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/bench-multistage',
                               'Where the runs live.')
_OUT = flags.DEFINE_string('out', None, 'JSON path (default: results/).')
_SET = flags.DEFINE_list(
    'set', [], 'Config overrides of every stage-2 run, SECTION.FIELD=VALUE '
    '(e.g. stage2.learning_rate=1e-3), parsed as the field\'s type. Runs '
    'resume from their workdir, so give new settings a new --workdir.')

TARGETS = {'dsprites': 0.5, 'shapes3d_detail': 0.3}
SHOWN = ('mig', 'dci_disentanglement', 'sap', 'factor_vae_eval_accuracy')


def run_config(dataset: str, model: str, stage1_dir: str):
  config = importlib.import_module(f'configs.{dataset}_{model}').get_config()
  config.stage1.steps = _STAGE1_STEPS.value
  config.stage1.batch_size = _BATCH.value
  config.stage2.steps = _STAGE2_STEPS.value
  config.stage2.batch_size = _BATCH.value
  config.stage2.width = _WIDTH.value
  config.stage2.gan_disc_width = _WIDTH.value
  config.checkpoint_every = 250
  config.log_every = 50
  n = _NUM_EVAL.value
  # FactorVAE / BetaVAE render and encode 64 (pairs of) images per point.
  config.eval.update(num_train=2 * n, num_test=n, interventional_points=300,
                     interventional_eval=150)
  config.stage1.init_from = stage1_dir
  for item in _SET.value:
    set_field(config, item)
  return config


def set_field(config, item: str) -> None:
  """Applies one SECTION.FIELD=VALUE override, typed as the field."""
  name, sep, text = item.partition('=')
  section, _, field = name.partition('.')
  if not sep or section not in ('stage2', 'eval') or field not in config[
      section]:
    raise app.UsageError(f'--set {item!r}: expected stage2.FIELD=VALUE or '
                         'eval.FIELD=VALUE with an existing field')
  current = config[section][field]
  if isinstance(current, bool):
    value = text.lower() in ('1', 'true', 'yes')
  elif isinstance(current, (int, float)):
    value = float(text)  # an int field takes '1e3'; a fraction is refused
    if isinstance(current, int) and value.is_integer():
      value = int(value)
  else:
    value = text
  config[section][field] = value


def write_config(config, workdir: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))


def train_seconds(workdir: str, stage: str) -> float:
  """Training time of `stage` from its logged rates (the first interval
  includes compilation), also right for runs that were resumed."""
  seconds, done = 0.0, 0
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):  # checkpoints copied from another run
    return float('nan')
  with open(path) as f:
    for record in map(json.loads, f):
      if record['stage'] == stage and record['step'] > done:
        seconds += (record['step'] - done) / record['steps_per_second']
        done = record['step']
  return seconds


def bench_dataset(dataset: str, mesh) -> list[dict]:
  root = os.path.join(_WORKDIR.value, dataset)
  stage1_dir = os.path.join(root, 'stage1')
  config = run_config(dataset, _MODELS.value[0], None)
  config.stage1.init_from = None
  config.stage2.model = None
  write_config(config, stage1_dir)
  stage1_job.train_stage1(config, stage1_dir, mesh)
  seconds1 = train_seconds(stage1_dir, 'stage1')
  rows = []
  for model in _MODELS.value:
    workdir = os.path.join(root, model)
    config = run_config(dataset, model, stage1_dir)
    write_config(config, workdir)
    stage2_job.train_stage2(config, workdir, mesh)
    seconds2 = train_seconds(workdir, 'stage2')
    if _TRAIN_ONLY.value:
      continue
    scores = evaluator.evaluate(workdir, config)
    rec = {w: {m: scores[f'reconstruction.{w}.{m}']
               for m in ('mse', 'psnr', 'ssim')}
           for w in ('stage1', 'multistage')}
    ratio = rec['multistage']['mse'] / rec['stage1']['mse']
    rows.append({
        'dataset': dataset, 'model': model,
        'stage1_steps': _STAGE1_STEPS.value,
        'stage2_steps': _STAGE2_STEPS.value, 'batch_size': _BATCH.value,
        'width': _WIDTH.value, 'overrides': list(_SET.value),
        'stage1_seconds': seconds1, 'stage2_seconds': seconds2,
        'disentanglement': {k: scores.get(f'disentanglement.{k}')
                            for k in SHOWN},
        'reconstruction': rec, 'mse_ratio': ratio,
        'target_ratio': TARGETS.get(dataset),
        'met': ratio <= TARGETS.get(dataset, float('inf')),
        'frechet': {w: scores.get(f'samples.{w}.frechet')
                    for w in ('stage1', 'multistage')},
        'feature_network': scores['samples.feature_network'],
    })
  return rows


def _f(v, digits=3) -> str:
  return '-' if v is None else f'{v:.{digits}f}'


def print_table(rows: list[dict]) -> None:
  print('| dataset | stage 2 | MIG | DCI-D | SAP | FVAE | MSE s1 | MSE ms | '
        'ratio (target) | PSNR s1 / ms | SSIM s1 / ms | FD s1 / ms | '
        'stage-2 time |')
  print('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
  for r in rows:
    d, s1, ms = r['disentanglement'], r['reconstruction']['stage1'], r[
        'reconstruction']['multistage']
    target = r['target_ratio']
    mark = '' if target is None else (' ok' if r['met'] else ' missed')
    print(f"| {r['dataset']} | {r['model']} | {_f(d['mig'])} | "
          f"{_f(d['dci_disentanglement'])} | {_f(d['sap'])} | "
          f"{_f(d['factor_vae_eval_accuracy'])} | {s1['mse']:.4f} | "
          f"{ms['mse']:.4f} | {r['mse_ratio']:.2f} ({_f(target, 1)}{mark}) | "
          f"{s1['psnr']:.1f} / {ms['psnr']:.1f} | {s1['ssim']:.3f} / "
          f"{ms['ssim']:.3f} | {_f(r['frechet']['stage1'], 1)} / "
          f"{_f(r['frechet']['multistage'], 1)} | "
          f"{r['stage2_seconds'] / 60:.1f} min |")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  mesh = sharding.make_mesh(1)
  rows = []
  for dataset in _DATASETS.value:
    rows += bench_dataset(dataset, mesh)
  if _TRAIN_ONLY.value:
    return
  print_table(rows)
  out = _OUT.value or os.path.join(
      os.path.dirname(os.path.abspath(__file__)), 'results',
      f'multistage-{jax.devices()[0].platform}.json')
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, 'w') as f:
    json.dump({'machine': {'platform': platform.platform(),
                           'processor': platform.processor(),
                           'cpus': os.cpu_count(),
                           'device': str(jax.devices()[0])},
               'rows': rows}, f, indent=2)
  print(f'wrote {out}')


if __name__ == '__main__':
  app.run(main)

r"""msdr's command line: flags, config, devices, then one call into the job.

  python -m msdr.main --config configs/dsprites_beta_tcvae.py \
      --workdir /tmp/run [--config.stage1.beta=4] [--mode=train]
  python -m msdr.main --mode=report --workdir /tmp/run
  python -m msdr.main --mode=compare --workdirs /tmp/a,/tmp/b --workdir /tmp/c

Modes:
  train  (default) train stage 1 (unless `stage1.init_from` names a finished
         run), then stage 2 when the config has one, then evaluate when
         `eval.after_training` (multi-stage configs); each stage resumes
         from the workdir's newest checkpoint. Writes `config.json`,
         `metrics.jsonl`, `tensorboard/`, `checkpoints/stage{1,2}/` and
         `eval.json`.
  eval   score the workdir's newest checkpoints (disentanglement of stage 1,
         reconstruction and sample quality of stage 1 and the multi-stage
         model, msdr.eval.evaluator); writes `eval.json`.
  data   load the dataset, print its summary, render the first batches through
         the sharded input pipeline (with their speed) and write
         `data_samples.png` and `config.json` in the workdir.
  report (re)write the workdir's figures, `report.html` and `report.md`
         (msdr.viz.report; training writes them too); --config is not
         needed, the run's config.json is used.
  compare write `compare.html` / `compare.md` / `compare.json` in --workdir
         showing the runs of --workdirs=A,B,... side by side.

Exit status: 0 done; 2 a bad input (unknown name, bad config value, data not
prepared: one `error:` line, no traceback, nothing compiled); 1 a run that
cannot go on (a non-finite loss: the message names the step and the term);
128 + signal number after SIGTERM/SIGINT, once a checkpoint is saved (rerun
the same command to resume).
"""

from __future__ import annotations

import logging as std_logging
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

MODES = ('train', 'eval', 'data', 'report', 'compare')
# Modes that read everything from existing runs (no --config).
FROM_RUNS = ('report', 'compare')

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, optionally FILE:smoke.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory of the run.')
_MODE = flags.DEFINE_enum('mode', 'train', MODES, 'What to run.')
_WORKDIRS = flags.DEFINE_list(
    'workdirs', None, '--mode=compare: the runs to compare (comma-separated).')
_MULTIHOST = flags.DEFINE_bool(
    'multihost', False,
    'Call jax.distributed.initialize() first (multi-host GPU/TPU jobs).')
flags.mark_flags_as_required(['workdir'])


def write_config(config, workdir: str) -> None:
  """Saves the resolved config as `config.json` (process 0 only)."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True) + '\n')


def run_data(config, workdir: str, batches: int = 5) -> dict:
  """Summarises the dataset and times the sharded pipeline.

  Returns:
    dict with the dataset name, batch size, device count and images/s.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from msdr import sharding  # pylint: disable=g-import-not-at-top
  from msdr.data import pipeline  # pylint: disable=g-import-not-at-top
  from msdr.train import stage1  # pylint: disable=g-import-not-at-top
  from msdr.viz import grid  # pylint: disable=g-import-not-at-top

  dataset = stage1.dataset_from_config(config)
  mesh = sharding.make_mesh(config.num_devices)
  batch_size = config.stage1.batch_size
  pipe = pipeline.Pipeline(dataset, batch_size, config.seed, mesh)
  print(dataset.summary())
  start = time.perf_counter()
  first = jax.block_until_ready(pipe.batch(0))
  first_s = time.perf_counter() - start
  start = time.perf_counter()
  for step in range(1, batches + 1):
    last = pipe.batch(step)
  jax.block_until_ready(last)
  rate = batches * batch_size / (time.perf_counter() - start)
  path = os.path.join(workdir, 'data_samples.png')
  shown = jax.device_get(first['image'][:32])
  grid.save_png(grid.image_grid(shown, columns=8), path)
  print(f'pipeline: batch {batch_size} on {mesh.devices.size} device(s) '
        f'({jax.devices()[0].platform}); first batch {first_s:.2f} s '
        f'(compilation included), then {rate:,.0f} images/s')
  print(f'samples: {path}')
  return {'dataset': dataset.name, 'batch_size': batch_size,
          'devices': int(mesh.devices.size), 'images_per_second': rate}


def run_report(mode: str, workdir: str, workdirs) -> str:
  """--mode=report (of `workdir`) or --mode=compare (of `workdirs`, into
  `workdir`); prints and returns the HTML's path."""
  from msdr.errors import UserInputError  # pylint: disable=g-import-not-at-top
  from msdr.viz import report  # pylint: disable=g-import-not-at-top
  if mode == 'report':
    if not os.path.isdir(workdir):
      raise UserInputError(f'{workdir} is not a directory')
    path = report.write_report(workdir)
  else:
    if not workdirs:
      raise UserInputError('--mode=compare needs --workdirs=A,B,...')
    os.makedirs(workdir, exist_ok=True)
    path = report.compare(workdirs, workdir)
  print(f'report: {path}', flush=True)
  return path


class _QuietOrbax(std_logging.Filter):
  """Drops orbax's per-save INFO chatter (dozens of lines per checkpoint)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return (record.levelno >= std_logging.WARNING
            or f'{os.sep}orbax{os.sep}' not in record.pathname)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietOrbax())
  # pylint: disable-next=g-import-not-at-top
  from msdr.errors import Preempted, TrainingError, UserInputError
  try:
    if _MULTIHOST.value:
      import jax  # pylint: disable=g-import-not-at-top
      jax.distributed.initialize()
    config, workdir, mode = _CONFIG.value, _WORKDIR.value, _MODE.value
    if mode in FROM_RUNS:
      run_report(mode, workdir, _WORKDIRS.value)
      return
    if config is None:
      raise UserInputError(f'--mode={mode} needs --config')
    os.makedirs(workdir, exist_ok=True)
    if mode != 'eval':  # eval reads the trained run's config.json
      write_config(config, workdir)
    logging.info('mode %s, workdir %s', mode, workdir)
    if mode == 'data':
      run_data(config, workdir)
    elif mode == 'train':
      from msdr.train import run  # pylint: disable=g-import-not-at-top
      run.run(config, workdir)
      print(f'results: {workdir}', flush=True)
      report = os.path.join(workdir, 'report.html')
      if os.path.exists(report):
        print(f'report: {report}', flush=True)
    elif mode == 'eval':
      from msdr.eval import evaluator  # pylint: disable=g-import-not-at-top
      evaluator.evaluate(workdir, config)
  except UserInputError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except TrainingError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  except Preempted as e:
    print(f'stopped: {e}', file=sys.stderr)
    sys.exit(128 + e.signum)


if __name__ == '__main__':
  app.run(main)

r"""msdr's command line: flags, config, devices, then one call into the job.

  python -m msdr.main --config configs/dsprites_beta_tcvae.py \
      --workdir /tmp/run [--config.stage1.beta=4] [--mode=train]

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

MODES = ('train', 'eval', 'data')

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, optionally FILE:smoke.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory of the run.')
_MODE = flags.DEFINE_enum('mode', 'train', MODES, 'What to run.')
_MULTIHOST = flags.DEFINE_bool(
    'multihost', False,
    'Call jax.distributed.initialize() first (multi-host GPU/TPU jobs).')
flags.mark_flags_as_required(['config', 'workdir'])


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
    config, workdir = _CONFIG.value, _WORKDIR.value
    os.makedirs(workdir, exist_ok=True)
    if _MODE.value != 'eval':  # eval reads the trained run's config.json
      write_config(config, workdir)
    logging.info('mode %s, workdir %s', _MODE.value, workdir)
    if _MODE.value == 'data':
      run_data(config, workdir)
    elif _MODE.value == 'train':
      from msdr.train import run  # pylint: disable=g-import-not-at-top
      run.run(config, workdir)
      print(f'results: {workdir}', flush=True)
    elif _MODE.value == 'eval':
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

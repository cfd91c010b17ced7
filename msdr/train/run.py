"""The whole method as one job: stage 1, stage 2, evaluation, report.

  from msdr.train import run
  scores = run.run(config, workdir)

Stage 1 is skipped when `config.stage1.init_from` names a finished run;
stage 2 runs when `config.stage2.model` is set; evaluation when
`config.eval.after_training` is (multi-stage configs set it); the figures
and report (msdr.viz.report) when `config.report.after_training` is. Each stage
resumes from its own checkpoints, so rerunning the command after an
interruption continues in the stage that was running.
"""

from __future__ import annotations

import json
import os

from msdr import options
from msdr import sharding as sharding_lib
from msdr.errors import UserInputError


def load_config(workdir: str):
  """The resolved config a run saved in `workdir/config.json`."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise UserInputError(f'{workdir} has no config.json: not a msdr run')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def run(config, workdir: str, mesh=None) -> dict | None:
  """Trains every stage the config names; returns eval scores or None."""
  from msdr.train import stage1  # pylint: disable=g-import-not-at-top
  from msdr.train import stage2  # pylint: disable=g-import-not-at-top
  mesh = mesh if mesh is not None else sharding_lib.make_mesh(
      config.num_devices)
  has_stage2 = stage2.has_stage2(config)
  if has_stage2:  # fail on a bad stage-2 value before training stage 1
    stage2.make_model(config)
  if not config.stage1.get('init_from'):
    stage1.train_stage1(config, workdir, mesh)
  if has_stage2:
    stage2.train_stage2(config, workdir, mesh)
  scores = None
  if config.get('eval', {}).get('after_training'):
    from msdr.eval import evaluator  # pylint: disable=g-import-not-at-top
    scores = evaluator.evaluate(workdir, config)
  if options.report_options(config)['after_training']:
    from msdr.viz import report  # pylint: disable=g-import-not-at-top
    report.write_report(workdir, config)
  return scores

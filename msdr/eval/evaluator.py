"""Evaluate a trained workdir: disentanglement and reconstruction quality.

  python -m msdr.main --config configs/X.py --workdir W --mode=eval
  from msdr.eval import evaluator; scores = evaluator.evaluate('W')

Loads the newest stage-1 checkpoint of the workdir, draws held-out samples
(`config.eval.num_train` + `num_test` factor vectors and their images, from a
key stream no training step uses), encodes them `config.eval.batch_size` at a
time (memory stays bounded), and computes

  disentanglement  mig, sap, modularity + explicitness, irs (on the posterior
                   means), factor_vae_score and beta_vae_score (rendering
                   fresh observations through the dataset);
  reconstruction   mean per-image mse, psnr, ssim and bce of
                   sigmoid(decode(mean)) against the test images.

Writes `eval.json` in the workdir and prints a table.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from msdr import sharding
from msdr.errors import UserInputError
from msdr.eval import disentanglement as dm
from msdr.eval import quality
from msdr.train import checkpoint as checkpoint_lib
from msdr.train import loop
from msdr.train import stage1 as stage1_job

# Folded into the root key for evaluation samples (no stage uses it).
EVAL_STREAM = 0x6576616C  # 'eval'

DEFAULTS = dict(num_train=10_000, num_test=5_000, batch_size=256,
                interventional_points=10_000, interventional_eval=5_000)


def _eval_options(config) -> dict:
  options = dict(DEFAULTS)
  if 'eval' in config:
    options.update({k: config.eval[k] for k in DEFAULTS if k in config.eval})
  return options


def load_config(workdir: str):
  """The resolved config a run saved in `workdir/config.json`."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise UserInputError(f'{workdir} has no config.json: not a msdr run')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_stage1(config, workdir: str):
  """(model, params, dataset) of the newest stage-1 checkpoint."""
  mesh = sharding.make_mesh(1)
  model, stage, pipe = stage1_job.build(config, mesh)
  init_key, _ = loop.stage_keys(config.seed, 'stage1')
  ckpt = checkpoint_lib.Checkpointer(
      os.path.join(workdir, 'checkpoints', 'stage1'))
  restored = ckpt.restore(loop.abstract_state(stage, init_key, mesh))
  ckpt.close()
  if restored is None:
    raise UserInputError(f'{workdir} has no stage-1 checkpoint to evaluate; '
                         'train it first (--mode=train)')
  state, step = restored
  return model, state['params'], pipe.dataset, step


def _batched(fn, x, batch_size: int):
  outs = [np.asarray(fn(x[i:i + batch_size]))
          for i in range(0, len(x), batch_size)]
  return np.concatenate(outs)


def evaluate(workdir: str, config=None, key: jax.Array | None = None) -> dict:
  """Scores the stage-1 model of `workdir`; writes `workdir/eval.json`.

  Args:
    workdir: a trained run's directory.
    config: the run's config (default: its saved config.json).
    key: PRNG key of the held-out samples (default: from config.seed).

  Returns:
    dict of every score (floats), also written to eval.json.
  """
  config = config if config is not None else load_config(workdir)
  options = _eval_options(config)
  model, params, dataset, step = load_stage1(config, workdir)
  if key is None:
    key = jax.random.fold_in(jax.random.key(config.seed), EVAL_STREAM)
  batch = int(options['batch_size'])
  encode = jax.jit(lambda x: model.encode(params, x)[0])
  reconstruct = jax.jit(lambda c: jax.nn.sigmoid(model.decode(params, c)))
  representation = lambda x: _batched(encode, x, batch)

  k_train, k_test, k_fvae, k_bvae = jax.random.split(key, 4)
  images = {}
  sets = {}
  for name, k, n in (('train', k_train, options['num_train']),
                     ('test', k_test, options['num_test'])):
    chunks = [dataset.sample(jax.random.fold_in(k, i), min(batch, n - s))
              for i, s in enumerate(range(0, n, batch))]
    x = np.concatenate([np.asarray(c[0]) for c in chunks])
    f = np.concatenate([np.asarray(c[1]) for c in chunks])
    images[name] = x
    sets[name] = (representation(x), f)
  (c_tr, f_tr), (c_te, f_te) = sets['train'], sets['test']

  scores = {'step': int(step)}
  scores['mig'] = dm.mig(c_tr, f_tr)
  scores['sap'] = dm.sap(c_tr, f_tr, c_te, f_te)
  scores.update(dm.modularity_explicitness(c_tr, f_tr, c_te, f_te))
  scores['irs'] = dm.irs(c_tr, f_tr)
  points, evals = options['interventional_points'], options[
      'interventional_eval']
  fvae = dm.factor_vae_score(dataset, representation, k_fvae,
                             num_train=points, num_eval=evals,
                             num_variance_estimate=points)
  scores.update({f'factor_vae_{k}': v for k, v in fvae.items()})
  bvae = dm.beta_vae_score(dataset, representation, k_bvae,
                           num_train=points, num_eval=evals)
  scores.update({f'beta_vae_{k}': v for k, v in bvae.items()})

  x = images['test']
  recon = _batched(reconstruct, c_te, batch)  # decode(mean), reusing codes
  for name, fn in (('mse', quality.mse), ('psnr', quality.psnr),
                   ('ssim', quality.ssim), ('bce', quality.bce)):
    per_image = [np.asarray(fn(x[i:i + batch], recon[i:i + batch]))
                 for i in range(0, len(x), batch)]
    scores[f'stage1_{name}'] = float(np.mean(np.concatenate(per_image)))

  scores = {k: (float(v) if not isinstance(v, int) else v)
            for k, v in scores.items()}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'eval.json'), 'w') as f:
      json.dump(scores, f, indent=2, sort_keys=True)
    print(format_table(scores))
  return scores


def format_table(scores: dict) -> str:
  lines = ['| metric | value |', '|---|---:|']
  lines += [f'| {k} | {v:.4f} |' if isinstance(v, float) else f'| {k} | {v} |'
            for k, v in scores.items()]
  return '\n'.join(lines)

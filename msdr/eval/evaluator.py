"""Evaluate a trained workdir: disentanglement, reconstruction and samples.

  python -m msdr.main --config configs/X.py --workdir W --mode=eval
  from msdr.eval import evaluator; scores = evaluator.evaluate('W')

Loads the newest stage-1 checkpoint of the workdir (or of its
`stage1.init_from`) and, when the run has a stage 2, its newest stage-2
checkpoint; draws held-out samples (`config.eval.num_train` + `num_test`
images with their factors, from a key stream no training step uses) and
processes them `config.eval.batch_size` at a time, so memory stays bounded
(only the codes, per-image scores and features are kept). `eval.json` holds
flat dotted keys:

  step.stage1, step.stage2        the checkpoints scored
  disentanglement.<metric>        of the stage-1 encoder's posterior means:
                                  mig, sap, dci_* (disentanglement,
                                  completeness, informativeness_train/test),
                                  modularity, explicitness_train/test, irs,
                                  factor_vae_*, beta_vae_* (the last two
                                  render fresh observations, so only for
                                  datasets with a factor grid)
  reconstruction.stage1.<m>       m in mse, psnr, ssim, bce (per-image means)
                                  of y = sigmoid(g1(E[c|x])) on the test set
  reconstruction.multistage.<m>   the same for stage 2's reconstruction with
                                  z = E[z | x, y]
  samples.<model>.frechet         Fréchet distance between the test images
                                  and as many samples (model: stage1,
                                  multistage), in the features of
  samples.feature_network         the network named here
                                  (`config.eval.feature_network`)

and the run prints them as a table.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from msdr import options as options_lib
from msdr.errors import UserInputError
from msdr.eval import disentanglement as dm
from msdr.eval import features as features_lib
from msdr.eval import quality
from msdr.train import run as run_lib
from msdr.train import stage2 as stage2_job

# Folded into the root key for evaluation samples (no stage uses it).
EVAL_STREAM = 0x6576616C  # 'eval'

DEFAULTS = dict(num_train=10_000, num_test=5_000, batch_size=256,
                interventional_points=10_000, interventional_eval=5_000,
                feature_network='random_conv', inception_weights=None)
QUALITY = (('mse', quality.mse), ('psnr', quality.psnr),
           ('ssim', quality.ssim), ('bce', quality.bce))


def _batched(fn, x, batch_size: int) -> np.ndarray:
  """fn over x in chunks of batch_size, concatenated on the host."""
  outs = [np.asarray(fn(x[i:i + batch_size]))
          for i in range(0, len(x), batch_size)]
  return np.concatenate(outs)


def _sample_batches(dataset, key: jax.Array, n: int, batch: int):
  """Held-out (images, factors) chunks of at most `batch`, n in all."""
  for i, s in enumerate(range(0, n, batch)):
    x, f = dataset.sample(jax.random.fold_in(key, i), min(batch, n - s))
    yield np.asarray(x, np.float32), np.asarray(f)


def _has_grid(dataset) -> bool:
  """Whether factors can be sampled and rendered (interventional metrics)."""
  try:
    dataset.sample_factors(jax.random.key(0), 1)
  except UserInputError:
    return False
  return True


def _disentanglement(dataset, codes, options, key, representation) -> dict:
  (c_tr, f_tr), (c_te, f_te) = codes['train'], codes['test']
  scores = {'mig': dm.mig(c_tr, f_tr),
            'sap': dm.sap(c_tr, f_tr, c_te, f_te),
            'irs': dm.irs(c_tr, f_tr)}
  scores.update({f'dci_{k}': v for k, v in
                 dm.dci(c_tr, f_tr, c_te, f_te).items()})
  scores.update(dm.modularity_explicitness(c_tr, f_tr, c_te, f_te))
  if _has_grid(dataset):
    k_fvae, k_bvae = jax.random.split(key)
    points = options['interventional_points']
    evals = options['interventional_eval']
    fvae = dm.factor_vae_score(dataset, representation, k_fvae,
                               num_train=points, num_eval=evals,
                               num_variance_estimate=points)
    scores.update({f'factor_vae_{k}': v for k, v in fvae.items()})
    bvae = dm.beta_vae_score(dataset, representation, k_bvae,
                             num_train=points, num_eval=evals)
    scores.update({f'beta_vae_{k}': v for k, v in bvae.items()})
  return scores


def evaluate(workdir: str, config=None, key: jax.Array | None = None) -> dict:
  """Scores the model of `workdir` (both stages when it has a stage 2);
  writes `workdir/eval.json`.

  Args:
    workdir: a trained run's directory.
    config: the run's config (default: its saved config.json).
    key: PRNG key of the held-out samples (default: from config.seed).

  Returns:
    dict of every score (flat dotted keys, see the module docstring), also
    written to eval.json.
  """
  from msdr import multistage  # pylint: disable=g-import-not-at-top
  config = config if config is not None else run_lib.load_config(workdir)
  options = options_lib.section_options(config, 'eval', DEFAULTS)
  model = multistage.load(workdir, config)
  has_stage2 = model.stage2 is not None
  scores = {'step.stage1': model.step1}
  if has_stage2:
    scores['step.stage2'] = model.step2
  dataset = stage2_job.run_dataset(config, workdir)
  if key is None:
    key = jax.random.fold_in(jax.random.key(config.seed), EVAL_STREAM)
  batch = int(options['batch_size'])
  representation = lambda x: _batched(model.encode, x, batch)
  network = features_lib.get_feature_network(
      options['feature_network'], options['inception_weights'])

  k_train, k_test, k_inter, k_samples = jax.random.split(key, 4)
  codes = {}
  per_image = {'stage1': {m: [] for m, _ in QUALITY},
               'multistage': {m: [] for m, _ in QUALITY}}
  feats = {'data': []}
  for name, k, n in (('train', k_train, options['num_train']),
                     ('test', k_test, options['num_test'])):
    chunks_c, chunks_f = [], []
    for x, f in _sample_batches(dataset, k, n, batch):
      c = model.encode(x)
      chunks_c.append(np.asarray(c))
      chunks_f.append(f)
      if name != 'test':
        continue
      outputs = {'stage1': model.decode_stage1(c)}
      if has_stage2:
        outputs['multistage'] = model.reconstruct_given(x, outputs['stage1'])
      for which, recon in outputs.items():
        for metric, fn in QUALITY:
          per_image[which][metric].append(np.asarray(fn(x, recon)))
      feats['data'].append(network(x))
    codes[name] = (np.concatenate(chunks_c), np.concatenate(chunks_f))

  scores.update({f'disentanglement.{k}': v for k, v in _disentanglement(
      dataset, codes, options, k_inter, representation).items()})
  for which, metrics in per_image.items():
    for metric, values in metrics.items():
      if values:
        scores[f'reconstruction.{which}.{metric}'] = float(
            np.mean(np.concatenate(values)))

  n = options['num_test']
  samplers = {'stage1': model.sample_stage1}
  if has_stage2:
    samplers['multistage'] = model.sample
  stats_data = quality.feature_statistics(np.concatenate(feats['data']))
  for which, sampler in samplers.items():
    sample_feats = [network(sampler(jax.random.fold_in(k_samples, i),
                                    min(batch, n - s)))
                    for i, s in enumerate(range(0, n, batch))]
    stats = quality.feature_statistics(np.concatenate(sample_feats))
    scores[f'samples.{which}.frechet'] = quality.frechet_distance(
        *stats_data, *stats)
  scores['samples.feature_network'] = network.name

  scores = {k: (float(v) if not isinstance(v, (int, str)) else v)
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

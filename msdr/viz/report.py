"""The figures and report of a trained run, and a report comparing runs.

  python -m msdr.main --mode=report --workdir W       # (re)writes W's report
  python -m msdr.main --mode=compare --workdirs A,B --workdir OUT
  from msdr.viz import report
  report.write_report('W'); report.compare(['A', 'B'], 'OUT')

Every finished `--mode=train` run writes, in its workdir:

  traversals_stage1.png / .gif      each row one code dimension of c (ordered
  traversals_multistage.png / .gif  by KL), its value swept over +-range (or
                                    the posterior means' range), for a few
                                    held-out images; z fixed (multi-stage)
  reconstructions.png               data | stage 1 | multi-stage
  samples.png                       stage 1 and multi-stage from the same c
  mi_matrix.png                     MI(c_j; factor_k) / H(factor_k)
  kl_per_dim.png                    mean KL(q(c_j | x) || N(0, 1))
  training_curves.png               loss terms over steps, both stages
  report.html / report.md           config, eval.json tables, every figure

(the multi-stage figures only for runs with a stage 2) and image summaries
under `tensorboard/report/`. Held-out images come from a fixed key (not the
run's seed), so every run on a dataset shows the same images and the same
workdir always gives the same figures.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import os

import jax
import numpy as np
from PIL import Image

from msdr import multistage
from msdr import options as options_lib
from msdr.errors import UserInputError
from msdr.eval import disentanglement as dm
from msdr.train import logger as logger_lib
from msdr.train import run as run_lib
from msdr.train import stage2 as stage2_job
from msdr.viz import grid
from msdr.viz import pages
from msdr.viz import plots

# Folded into a fixed root key for the report's images (no stage uses it).
REPORT_STREAM = 0x7265706F  # 'repo'
FIGURES = ('traversals_stage1.png', 'traversals_stage1.gif',
           'traversals_multistage.png', 'traversals_multistage.gif',
           'reconstructions.png', 'samples.png', 'mi_matrix.png',
           'kl_per_dim.png', 'training_curves.png')


@dataclasses.dataclass(frozen=True)
class Figure:
  name: str  # file name, e.g. 'samples.png'
  data: bytes  # encoded PNG or GIF
  caption: str

  @property
  def mime(self) -> str:
    return 'image/gif' if self.name.endswith('.gif') else 'image/png'

  def data_uri(self) -> str:
    return (f'data:{self.mime};base64,'
            + base64.b64encode(self.data).decode('ascii'))


@dataclasses.dataclass(frozen=True)
class Rendered:
  """Everything a report shows of one run."""
  workdir: str
  config: object
  figures: tuple[Figure, ...]
  scores: dict  # eval.json ({} when the run was not evaluated)
  kl: np.ndarray  # [latent_dim]
  step: int  # the newest checkpoint's step (stage 2's when there is one)


def report_key() -> jax.Array:
  return jax.random.fold_in(jax.random.key(0), REPORT_STREAM)


def _codes(model, dataset, key, n: int, batch: int):
  """Posterior means, KL per dimension and factors of n held-out images."""
  means, kls, factors = [], [], []
  for i, start in enumerate(range(0, n, batch)):
    x, f = dataset.sample(jax.random.fold_in(key, i), min(batch, n - start))
    mean, logvar = (np.asarray(a, np.float64) for a in model.posterior(x))
    means.append(mean)
    kls.append(0.5 * (mean**2 + np.exp(logvar) - logvar - 1.0))
    factors.append(np.asarray(f))
  return (np.concatenate(means), np.concatenate(kls).mean(axis=0),
          np.concatenate(factors))


def traversal_values(means: np.ndarray, opts: dict) -> np.ndarray:
  """[latent_dim, num_values] values each dimension is swept over."""
  k, v = means.shape[1], opts['num_values']
  if opts['traversal'] == 'prior':
    r = float(opts['traversal_range'])
    return np.tile(np.linspace(-r, r, v), (k, 1))
  return np.stack([np.linspace(lo, hi, v) for lo, hi in
                   zip(means.min(axis=0), means.max(axis=0))])


def traversal_figures(frames: np.ndarray, labels, name: str, caption: str
                      ) -> tuple[Figure, Figure]:
  """PNG and GIF of a traversal.

  Args:
    frames: [K, V, B, H, W, C]: row k sweeps one dimension over V values
      for B images.
    labels: K row labels.

  Returns:
    The PNG (K rows; per image a block of V columns, blocks one blank column
    apart) and the GIF (frame v: K rows x B images at value v).
  """
  k, v, b = frames.shape[:3]
  blank = np.ones((k, 1) + frames.shape[3:], frames.dtype)
  blocks = []
  for i in range(b):
    blocks += [frames[:, :, i]] + ([blank] if i < b - 1 else [])
  # Unzoomed: these grids are the big ones (K x B x V images).
  png = grid.labelled_grid(np.concatenate(blocks, axis=1), labels, factor=1)
  gif = grid.gif_bytes([grid.labelled_grid(frames[:, j], labels, factor=1)
                        for j in range(v)])
  return (Figure(f'{name}.png', grid.png_bytes(png), caption),
          Figure(f'{name}.gif', gif, caption + ' Animated over the values.'))


def _traversal(model, x, order, values, stage2: bool) -> np.ndarray:
  """[K, V, B, H, W, C] for the dimensions in `order`."""
  rows = [model.traverse(x, int(d), values[d]) if stage2 else
          model.traverse_stage1(x, int(d), values[d]) for d in order]
  return np.stack([np.asarray(r) for r in rows])


def render(workdir: str, config=None) -> Rendered:
  """Computes every figure of a run in memory (nothing is written).

  Raises:
    UserInputError: not a run, a stage without a checkpoint, or a bad
      `config.report` value.
  """
  config = config if config is not None else run_lib.load_config(workdir)
  opts = options_lib.report_options(config)
  model = multistage.load(workdir, config)
  dataset = stage2_job.run_dataset(config, workdir)
  has_stage2 = model.stage2 is not None
  eval_opts = options_lib.section_options(config, 'eval', {'batch_size': 256})
  batch = int(eval_opts['batch_size'])
  k_images, k_codes, k_samples = jax.random.split(report_key(), 3)
  shown = max(opts['num_images'], opts['num_reconstructions'])
  x = np.asarray(dataset.sample(k_images, shown)[0], np.float32)
  means, kl, factors = _codes(model, dataset, k_codes, opts['num_codes'],
                              batch)
  order = np.argsort(-kl, kind='stable')
  values = traversal_values(means, opts)
  labels = [f'c{d} KL {kl[d]:.2f}' for d in order]
  sweep = ('+-{:g}'.format(opts['traversal_range'])
           if opts['traversal'] == 'prior' else "the posterior means' range")
  figures = []
  traversed = x[:opts['num_images']]
  stages = [('stage1', False, 'Stage 1')]
  if has_stage2:
    stages.append(('multistage', True, 'Multi-stage (z fixed to each '
                   "image's posterior mean)"))
  for name, stage2, who in stages:
    frames = _traversal(model, traversed, order, values, stage2)
    figures += traversal_figures(
        frames, labels, f'traversals_{name}',
        f'{who} traversals: each row one code dimension (ordered by KL) '
        f'swept over {sweep} in {opts["num_values"]} steps, for '
        f'{len(traversed)} held-out images.')

  x_rec = x[:opts['num_reconstructions']]
  y = np.asarray(model.reconstruct_stage1(x_rec))
  rows, names = [x_rec, y], ['data', 'stage 1']
  if has_stage2:
    rows.append(np.asarray(model.reconstruct_given(x_rec, y)))
    names.append('multi-stage')
  figures.append(Figure(
      'reconstructions.png',
      grid.png_bytes(grid.labelled_grid(np.stack(rows), names)),
      'Held-out images (top), stage 1\'s reconstructions and '
      + ('the multi-stage reconstructions (z its posterior mean).'
         if has_stage2 else 'no stage 2 in this run.')))

  n = opts['num_samples']
  if has_stage2:
    rows = [np.asarray(a) for a in model.sample_both(k_samples, n,
                                                     opts['temperature'])]
    names = ['stage 1', 'multi-stage']
  else:
    rows, names = [np.asarray(model.sample_stage1(k_samples, n))], ['stage 1']
  figures.append(Figure(
      'samples.png', grid.png_bytes(grid.labelled_grid(np.stack(rows), names)),
      'Samples: c ~ N(0, I) per column; stage 1 decodes it'
      + (f', the multi-stage model adds z from its prior (temperature '
         f'{opts["temperature"]:g}).' if has_stage2 else '.')))

  mi = mutual_information(means, factors)
  if mi is not None:
    figures.append(Figure(
        'mi_matrix.png',
        plots.mi_matrix(mi[order], [f'c{d}' for d in order],
                        dataset.factor_names),
        f'Mutual information of each code dimension (rows, KL order) with '
        f'each factor, over its entropy, on {len(means)} held-out images '
        '(20-bin histograms, as MIG and modularity use).'))
  figures.append(Figure(
      'kl_per_dim.png', plots.kl_per_dim(kl, opts['dead_kl']),
      f'Mean KL of q(c_j | x) from the prior on {len(means)} held-out '
      'images; grey dimensions are collapsed.'))
  figures.append(Figure(
      'training_curves.png', plots.training_curves(read_metrics(workdir)),
      'Loss terms over training steps (metrics.jsonl), one row per stage.'))
  return Rendered(workdir, config, tuple(figures), read_scores(workdir), kl,
                  model.step2 if has_stage2 else model.step1)


def mutual_information(codes, factors) -> np.ndarray | None:
  """[K, F] MI(code_j; factor_k) / H(factor_k) (0 for constant factors);
  None when the dataset has no factors."""
  if factors.ndim != 2 or factors.shape[1] == 0:
    return None
  mi = np.asarray(dm.discrete_mutual_info(dm.histogram_discretize(codes),
                                          factors), np.float64)
  entropy = np.asarray(dm.discrete_entropy(factors), np.float64)
  return np.where(entropy > 0, mi / np.where(entropy > 0, entropy, 1.0), 0.0)


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def read_scores(workdir: str) -> dict:
  path = os.path.join(workdir, 'eval.json')
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def write_report(workdir: str, config=None) -> str:
  """Renders the run and writes its figures, report.html and report.md into
  the workdir (process 0), plus image summaries under tensorboard/report.

  Returns:
    The path of report.html.
  """
  r = render(workdir, config)
  path = os.path.join(workdir, 'report.html')
  if jax.process_index() != 0:
    return path
  for f in r.figures:
    with open(os.path.join(workdir, f.name), 'wb') as out:
      out.write(f.data)
  with open(path, 'w') as out:
    out.write(pages.report_html(r))
  with open(os.path.join(workdir, 'report.md'), 'w') as out:
    out.write(pages.report_md(r))
  write_image_summaries(os.path.join(workdir, 'tensorboard', 'report'),
                        r.step, r.figures)
  return path


def write_image_summaries(logdir: str, step: int, figures) -> None:
  """The PNG figures as TensorBoard image summaries at `step`."""
  images = {}
  for f in figures:
    if f.mime == 'image/png':
      image = Image.open(io.BytesIO(f.data))
      images[f'report/{f.name[:-4]}'] = (f.data, image.height, image.width,
                                         len(image.getbands()))
  writer = logger_lib.EventWriter(logdir)
  try:
    writer.images(step, images)
  finally:
    writer.close()


# -- comparison ----------------------------------------------------------------


def _labels(workdirs) -> list[str]:
  names = [os.path.basename(os.path.normpath(w)) or w for w in workdirs]
  return [n if names.count(n) == 1 else f'{n} ({i})'
          for i, n in enumerate(names)]


def compare(workdirs, out_dir: str) -> str:
  """One report of several runs side by side (e.g. each stage-2 model on
  the same stage 1): their configs, every eval.json score as a run-per-column
  table, and each figure of each run in a row (the same held-out images).

  Writes out_dir/compare.html (self-contained), compare.md with its figures
  under out_dir/compare/ and compare.json (the scores by run).

  Returns:
    The path of compare.html.
  """
  workdirs = [w for w in workdirs if w]
  if len(workdirs) < 2:
    raise UserInputError('compare needs at least two workdirs; got '
                         f'{workdirs}')
  for w in workdirs:
    if not os.path.isdir(w):
      raise UserInputError(f'{w} is not a directory')
  rendered = [render(w) for w in workdirs]
  labels = _labels(workdirs)
  config_rows = _union_rows({lab: dict(pages.summary(r.config))
                             for lab, r in zip(labels, rendered)})
  score_rows = _union_rows({lab: {k: pages.fmt(v) for k, v in r.scores.items()}
                            for lab, r in zip(labels, rendered)})
  header = ['', *labels]
  names = [n for n in FIGURES if any(f.name == n for r in rendered
                                     for f in r.figures)]
  os.makedirs(os.path.join(out_dir, 'compare'), exist_ok=True)

  sections = ['<h2>Runs</h2>', pages.html_table(header, config_rows),
              '<h2>Scores (eval.json)</h2>', pages.html_table(header, score_rows),
              '<h2>Figures</h2>']
  md = ['# msdr comparison', '', '## Runs', '', pages.md_table(header, config_rows),
        '', '## Scores (eval.json)', '', pages.md_table(header, score_rows), '',
        '## Figures', '']
  for name in names:
    sections.append(f'<h3>{html.escape(name)}</h3><div class="row">')
    md += [f'### {name}', '']
    for label, r in zip(labels, rendered):
      figure = next((f for f in r.figures if f.name == name), None)
      if figure is None:
        continue
      sections.append(pages.html_figure(dataclasses.replace(figure,
                                                       caption=label)))
      file = f'{label}_{name}'.replace(' ', '_').replace('/', '_')
      with open(os.path.join(out_dir, 'compare', file), 'wb') as out:
        out.write(figure.data)
      md += [f'![{label}](compare/{file})', f'*{label}*', '']
    sections.append('</div>')
  sections.append('<p>Captions of each figure: the runs\' report.html.</p>')
  path = os.path.join(out_dir, 'compare.html')
  with open(path, 'w') as out:
    out.write(pages.html_page('msdr comparison: ' + ', '.join(labels), sections))
  with open(os.path.join(out_dir, 'compare.md'), 'w') as out:
    out.write('\n'.join(md))
  with open(os.path.join(out_dir, 'compare.json'), 'w') as out:
    json.dump({lab: r.scores for lab, r in zip(labels, rendered)}, out,
              indent=2, sort_keys=True)
  return path


def _union_rows(by_run: dict[str, dict[str, str]]) -> list[list[str]]:
  keys = []
  for values in by_run.values():
    keys += [k for k in values if k not in keys]
  return [[k, *(values.get(k, '-') for values in by_run.values())]
          for k in keys]

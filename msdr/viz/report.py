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


# -- tables --------------------------------------------------------------------


def fmt(value) -> str:
  """How every report prints a score (eval.json values, 4 decimals)."""
  if isinstance(value, float):
    return f'{value:.4f}'
  return str(value)


def summary(config) -> list[tuple[str, str]]:
  """(field, value) rows describing a run's config."""
  s1 = config.stage1
  rows = [('dataset', config.data.name), ('seed', config.seed),
          ('stage 1', f'{s1.method}, latent_dim {s1.latent_dim}, '
                      f'{s1.steps} steps, batch {s1.batch_size}, '
                      f'lr {s1.learning_rate:g}')]
  if s1.get('init_from'):
    rows.append(('stage 1 from', s1.init_from))
  if stage2_job.has_stage2(config):
    s2 = config.stage2
    rows.append(('stage 2', f'{s2.model}, z_dim {s2.z_dim}, {s2.steps} '
                            f'steps, batch {s2.batch_size}, lr '
                            f'{s2.learning_rate:g}, image size '
                            f'{stage2_job.image_size(config)}'))
  return [(k, str(v)) for k, v in rows]


def score_tables(scores: dict) -> list[tuple[str, list[str], list[list[str]]]]:
  """(title, header, rows) tables of an eval.json."""
  if not scores:
    return []
  tables = []
  dis = sorted(k for k in scores if k.startswith('disentanglement.'))
  if dis:
    tables.append(('Disentanglement (stage-1 codes)', ['metric', 'value'],
                   [[k.split('.', 1)[1], fmt(scores[k])] for k in dis]))
  metrics = sorted({k.split('.')[2] for k in scores
                    if k.startswith('reconstruction.')})
  if metrics:
    rows = []
    for m in metrics:
      one = scores.get(f'reconstruction.stage1.{m}')
      two = scores.get(f'reconstruction.multistage.{m}')
      rows.append([m, fmt(one) if one is not None else '-',
                   fmt(two) if two is not None else '-'])
    tables.append(('Reconstruction (held-out test images)',
                   ['metric', 'stage 1', 'multi-stage'], rows))
  if any(k.startswith('samples.') and k.endswith('.frechet') for k in scores):
    rows = [[w, fmt(scores[f'samples.{w}.frechet'])]
            for w in ('stage1', 'multistage')
            if f'samples.{w}.frechet' in scores]
    tables.append((f'Samples: Fréchet distance to test images '
                   f'({scores.get("samples.feature_network", "?")})',
                   ['model', 'frechet'], rows))
  steps = [[k.split('.', 1)[1], fmt(scores[k])] for k in sorted(scores)
           if k.startswith('step.')]
  if steps:
    tables.append(('Checkpoints scored', ['stage', 'step'], steps))
  return tables


def _html_table(header, rows) -> str:
  head = ''.join(f'<th>{html.escape(h)}</th>' for h in header)
  body = ''.join('<tr>' + ''.join(f'<td>{html.escape(str(c))}</td>'
                                  for c in row) + '</tr>' for row in rows)
  return f'<table><tr>{head}</tr>{body}</table>'


def _md_table(header, rows) -> str:
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines)


_STYLE = ('body{font-family:sans-serif;max-width:1200px;margin:2em auto;'
          'color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}'
          'td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}'
          'figure{margin:1em 0}figcaption{font-size:90%;color:#555}'
          'img{max-width:100%}.row{display:flex;gap:1em;overflow-x:auto}'
          'pre{background:#f6f6f6;padding:1em;font-size:80%}')


def _html_page(title: str, sections: list[str]) -> str:
  return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>'
          f'{html.escape(title)}</title><style>{_STYLE}</style></head><body>'
          f'<h1>{html.escape(title)}</h1>\n' + '\n'.join(sections)
          + '\n</body></html>\n')


def _html_figure(figure: Figure) -> str:
  return (f'<figure id="{html.escape(figure.name)}"><img alt="'
          f'{html.escape(figure.name)}" src="{figure.data_uri()}">'
          f'<figcaption><b>{html.escape(figure.name)}</b>: '
          f'{html.escape(figure.caption)}</figcaption></figure>')


def report_html(r: Rendered) -> str:
  sections = ['<h2>Run</h2>', _html_table(['field', 'value'], summary(r.config))]
  for title, header, rows in score_tables(r.scores) or [
      ('Scores', ['note'], [['not evaluated: run --mode=eval']])]:
    sections += [f'<h2>{html.escape(title)}</h2>', _html_table(header, rows)]
  sections.append('<h2>Figures</h2>')
  sections += [_html_figure(f) for f in r.figures]
  config_json = r.config.to_json_best_effort(indent=2, sort_keys=True)
  sections.append('<details><summary>Full config</summary><pre>'
                  f'{html.escape(config_json)}</pre></details>')
  return _html_page(f'msdr report: {r.workdir}', sections)


def report_md(r: Rendered) -> str:
  parts = [f'# msdr report: {r.workdir}', '', '## Run', '',
           _md_table(['field', 'value'], summary(r.config)), '']
  for title, header, rows in score_tables(r.scores) or [
      ('Scores', ['note'], [['not evaluated: run --mode=eval']])]:
    parts += [f'## {title}', '', _md_table(header, rows), '']
  parts += ['## Figures', '']
  for f in r.figures:
    parts += [f'![{f.name}]({f.name})', '', f'*{f.name}*: {f.caption}', '']
  return '\n'.join(parts)


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
    out.write(report_html(r))
  with open(os.path.join(workdir, 'report.md'), 'w') as out:
    out.write(report_md(r))
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
  config_rows = _union_rows({lab: dict(summary(r.config))
                             for lab, r in zip(labels, rendered)})
  score_rows = _union_rows({lab: {k: fmt(v) for k, v in r.scores.items()}
                            for lab, r in zip(labels, rendered)})
  header = ['', *labels]
  names = [n for n in FIGURES if any(f.name == n for r in rendered
                                     for f in r.figures)]
  os.makedirs(os.path.join(out_dir, 'compare'), exist_ok=True)

  sections = ['<h2>Runs</h2>', _html_table(header, config_rows),
              '<h2>Scores (eval.json)</h2>', _html_table(header, score_rows),
              '<h2>Figures</h2>']
  md = ['# msdr comparison', '', '## Runs', '', _md_table(header, config_rows),
        '', '## Scores (eval.json)', '', _md_table(header, score_rows), '',
        '## Figures', '']
  for name in names:
    sections.append(f'<h3>{html.escape(name)}</h3><div class="row">')
    md += [f'### {name}', '']
    for label, r in zip(labels, rendered):
      figure = next((f for f in r.figures if f.name == name), None)
      if figure is None:
        continue
      sections.append(_html_figure(dataclasses.replace(figure,
                                                       caption=label)))
      file = f'{label}_{name}'.replace(' ', '_').replace('/', '_')
      with open(os.path.join(out_dir, 'compare', file), 'wb') as out:
        out.write(figure.data)
      md += [f'![{label}](compare/{file})', f'*{label}*', '']
    sections.append('</div>')
  sections.append('<p>Captions of each figure: the runs\' report.html.</p>')
  path = os.path.join(out_dir, 'compare.html')
  with open(path, 'w') as out:
    out.write(_html_page('msdr comparison: ' + ', '.join(labels), sections))
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

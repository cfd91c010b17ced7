"""The text of msdr's reports: score tables, HTML and markdown pages.

`msdr.viz.report` renders a run's figures (`report.Figure`: name, data,
caption, data_uri()) and hands them here with the run's config and
eval.json (`report.Rendered`) to become report.html / report.md; the
comparison page is built from the same tables and figure blocks.
"""

from __future__ import annotations

import html

from msdr.train import stage2 as stage2_job


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


def html_table(header, rows) -> str:
  head = ''.join(f'<th>{html.escape(h)}</th>' for h in header)
  body = ''.join('<tr>' + ''.join(f'<td>{html.escape(str(c))}</td>'
                                  for c in row) + '</tr>' for row in rows)
  return f'<table><tr>{head}</tr>{body}</table>'


def md_table(header, rows) -> str:
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


def html_page(title: str, sections: list[str]) -> str:
  return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>'
          f'{html.escape(title)}</title><style>{_STYLE}</style></head><body>'
          f'<h1>{html.escape(title)}</h1>\n' + '\n'.join(sections)
          + '\n</body></html>\n')


def html_figure(figure) -> str:
  return (f'<figure id="{html.escape(figure.name)}"><img alt="'
          f'{html.escape(figure.name)}" src="{figure.data_uri()}">'
          f'<figcaption><b>{html.escape(figure.name)}</b>: '
          f'{html.escape(figure.caption)}</figcaption></figure>')


def report_html(r) -> str:
  sections = ['<h2>Run</h2>', html_table(['field', 'value'], summary(r.config))]
  for title, header, rows in score_tables(r.scores) or [
      ('Scores', ['note'], [['not evaluated: run --mode=eval']])]:
    sections += [f'<h2>{html.escape(title)}</h2>', html_table(header, rows)]
  sections.append('<h2>Figures</h2>')
  sections += [html_figure(f) for f in r.figures]
  config_json = r.config.to_json_best_effort(indent=2, sort_keys=True)
  sections.append('<details><summary>Full config</summary><pre>'
                  f'{html.escape(config_json)}</pre></details>')
  return html_page(f'msdr report: {r.workdir}', sections)


def report_md(r) -> str:
  parts = [f'# msdr report: {r.workdir}', '', '## Run', '',
           md_table(['field', 'value'], summary(r.config)), '']
  for title, header, rows in score_tables(r.scores) or [
      ('Scores', ['note'], [['not evaluated: run --mode=eval']])]:
    parts += [f'## {title}', '', md_table(header, rows), '']
  parts += ['## Figures', '']
  for f in r.figures:
    parts += [f'![{f.name}]({f.name})', '', f'*{f.name}*: {f.caption}', '']
  return '\n'.join(parts)

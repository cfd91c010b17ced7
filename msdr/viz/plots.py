"""Matplotlib plots of a run, rendered to PNG bytes without a display.

Each function builds a `matplotlib.figure.Figure` on the Agg canvas (no
pyplot, so no global figure state) and returns its PNG encoding; the PNGs
carry no version or time stamps, so the same inputs give the same bytes.
"""

from __future__ import annotations

import io
import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

# metrics.jsonl fields that are not loss terms.
NOT_TERMS = ('stage', 'step', 'steps_per_second', 'images_per_second',
             'param_norm', 'grad_norm')


def to_png(fig: Figure) -> bytes:
  FigureCanvasAgg(fig)
  out = io.BytesIO()
  fig.savefig(out, format='png', dpi=100, metadata={'Software': None})
  return out.getvalue()


def mi_matrix(mi, code_labels, factor_names) -> bytes:
  """Heat map of the code x factor mutual information.

  Args:
    mi: float [K, F], normalised MI (MI / H(factor), in [0, 1]).
    code_labels: K row labels.
    factor_names: F column labels.
  """
  mi = np.asarray(mi, np.float64)
  k, f = mi.shape
  fig = Figure(figsize=(max(4.0, 0.55 * f + 2.0), max(3.0, 0.4 * k + 1.5)))
  ax = fig.add_subplot()
  image = ax.imshow(mi, cmap='viridis', vmin=0.0, vmax=max(1e-6, mi.max()),
                    aspect='auto')
  ax.set_xticks(range(f), [str(n) for n in factor_names], rotation=45,
                ha='right')
  ax.set_yticks(range(k), [str(c) for c in code_labels])
  ax.set_xlabel('factor')
  ax.set_ylabel('code dimension')
  if f <= 12:  # values readable only on small matrices
    for i in range(k):
      for j in range(f):
        ax.text(j, i, f'{mi[i, j]:.2f}', ha='center', va='center',
                fontsize=7, color='w' if mi[i, j] < 0.6 * mi.max() else 'k')
  fig.colorbar(image, ax=ax, label='MI / H(factor)')
  fig.tight_layout()
  return to_png(fig)


def kl_per_dim(kl, dead_kl: float) -> bytes:
  """Bar chart of the mean KL(q(c_j | x) || N(0, 1)) of each code dimension;
  dimensions under `dead_kl` nats are drawn grey (collapsed to the prior)."""
  kl = np.asarray(kl, np.float64)
  fig = Figure(figsize=(max(4.0, 0.4 * len(kl) + 1.5), 3.0))
  ax = fig.add_subplot()
  colors = ['tab:blue' if v >= dead_kl else 'tab:gray' for v in kl]
  ax.bar(range(len(kl)), kl, color=colors)
  ax.set_xticks(range(len(kl)), [f'c{i}' for i in range(len(kl))])
  ax.set_ylabel('KL (nats)')
  ax.set_title(f'{int((kl >= dead_kl).sum())} of {len(kl)} dimensions active '
               f'(KL >= {dead_kl:g})', fontsize=10)
  fig.tight_layout()
  return to_png(fig)


def curves(records) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
  """metrics.jsonl records -> {stage: {term: (steps, values)}}, sorted by
  step; a step logged twice (a resumed run) keeps its last record."""
  last = {}
  for record in records:
    last[(record['stage'], int(record['step']))] = record
  out = {}
  for (stage, step), record in sorted(last.items()):
    terms = out.setdefault(stage, {})
    for name, value in record.items():
      if name not in NOT_TERMS:
        steps, values = terms.setdefault(name, ([], []))
        steps.append(step)
        values.append(float(value))
  return {stage: {name: (np.asarray(s), np.asarray(v))
                  for name, (s, v) in terms.items()}
          for stage, terms in out.items()}


def training_curves(records, columns: int = 4) -> bytes:
  """One panel per (stage, loss term) over steps, a row block per stage."""
  by_stage = curves(records)
  panels = [(stage, name, data) for stage, terms in by_stage.items()
            for name, data in sorted(terms.items())]
  rows = max(1, sum(math.ceil(len(t) / columns) for t in by_stage.values()))
  fig = Figure(figsize=(3.2 * columns, 2.4 * rows))
  row = 0
  for stage, terms in by_stage.items():
    for i, (name, (steps, values)) in enumerate(sorted(terms.items())):
      r, c = divmod(i, columns)
      ax = fig.add_subplot(rows, columns, (row + r) * columns + c + 1)
      ax.plot(steps, values, lw=1.2)
      ax.set_title(f'{stage}: {name}', fontsize=9)
      ax.tick_params(labelsize=7)
      if r == math.ceil(len(terms) / columns) - 1:
        ax.set_xlabel('step', fontsize=8)
    row += math.ceil(len(terms) / columns)
  if not panels:
    fig.add_subplot().text(0.5, 0.5, 'no metrics logged', ha='center')
  fig.tight_layout()
  return to_png(fig)

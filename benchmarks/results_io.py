"""Where and how the benchmark scripts write their JSON reports."""

from __future__ import annotations

import json
import os


def write_report(report: dict, name: str, out: str | None = None,
                 **json_kwargs) -> str:
  """Writes `report` to `out`, by default benchmarks/results/`name`, and
  says where; returns the path."""
  out = out or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            'results', name)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, 'w') as f:
    json.dump(report, f, indent=2, **json_kwargs)
  print(f'wrote {out}')
  return out

"""Config sections with defaults (light: no JAX import, configs use it)."""

from __future__ import annotations

from msdr.errors import UserInputError


def section_options(config, section: str, defaults: dict) -> dict:
  """`defaults` updated with the fields of `config.<section>` they name (a
  run saved before the section existed gets the defaults)."""
  options = dict(defaults)
  if section in config:
    options.update({k: config[section][k] for k in defaults
                    if k in config[section]})
  return options


# config.report: the figures and report.html of a run (msdr.viz.report).
REPORT_DEFAULTS = dict(
    after_training=True,  # write the report at the end of --mode=train
    num_images=3,  # held-out images of the traversals
    num_values=9,  # values of each swept dimension
    traversal='prior',  # 'prior': +-traversal_range; 'posterior': the
    traversal_range=2.0,  # range of the posterior means over the codes
    num_reconstructions=8,
    num_samples=8,
    num_codes=2000,  # held-out images behind mi_matrix and kl_per_dim
    temperature=1.0,  # of stage 2's prior in samples.png
    dead_kl=0.01,  # nats: a dimension under it is collapsed to the prior
)
TRAVERSALS = ('prior', 'posterior')


def report_options(config) -> dict:
  """config.report's fields over REPORT_DEFAULTS, checked."""
  opts = section_options(config, 'report', REPORT_DEFAULTS)
  for name in ('num_images', 'num_values', 'num_reconstructions',
               'num_samples', 'num_codes'):
    value = opts[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise UserInputError(f'report.{name} must be a positive int; got '
                           f'{value!r}')
  if opts['num_values'] < 2:
    raise UserInputError('report.num_values must be at least 2')
  if opts['traversal'] not in TRAVERSALS:
    raise UserInputError(f'report.traversal must be one of {TRAVERSALS}; '
                         f'got {opts["traversal"]!r}')
  for name in ('traversal_range', 'temperature'):
    if not float(opts[name]) > 0:
      raise UserInputError(f'report.{name} must be positive; got '
                           f'{opts[name]!r}')
  return opts

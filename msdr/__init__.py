"""msdr: multi-stage disentangled representation learning in JAX."""

__version__ = '0.1.0'


def load(workdir: str, config=None):
  """The trained multi-stage model of `workdir` (`msdr.multistage.load`)."""
  from msdr import multistage  # pylint: disable=g-import-not-at-top
  return multistage.load(workdir, config)

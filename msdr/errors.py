"""Errors that msdr reports to the user as one clear message.

`UserInputError` marks a problem with what the user asked for (a config value, a
dataset name, an array's shape, data that is not prepared), as opposed to a bug.
The CLI prints such an error in one line and exits non-zero without a traceback;
from Python it is an ordinary `ValueError`.
"""


class UserInputError(ValueError):
  """A bad input: unknown name, wrong shape, out-of-range value, missing data."""

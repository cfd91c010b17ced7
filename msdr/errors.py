"""Errors that msdr reports to the user as one clear message.

`UserInputError` marks a problem with what the user asked for (a config value, a
dataset name, an array's shape, data that is not prepared), as opposed to a bug.
The CLI prints such an error in one line and exits non-zero without a traceback;
from Python it is an ordinary `ValueError`.
"""


class UserInputError(ValueError):
  """A bad input: unknown name, wrong shape, out-of-range value, missing data."""


class TrainingError(RuntimeError):
  """A run that cannot go on (e.g. a non-finite loss); the message says where
  it stopped and what was kept."""


class Preempted(Exception):
  """SIGTERM/SIGINT arrived; a checkpoint was saved and the run stopped.
  Rerunning the same command resumes from it."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum

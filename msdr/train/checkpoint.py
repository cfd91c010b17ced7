"""Checkpoints behind one small class wrapping orbax's `CheckpointManager`.

* Atomic: orbax writes into a temporary directory and renames it when the
  save is complete, so a kill mid-save leaves the previous checkpoints intact.
* Async: `save` returns once the arrays are copied off the devices; `wait`
  (called by `close`) blocks until the files are on disk.
* Keep-last-K: older steps are deleted after each successful save.
* Restore against an abstract, sharded tree (`jax.ShapeDtypeStruct`s with
  shardings), so every array comes back where the train step expects it.
* A latest checkpoint that cannot be read (corrupt, truncated, half-copied)
  is reported, moved aside to `<directory>-corrupt/<step>` and the next older
  one is tried.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from absl import logging
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores one train state under `directory`.

  Args:
    directory: e.g. `<workdir>/checkpoints/stage1` (created if needed).
    keep: how many of the newest checkpoints to keep.
    async_save: write in a background thread (orbax's default).
  """

  def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.keep = keep
    self._async = async_save
    self._manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=self.keep, create=True,
        enable_async_checkpointing=self._async)
    return ocp.CheckpointManager(self.directory, options=options)

  @property
  def steps(self) -> list[int]:
    """Steps of the complete checkpoints on disk, oldest first."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    steps = self.steps
    return steps[-1] if steps else None

  def save(self, step: int, state: Any) -> None:
    """Saves `state` as checkpoint `step` (a no-op if it already exists)."""
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def restore(self, abstract_state: Any) -> tuple[Any, int] | None:
    """The newest readable checkpoint as `(state, step)`, or None.

    Args:
      abstract_state: the state's tree of `jax.ShapeDtypeStruct`s with the
        shardings to restore onto.
    """
    self.wait()
    for step in reversed(self.steps):
      try:
        state = self._manager.restore(
            step, args=ocp.args.StandardRestore(abstract_state))
      except Exception as e:  # pylint: disable=broad-except
        # Orbax raises many types for damaged files (ValueError, OSError,
        # tensorstore errors...): any failure here means 'unreadable'.
        self._set_aside(step, e)
        continue
      return state, step
    return None

  def _set_aside(self, step: int, error: Exception) -> None:
    aside = os.path.join(self.directory + '-corrupt', f'{step}-{int(time.time())}')
    message = (f'checkpoint {step} in {self.directory} is unreadable '
               f'({type(error).__name__}: {str(error)[:200]}); moved to '
               f'{aside}, trying the previous one')
    logging.warning(message)
    print(f'warning: {message}', flush=True)
    os.makedirs(os.path.dirname(aside), exist_ok=True)
    shutil.move(os.path.join(self.directory, str(step)), aside)
    self._manager.close()
    self._manager = self._open()

  def wait(self) -> None:
    """Blocks until every pending save is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self.wait()
    self._manager.close()

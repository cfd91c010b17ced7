"""The train loop every stage runs: sharded state, pure step, checkpoints.

A stage is described by a `Stage` (its parameter init, its loss, its
optimizer and its batches); `train` runs it to `stage.steps`:

* State is a plain pytree `{'step', 'params', 'opt_state'}`, created already
  replicated over the mesh (`jax.eval_shape`, then a jit with
  `out_shardings`).
* `make_train_step` gives the pure step `(state, batch, key) -> (state,
  metrics)`; it is jitted once with the state donated, the batch split over
  `data` and everything else replicated, so the compiler inserts the gradient
  all-reduce. The key passed in is the stage's; the step folds in
  `state['step']` and the loss splits it per use.
* PRNG: root `jax.random.key(seed)` -> fold in the stage's index -> split
  into (init key, train key) -> fold in the step. Batches depend only on
  (seed, step) (`msdr.data.pipeline`). So a resumed run repeats exactly the
  keys and batches an uninterrupted one would have used.
* Resume order: the newest readable checkpoint in `<workdir>/checkpoints/
  <stage>`, else a fresh init. Checkpoints are written every
  `checkpoint_every` steps, at the end and when SIGTERM/SIGINT arrives (then
  `Preempted` is raised after the save). Multi-host jobs stop at the sync
  point of JAX's preemption service instead, the same step on every host.
* Metrics stay on the device until a log or checkpoint step, then come back
  in one transfer; a non-finite term raises `TrainingError` naming the first
  bad step and term, before anything is saved, so the newest checkpoint is
  the last good one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import optax

from msdr import sharding as sharding_lib
from msdr.errors import Preempted, TrainingError
from msdr.train import checkpoint as checkpoint_lib
from msdr.train import logger as logger_lib

# Folded into the root key, one per stage, so stages never share keys.
STAGE_INDEX = {'stage1': 1, 'stage2': 2}

State = dict
LossFn = Callable[[Any, dict, jax.Array, jax.Array], tuple[jax.Array, dict]]
# (params, opt_state, batch, key, step) -> (params, opt_state, objective, terms)
UpdateFn = Callable[[Any, Any, dict, jax.Array, jax.Array],
                    tuple[Any, Any, jax.Array, dict]]


@dataclasses.dataclass
class Stage:
  """One stage of training.

  Attributes:
    name: 'stage1' or 'stage2' (checkpoint dir, log field, key stream).
    init: key -> params.
    loss: (params, batch, key, step) -> (objective, dict of scalar terms).
    optimizer: the optax transformation of all params.
    batches: step -> the global batch of that step, sharded on `data`.
    steps: train until state['step'] == steps.
    batch_size: images per step (for images/s).
    update: optional custom update replacing "gradient of `loss`, then
      `optimizer`" (alternating GAN updates, EM); `optimizer.init` still
      makes its opt_state and `loss` may be None.
  """
  name: str
  init: Callable[[jax.Array], Any]
  loss: LossFn | None
  optimizer: optax.GradientTransformation
  batches: Callable[[int], dict]
  steps: int
  batch_size: int
  update: UpdateFn | None = None


def stage_keys(seed: int, name: str) -> tuple[jax.Array, jax.Array]:
  """(init key, train key) of stage `name` for `seed`."""
  stage_key = jax.random.fold_in(jax.random.key(seed), STAGE_INDEX[name])
  init_key, train_key = jax.random.split(stage_key)
  return init_key, train_key


def gradient_update(loss: LossFn,
                    optimizer: optax.GradientTransformation) -> UpdateFn:
  """The usual update: differentiate `loss`, apply `optimizer`."""
  def update(params, opt_state, batch, key, step):
    grad_fn = jax.value_and_grad(loss, has_aux=True)
    (objective, terms), grads = grad_fn(params, batch, key, step)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, objective, dict(
        terms, grad_norm=optax.tree.norm(grads))
  return update


def make_train_step(loss: LossFn | None,
                    optimizer: optax.GradientTransformation | None = None,
                    update: UpdateFn | None = None):
  """The pure step `(state, batch, key) -> (state, metrics)`.

  `update` (default: `gradient_update(loss, optimizer)`) gets the key with
  the step folded in. Metrics are every term it returns plus 'objective'
  (what is optimised) and 'param_norm'; the gradient update adds
  'grad_norm'.
  """
  update = update or gradient_update(loss, optimizer)

  def train_step(state: State, batch: dict, key: jax.Array):
    step = state['step']
    params, opt_state, objective, terms = update(
        state['params'], state['opt_state'], batch,
        jax.random.fold_in(key, step), step)
    metrics = dict(terms, objective=objective,
                   param_norm=optax.tree.norm(params))
    return {'step': step + 1, 'params': params, 'opt_state': opt_state}, metrics
  return train_step


def _init_fn(stage: Stage):
  def init(key):
    params = stage.init(key)
    return {'step': jnp.zeros((), jnp.int32), 'params': params,
            'opt_state': stage.optimizer.init(params)}
  return init


def abstract_state(stage: Stage, key: jax.Array, mesh) -> Any:
  """The state's shapes and dtypes, replicated over `mesh` (nothing runs)."""
  replicated = sharding_lib.replicated(mesh)
  return jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
      jax.eval_shape(_init_fn(stage), key))


def init_state(stage: Stage, key: jax.Array, mesh) -> tuple[State, Any]:
  """(fresh state, abstract state), both replicated over `mesh`."""
  abstract = abstract_state(stage, key, mesh)
  shardings = jax.tree.map(lambda s: s.sharding, abstract)
  return jax.jit(_init_fn(stage), out_shardings=shardings)(key), abstract


def compile_step(stage: Stage, abstract: Any, mesh):
  """The jitted, donated train step with the mesh's shardings."""
  replicated = sharding_lib.replicated(mesh)
  shardings = jax.tree.map(lambda _: replicated, abstract)
  return jax.jit(make_train_step(stage.loss, stage.optimizer, stage.update),
                 in_shardings=(shardings, sharding_lib.data_sharding(mesh),
                               replicated),
                 out_shardings=(shardings, replicated),
                 donate_argnums=0)


def restore_latest(stage: Stage, workdir: str, seed: int, mesh):
  """(state, step) of the newest readable checkpoint of `stage` in
  `workdir`, restored onto the mesh, or None when there is none."""
  init_key, _ = stage_keys(seed, stage.name)
  ckpt = checkpoint_lib.Checkpointer(
      os.path.join(workdir, 'checkpoints', stage.name))
  try:
    return ckpt.restore(abstract_state(stage, init_key, mesh))
  finally:
    ckpt.close()


@contextlib.contextmanager
def _preemption_signals():
  """Yields a dict whose 'signum' is set when SIGTERM or SIGINT arrives.

  Multi-host jobs leave SIGTERM to JAX's preemption service instead (see
  `_stop_signal`): every host must stop at the same step.
  """
  caught = {'signum': None}
  if (threading.current_thread() is not threading.main_thread()
      or jax.process_count() > 1):
    yield caught  # signal handlers can only be set from the main thread
    return
  def handler(signum, frame):  # pylint: disable=unused-argument
    caught['signum'] = signum
  previous = {s: signal.signal(s, handler)
              for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield caught
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def _stop_signal(step: int, caught: dict) -> int | None:
  """The signal to stop on after `step`, or None to go on."""
  if jax.process_count() > 1:
    try:
      if multihost_utils.reached_preemption_sync_point(step):
        return signal.SIGTERM
    except RuntimeError:  # the preemption service is not enabled
      pass
  return caught['signum']


def _first_nonfinite(pending: list[tuple[int, dict]]):
  for step, metrics in pending:
    bad = sorted(k for k, v in metrics.items() if not math.isfinite(float(v)))
    if bad:
      return step, bad, metrics
  return None


def train(stage: Stage, *, workdir: str, seed: int, mesh,
          checkpoint_every: int, log_every: int,
          keep_checkpoints: int = 3) -> State:
  """Trains `stage` to `stage.steps`, resuming from its checkpoints.

  Returns:
    The final state (replicated over `mesh`).

  Raises:
    TrainingError: a non-finite loss term (the message names the step and
      the term; the newest checkpoint is the last good one).
    Preempted: SIGTERM/SIGINT arrived; the state was checkpointed first.
  """
  init_key, train_key = stage_keys(seed, stage.name)
  abstract = abstract_state(stage, init_key, mesh)
  ckpt = checkpoint_lib.Checkpointer(
      os.path.join(workdir, 'checkpoints', stage.name), keep=keep_checkpoints)
  restored = ckpt.restore(abstract)
  if restored is not None:
    state, start = restored
    print(f'{stage.name}: resumed from checkpoint {start}', flush=True)
  else:
    state, _ = init_state(stage, init_key, mesh)
    start = 0
  if start >= stage.steps:
    ckpt.close()
    return state

  step_fn = compile_step(stage, abstract, mesh)
  log = logger_lib.MetricLogger(workdir, stage.name, stage.steps, start)
  pending: list[tuple[int, dict]] = []
  clock = {'time': time.perf_counter(), 'step': start}

  def flush(done: int, write: bool) -> None:
    """Checks every pending step's metrics and logs those of `done`."""
    values = jax.device_get(pending)
    pending.clear()
    bad = _first_nonfinite(values)
    if bad is not None:
      step, names, metrics = bad
      shown = ', '.join(f'{n}={float(metrics[n])}' for n in names)
      kept = ckpt.latest_step()
      raise TrainingError(
          f'{stage.name}: non-finite loss at step {step} ({shown}); stopped. '
          + (f'The last good checkpoint, step {kept}, is kept in '
             f'{ckpt.directory}.' if kept is not None
             else 'No checkpoint had been written yet.'))
    if write and values:
      now = time.perf_counter()
      rate = (done - clock['step']) / max(now - clock['time'], 1e-9)
      clock.update(time=now, step=done)
      scalars = {k: float(v) for k, v in values[-1][1].items()}
      scalars.update(steps_per_second=rate,
                     images_per_second=rate * stage.batch_size)
      log.write(done, scalars)

  try:
    with _preemption_signals() as caught:
      for step in range(start, stage.steps):
        state, metrics = step_fn(state, stage.batches(step), train_key)
        done = step + 1
        pending.append((done, metrics))
        log.advance()
        is_log = done % log_every == 0 or done == stage.steps
        is_save = done % checkpoint_every == 0 or done == stage.steps
        signum = _stop_signal(done, caught)
        if is_log or is_save or signum is not None:
          flush(done, write=is_log)
        if is_save or signum is not None:
          ckpt.save(done, state)
        if signum is not None and done < stage.steps:
          ckpt.wait()
          name = signal.Signals(signum).name
          raise Preempted(
              f'{stage.name}: {name} at step {done}; checkpoint {done} saved '
              f'in {ckpt.directory}. Rerun the same command to resume.',
              signum)
  finally:
    log.close()
    ckpt.close()
  return state

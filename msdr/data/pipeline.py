"""The input pipeline: deterministic, resumable, sharded batches.

A batch is a pure function of (seed, step): `Pipeline.batch(step)` gives the
same images at step k whether the run started at 0 or resumed at k, and on any
number of devices (JAX's partitionable threefry makes random draws independent
of the sharding).

* Procedural datasets render on the devices inside one jitted function whose
  output is already split over the mesh's `data` axis: no host round-trip.
  `Pipeline.batch_fn` is that function unjitted, `(key, step) -> batch`, for a
  train step that renders its own batch.
* Host datasets (tfds) walk a fresh permutation of the records each epoch,
  seeded by (seed, epoch); every device's shard is read on its own host and
  assembled into one global array. `batch(k)` starts reading step k + 1 in a
  background thread before it returns, so a train loop asking for
  consecutive steps overlaps reading with training (`iterate` likewise).

Batches are dicts: `image` float32 [B, H, W, C] in [0, 1], `factors` int32
[B, F].
"""

from __future__ import annotations

import concurrent.futures
import functools
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from msdr import sharding as sharding_lib
from msdr.data import base

# Folded into the root key so the data stream never shares a key with models.
DATA_STREAM = 0x6461746  # 'data'


def data_key(seed: int) -> jax.Array:
  return jax.random.fold_in(jax.random.key(seed), DATA_STREAM)


def _render_batch(dataset: base.GroundTruthDataset, batch_size: int,
                  key: jax.Array, step) -> dict:
  images, factors = dataset.sample(jax.random.fold_in(key, step), batch_size)
  return {'image': images, 'factors': factors}


class Pipeline:
  """Batches of `dataset` for step k = 0, 1, ..., sharded over `mesh`."""

  def __init__(self, dataset: base.GroundTruthDataset, batch_size: int,
               seed: int, mesh: jax.sharding.Mesh | None = None):
    self.dataset = dataset
    self.batch_size = batch_size
    self.seed = seed
    self.mesh = mesh if mesh is not None else sharding_lib.make_mesh()
    sharding_lib.check_batch_size(batch_size, self.mesh)
    self.sharding = sharding_lib.data_sharding(self.mesh)
    self.key = data_key(seed)
    if dataset.jittable:
      self.batch_fn = functools.partial(_render_batch, dataset, batch_size)
      self._render = jax.jit(self.batch_fn, out_shardings=self.sharding)
    else:
      self.batch_fn = None
      self._permutations = {}
      self._pool = None
      self._ahead = None  # (step, future) read in the background

  def batch(self, step: int) -> dict:
    """The global batch of `step`, sharded along `data`."""
    if self.dataset.jittable:
      return self._render(self.key, jnp.int32(step))
    if self._pool is None:
      self._pool = concurrent.futures.ThreadPoolExecutor(
          1, thread_name_prefix='msdr-prefetch')
    if self._ahead is not None and self._ahead[0] == step:
      ready = self._ahead[1].result()
    else:
      ready = self._host_batch(step)
    self._ahead = (step + 1, self._pool.submit(self._host_batch, step + 1))
    return ready

  def iterate(self, start_step: int = 0) -> Iterator[dict]:
    """Batches of steps start_step, start_step + 1, ... without end."""
    step = start_step
    while True:
      yield self.batch(step)
      step += 1

  # -- host datasets -------------------------------------------------------------

  def record_indices(self, step: int) -> np.ndarray:
    """Records of the global batch of `step`: epoch-wise shuffled, no repeats
    within an epoch."""
    n = self.dataset.num_examples
    position = step * self.batch_size + np.arange(self.batch_size,
                                                  dtype=np.int64)
    epochs, offsets = np.divmod(position, n)
    out = np.empty(self.batch_size, np.int64)
    for epoch in np.unique(epochs):
      mask = epochs == epoch
      out[mask] = self._permutation(int(epoch))[offsets[mask]]
    return out

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch not in self._permutations:
      rng = np.random.default_rng((self.seed, epoch))
      self._permutations = {
          epoch: rng.permutation(self.dataset.num_examples)}
    return self._permutations[epoch]

  def _host_batch(self, step: int) -> dict:
    indices = self.record_indices(step)
    shapes = {'image': (self.batch_size,) + self.dataset.observation_shape,
              'factors': (self.batch_size, self.dataset.num_factors)}
    rows = lambda index: (index[0].start or 0, index[0].stop or self.batch_size)
    # Read each row range held by this process's devices once.
    local = {}
    for index in self.sharding.addressable_devices_indices_map(
        shapes['image']).values():
      if rows(index) not in local:
        start, stop = rows(index)
        images, factors = self.dataset.get_examples(indices[start:stop])
        local[rows(index)] = {'image': images, 'factors': factors}
    return {
        name: jax.make_array_from_callback(
            shape, self.sharding,
            lambda index, name=name: local[rows(index)][name])
        for name, shape in shapes.items()
    }

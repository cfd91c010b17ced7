"""The device mesh: batches split along `data`, parameters replicated.

One code path for 1 CPU, N fake CPU devices, GPUs and multi-host TPU slices:
jit with `NamedSharding`s over a one-axis mesh of every device of every process.
"""

from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from msdr.errors import UserInputError

DATA_AXIS = 'data'


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A one-axis mesh named `data` over the first `num_devices` devices."""
  devices = jax.devices()
  if num_devices is not None:
    if not 1 <= num_devices <= len(devices):
      raise UserInputError(
          f'asked for {num_devices} devices; {len(devices)} are available.')
    devices = devices[:num_devices]
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over `data`, the rest whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh: Mesh, what: str = 'batch_size'):
  """Raises a clear error unless the batch splits evenly over the mesh."""
  n = mesh.devices.size
  if not isinstance(batch_size, int) or batch_size <= 0:
    raise UserInputError(f'{what} must be a positive int; got {batch_size!r}.')
  if batch_size % n:
    raise UserInputError(
        f'{what}={batch_size} does not split over {n} devices; use a multiple '
        f'of {n}.')

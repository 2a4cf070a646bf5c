"""Device mesh and shardings: data parallel over every device of every host.

Parameters, optimizer state and masks are replicated; batches are split along the mesh axis 'data'.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = 'data'
DISTRIBUTED_MODES = ('auto', 'yes', 'no')


def launched_as_cluster(environ: dict[str, str] | None = None) -> bool:
  """Whether the environment says this process is one of several that form one run: a coordinator
  address for JAX, or a SLURM / Open MPI launch of more than one task."""
  environ = os.environ if environ is None else environ
  if environ.get('JAX_COORDINATOR_ADDRESS'):
    return True
  for variable in ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
    try:
      if int(environ.get(variable, '1')) > 1:
        return True
    except ValueError:
      pass
  return False


def initialize_distributed(mode: str = 'auto', coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None) -> bool:
  """Joins this process to the others of a multi-host run with `jax.distributed.initialize`, before
  anything else touches the devices. 'yes': always (on a Cloud TPU pod slice JAX finds the
  coordinator by itself); 'no': never; 'auto': when an address is given or `launched_as_cluster()`.
  Returns whether it initialized."""
  if mode not in DISTRIBUTED_MODES:
    raise ValueError(f'distributed mode must be one of {DISTRIBUTED_MODES}, got {mode!r}')
  if mode == 'no' or (mode == 'auto' and not coordinator_address and not launched_as_cluster()):
    return False
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)
  return True


def create_mesh(num_devices: int = 0) -> Mesh:
  """A one-axis ('data') mesh over the first `num_devices` devices (0: all devices of all hosts)."""
  devices = jax.devices()
  if num_devices < 0 or num_devices > len(devices):
    raise ValueError(f'parallel.num_devices must be between 0 (all) and {len(devices)}, got {num_devices}')
  if num_devices:
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
  """Axis `batch_axis` of the array is split over the 'data' mesh axis."""
  return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, field: str = 'training.batch_size') -> None:
  """Raises a ValueError naming `field` when the global batch does not divide over the devices."""
  devices = mesh.devices.size
  if batch_size % devices:
    raise ValueError(f'{field}={batch_size} does not divide over the {devices} devices of the mesh; '
                     f'use a multiple of {devices} or set parallel.num_devices')


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Places a copy of `tree` on every device of the mesh (never aliasing the caller's buffers, which
  the train step may donate)."""
  return jax.device_put(tree, replicated(mesh), may_alias=False)


def put_batch(array: np.ndarray, mesh: Mesh, batch_axis: int = 0) -> jax.Array:
  """Places a global batch that every host holds whole (e.g. example indices) into one array split
  along `batch_axis`: each host copies only the shards of its own devices."""
  sharding = batch_sharded(mesh, batch_axis)
  if jax.process_count() == 1:
    return jax.device_put(array, sharding)
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def put_local_batch(array: np.ndarray, mesh: Mesh, batch_axis: int = 0) -> jax.Array:
  """Assembles each host's slice of a batch (the hosts' slices in process order along `batch_axis`)
  into one global sharded array — for pipelines where every host reads only its own examples."""
  return jax.make_array_from_process_local_data(batch_sharded(mesh, batch_axis), array)


def to_host(tree: Any) -> Any:
  """Fetches a (replicated) device tree to numpy on every host."""
  def fetch(leaf):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(leaf)
  return jax.tree_util.tree_map(fetch, tree)

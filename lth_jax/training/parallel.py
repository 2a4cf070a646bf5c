"""Device mesh and shardings: a population of runs over every device of every host.

The mesh has two axes, ('members', 'data'). A population (several same-shaped training runs trained
by one vmapped program) is split over 'members'; each member's batch is split over 'data', and its
parameters, optimizer state and mask are replicated along 'data'. One run alone is the mesh 1 x N:
plain data parallelism, parameters replicated. `member_layout` chooses the shape for a population.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MEMBERS_AXIS = 'members'
DATA_AXIS = 'data'
DISTRIBUTED_MODES = ('auto', 'yes', 'no')


def launched_as_cluster(environ: Mapping[str, str] | None = None) -> bool:
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


def initialize_distributed(
    mode: str = 'auto',
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
  """Joins this process to the others of a multi-host run with `jax.distributed.initialize`, before
  anything else touches the devices. 'yes': always (on a Cloud TPU pod slice JAX finds the
  coordinator by itself); 'no': never; 'auto': when an address is given or `launched_as_cluster()`.
  Returns whether it initialized."""
  if mode not in DISTRIBUTED_MODES:
    raise ValueError(f'distributed mode must be one of {DISTRIBUTED_MODES}, got {mode!r}')
  if mode == 'no' or (mode == 'auto' and not coordinator_address and not launched_as_cluster()):
    return False
  jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
  )
  return True


def _mesh_devices(num_devices: int) -> list[Any]:
  devices = jax.devices()
  if num_devices < 0 or num_devices > len(devices):
    raise ValueError(f'parallel.num_devices must be between 0 (all) and {len(devices)}, got {num_devices}')
  return devices[:num_devices] if num_devices else devices


def _local_device_counts(devices: list[Any]) -> dict[int, int]:
  counts: dict[int, int] = {}
  for device in devices:
    counts[device.process_index] = counts.get(device.process_index, 0) + 1
  return counts


def create_mesh(num_devices: int = 0, members: int = 1) -> Mesh:
  """A ('members', 'data') mesh of shape members x (devices / members) over the first `num_devices`
  devices (0: all devices of all hosts).

  When `members` divides every host's device count, each row of the mesh (one group of members) takes
  an equal share of every host's devices, so the 'data' axis spans the hosts in process order and each
  host holds a contiguous slice of every member's batch (what the streaming pipeline reads). Otherwise
  the devices fill the mesh row by row in process order (members spread over hosts).
  """
  return mesh_of(_mesh_devices(num_devices), members)


def mesh_of(devices: Sequence[Any], members: int = 1) -> Mesh:
  """The ('members', 'data') mesh of `create_mesh` over the given devices (attached or not: a TPU
  topology's devices compile ahead of time)."""
  devices = list(devices)
  if members < 1 or len(devices) % members:
    raise ValueError(f'{members} member groups do not divide the {len(devices)} devices of the mesh')
  per_host = _local_device_counts(devices)
  if all(count % members == 0 for count in per_host.values()):
    by_host = [[device for device in devices if device.process_index == process] for process in sorted(per_host)]
    rows = [
        [device for host in by_host for device in host[row * len(host) // members : (row + 1) * len(host) // members]]
        for row in range(members)
    ]
    grid = np.empty((members, len(devices) // members), dtype=object)
    for row, row_devices in enumerate(rows):
      for column, device in enumerate(row_devices):
        grid[row, column] = device
  else:
    grid = np.asarray(devices, dtype=object).reshape(members, len(devices) // members)
  return Mesh(grid, (MEMBERS_AXIS, DATA_AXIS))


def data_size(mesh: Mesh) -> int:
  """How many devices share each member's batch (the size of the 'data' axis)."""
  return int(mesh.shape.get(DATA_AXIS, 1))


def member_groups(mesh: Mesh) -> int:
  """How many groups of members the mesh holds side by side (the size of the 'members' axis)."""
  return int(mesh.shape.get(MEMBERS_AXIS, 1))


def member_layout(
    num_members: int, num_devices: int, batch_size: int, local_device_counts: tuple[int, ...] | None = None
) -> tuple[int, int] | None:
  """(member groups m, member slots) for a population of `num_members` runs on `num_devices` devices
  with a global batch of `batch_size` per member, or None when no layout fits.

  Each member's batch is split over d = num_devices / m devices, so d must divide the batch. The
  population is grouped, several members per row of the mesh, and padded to a multiple of m only
  where nothing else fits (a batch of 60 on 8 devices): among the m that divide the device count
  (and, with `local_device_counts`, every host's device count), the one that needs the fewest
  member slots (real members plus padding), and among those the largest m (the least communication
  inside a member). 8 members on 8 devices: 8 x 1; 4: 4 x 2; 1: 1 x 8; 6 with batch 64: 2 x 4 (three
  members per row); 5 with batch 60: 2 x 4 with one padding member.
  """
  best = None
  for groups in range(1, num_devices + 1):
    if num_devices % groups or batch_size % (num_devices // groups):
      continue
    if local_device_counts and any(count % groups for count in local_device_counts):
      continue
    slots = -(-num_members // groups) * groups
    if best is None or slots < best[1] or (slots == best[1] and groups > best[0]):
      best = (groups, slots)
  return best


def member_sharded(mesh: Mesh) -> NamedSharding:
  """Axis 0 of the array (the member axis of a population) is split over the 'members' mesh axis;
  the rest is replicated along 'data'."""
  return NamedSharding(mesh, PartitionSpec(MEMBERS_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, batch_axis: int = 0, member_axis: int | None = None) -> NamedSharding:
  """Axis `batch_axis` of the array is split over the 'data' mesh axis (and axis `member_axis`, the
  members of a population, over 'members')."""
  spec: list[Any] = [None] * batch_axis + [DATA_AXIS]
  if member_axis is not None:
    spec[member_axis] = MEMBERS_AXIS
  return NamedSharding(mesh, PartitionSpec(*spec))


def check_batch_size(batch_size: int, mesh: Mesh, field: str = 'training.batch_size') -> None:
  """Raises a ValueError naming `field` when the global batch does not divide over the devices that
  share each member's batch."""
  devices = data_size(mesh)
  if batch_size % devices:
    raise ValueError(
        f'{field}={batch_size} does not divide over the {devices} devices of the mesh; '
        f'use a multiple of {devices} or set parallel.num_devices'
    )


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Places a copy of `tree` on every device of the mesh (never aliasing the caller's buffers, which
  the train step may donate)."""
  return jax.device_put(tree, replicated(mesh), may_alias=False)


def put_member_sharded(tree: Any, mesh: Mesh) -> Any:
  """Places a population tree (leading member axis) on the mesh, members split over 'members' (never
  aliasing the caller's buffers)."""
  sharding = member_sharded(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding, may_alias=False)

  def put(leaf):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      return jax.device_put(leaf, sharding, may_alias=False)
    leaf = np.asarray(leaf)
    return jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])

  return jax.tree_util.tree_map(put, tree)


def put_batch(array: np.ndarray, mesh: Mesh, batch_axis: int = 0, member_axis: int | None = None) -> jax.Array:
  """Places a global batch that every host holds whole (e.g. example indices) into one array split
  along `batch_axis` (and `member_axis` over the members): each host copies only its devices' shards."""
  sharding = batch_sharded(mesh, batch_axis, member_axis)
  if jax.process_count() == 1:
    return jax.device_put(array, sharding)
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def put_local_batch(array: np.ndarray, mesh: Mesh, batch_axis: int = 0, member_axis: int | None = None) -> jax.Array:
  """Assembles each host's slice of a batch (the hosts' slices in process order along `batch_axis`;
  every member whole along `member_axis`) into one global sharded array — for pipelines where every
  host reads only its own examples (the mesh's 'data' axis must span the hosts, see `create_mesh`)."""
  sharding = batch_sharded(mesh, batch_axis, member_axis)
  if jax.process_count() == 1:
    return jax.device_put(array, sharding)
  global_shape = list(array.shape)
  global_shape[batch_axis] *= jax.process_count()
  return jax.make_array_from_process_local_data(sharding, array, tuple(global_shape))


def to_host(tree: Any) -> Any:
  """Fetches a (replicated) device tree to numpy on every host."""

  def fetch(leaf):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(leaf)

  return jax.tree_util.tree_map(fetch, tree)

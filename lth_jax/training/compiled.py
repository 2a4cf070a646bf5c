"""A run's train program compiled ahead of time from shapes alone, and what the compiler says of it.

The program is the Trainer's own (`programs.build`: the masked optimizer's step, vmapped over the
members of a cohort, sharded over a ('members', 'data') mesh), lowered on shape structs instead of
arrays, so the mesh's devices need not be attached: simulated CPU devices, or a TPU topology from
`jax.experimental.topologies` (libtpu compiles for it without the chips). Nothing is put on a device
and no data is read. `stats` reads the compiled program's memory per device, FLOPs, bytes accessed
and collectives (from the optimized HLO).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lth_jax import data as data_lib
from lth_jax import tasks
from lth_jax.models import calling
from lth_jax.training import feeds as feeds_lib
from lth_jax.training import parallel
from lth_jax.training import programs as programs_lib
from lth_jax.training import steps as steps_lib

# The collective operations counted in the optimized HLO (an async pair counts once, by its start).
COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'collective-permute', 'all-to-all')
_DTYPE_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'bf16': 2, 'f16': 2, 's32': 4, 'u32': 4, 'f32': 4}
_DTYPE_BYTES.update({'s64': 8, 'u64': 8, 'f64': 8})
_INSTRUCTION = re.compile(
    r'=\s*(?P<shape>.+?)\s+(?P<op>' + '|'.join(COLLECTIVES) + r')(?P<start>-start)?\((?P<rest>.*)$'
)
_ARRAY_SHAPE = re.compile(r'\b([a-z]+\d*)\[([\d,]*)\]')


@dataclasses.dataclass(frozen=True)
class ProgramKind:
  """Which train program: one run alone, or a cohort of `members` runs side by side, with a
  per-member start step where `start_steps` (a sweep's shared program: each variant resets to its
  own step)."""

  members: int = 1  # 1: one run alone
  start_steps: bool = False

  @property
  def name(self) -> str:
    """'run', 'cohort_K' or 'sweep_K'."""
    if self.members == 1 and not self.start_steps:
      return 'run'
    return f'{"sweep" if self.start_steps else "cohort"}_{self.members}'


@dataclasses.dataclass(frozen=True)
class Collective:
  """The collectives of one kind in a program: how many, the bytes of their results, the sizes of
  their device groups."""

  count: int
  bytes: int
  group_sizes: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class CompiledStats:
  """What the compiler says of one program, per device."""

  argument_bytes: int
  output_bytes: int
  temp_bytes: int
  alias_bytes: int  # outputs that reuse donated arguments' buffers
  generated_code_bytes: int
  flops: float
  bytes_accessed: float
  compiler_seconds: float | None  # the compiler's own estimate of the program's time, where it gives one
  collectives: dict[str, Collective]

  @property
  def peak_bytes(self) -> int:
    """What the program holds at once on a device: arguments, outputs not aliased, temporaries, code."""
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.generated_code_bytes


def _member_axis(tree: Any, members: int) -> Any:
  """Shape structs with a leading member axis of `members`."""
  return jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct((members, *leaf.shape), leaf.dtype), tree)


def _placed(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """Shape structs of `tree` that carry `sharding`."""
  return jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), tree)


def state_shapes(model: Any, example: jax.ShapeDtypeStruct, optimizer: optax.GradientTransformation) -> Any:
  """The TrainState of one run as shape structs: params, model state, optimizer state, mask, step."""
  params, model_state = steps_lib.split_variables(calling.variable_shapes(model, example))
  return steps_lib.TrainState(
      step=jax.ShapeDtypeStruct((), jnp.int32),  # type: ignore[arg-type]  # a TrainState of shapes
      params=params,
      model_state=model_state,
      opt_state=jax.eval_shape(optimizer.init, params),
      keep_mask=jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, jnp.bool_), params),
  )


def _items(feed: Any, batch_size: int, steps_per_dispatch: int, members: int) -> Any:
  """One dispatch's items as the Trainer puts them: example indices of a resident feed, or a streamed
  feed's uint8 images and labels; leading axes (steps, members)."""
  leading = (steps_per_dispatch, members)
  if isinstance(feed, feeds_lib.ResidentFeed):
    return jax.ShapeDtypeStruct((*leading, batch_size), jnp.int32)
  inputs, targets = feed.batch_shapes(batch_size)
  return {
      'inputs': jax.ShapeDtypeStruct((*leading, *inputs.shape), jnp.uint8),
      'targets': jax.ShapeDtypeStruct((*leading, *targets.shape), targets.dtype),
  }


def lower_train_program(
    model: Any,
    dataset: data_lib.Dataset,
    optimizer: optax.GradientTransformationExtraArgs,
    mesh: jax.sharding.Mesh,
    task: tasks.Task,
    batch_size: int,
    kind: ProgramKind,
    steps_per_dispatch: int = 1,
) -> jax.stages.Lowered:
  """The Trainer's train program of `kind` on `mesh`, lowered on shapes (see the module docstring).

  `optimizer`: as `optim.from_config` builds it; `batch_size`: each run's global batch, split over the
  mesh's 'data' axis; `steps_per_dispatch` = 1: one step, no loop (what the compiler's FLOP count
  then counts exactly).
  """
  feed = feeds_lib.create(dataset, mesh, batch_size, batch_size, shapes_only=True)
  members = kind.members
  state_sharding = parallel.member_sharded(mesh) if members > 1 else parallel.replicated(mesh)
  example = feed.batch_shapes(1)[0]  # a batch of one model input, as the Trainer traces it
  programs = programs_lib.build(
      model, feed, optimizer, mesh, task, example, batch_size, steps_per_dispatch, members, state_sharding
  )
  state = _member_axis(state_shapes(model, example, optimizer), members)
  sums = programs.sums_shape(state)
  settings: dict[str, Any] = {'dropout_seed': jax.ShapeDtypeStruct((members,), jnp.uint32)}
  if kind.start_steps:
    settings['start_step'] = jax.ShapeDtypeStruct((members,), jnp.int32)
  items = _items(feed, batch_size, steps_per_dispatch, members)
  item_sharding = parallel.batch_sharded(mesh, 2, member_axis=1 if members > 1 else None)
  train_chunk: Any = programs.train_chunk  # jitted
  return train_chunk.lower(
      _placed(state, state_sharding),
      _placed(sums, state_sharding),
      feed.arrays,
      _placed(items, item_sharding),
      jax.ShapeDtypeStruct((), jnp.int32, sharding=parallel.replicated(mesh)),
      _placed(settings, state_sharding),
  )


def collectives(hlo_text: str) -> dict[str, Collective]:
  """The collectives of an optimized HLO module's text, by kind (see `COLLECTIVES`)."""
  found: dict[str, list[tuple[int, int]]] = {}
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.search(line)
    if match is None or '-done(' in line:
      continue
    found.setdefault(match['op'], []).append((_shape_bytes(match['shape']), _group_size(match['rest'])))
  return {
      op: Collective(len(entries), sum(size for size, _ in entries), tuple(sorted({group for _, group in entries})))
      for op, entries in found.items()
  }


def _shape_bytes(shape: str) -> int:
  """Bytes of an HLO result shape: one array (f32[64,10]{1,0}) or a tuple of them; an async start's
  result (operands, results, ...) counts its first half."""
  arrays = [
      _DTYPE_BYTES.get(dtype, 4) * int(np.prod([int(size) for size in sizes.split(',') if size]))
      for dtype, sizes in _ARRAY_SHAPE.findall(shape)
  ]
  if shape.lstrip().startswith('((') and len(arrays) % 2 == 0:  # ((operands), (results)) of an async start
    arrays = arrays[: len(arrays) // 2]
  return int(sum(arrays))


def _group_size(operands: str) -> int:
  """The size of a collective's device groups: replica_groups={{0,1},{2,3}}, the iota form
  replica_groups=[2,2]<=[4], or the mesh form replica_groups=mesh['axis_0'=4,'axis_1'=2] {'axis_0'}
  (0: one group of every device)."""
  on_mesh = re.search(r'replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}', operands)
  if on_mesh:
    sizes = dict(re.findall(r"'(\w+)'=(\d+)", on_mesh.group(1)))
    return int(np.prod([int(sizes.get(axis, 1)) for axis in re.findall(r"'(\w+)'", on_mesh.group(2))]))
  explicit = re.search(r'replica_groups=\{\{([\d,]*)\}', operands)
  if explicit:
    return len([device for device in explicit.group(1).split(',') if device])
  iota = re.search(r'replica_groups=\[([\d,]+)\]<=', operands)
  if iota:
    return int(iota.group(1).split(',')[-1])
  pairs = re.search(r'source_target_pairs=\{(.*?)\}\}', operands)
  if pairs:
    return 2
  return 0


def stats(compiled: jax.stages.Compiled) -> CompiledStats:
  """The compiled program's memory per device, cost and collectives."""
  memory: Any = compiled.memory_analysis()
  if memory is None:
    raise ValueError('this backend gives no memory analysis of a compiled program')
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    cost = cost[0] if cost else {}
  cost = cost or {}
  seconds = cost.get('optimal_seconds')
  return CompiledStats(
      argument_bytes=int(memory.argument_size_in_bytes),
      output_bytes=int(memory.output_size_in_bytes),
      temp_bytes=int(memory.temp_size_in_bytes),
      alias_bytes=int(memory.alias_size_in_bytes),
      generated_code_bytes=int(memory.generated_code_size_in_bytes),
      flops=float(cost.get('flops', 0.0)),
      bytes_accessed=float(cost.get('bytes accessed', 0.0)),
      compiler_seconds=float(seconds) if seconds is not None and seconds > 0 else None,
      collectives=collectives(compiled.as_text() or ''),
  )

"""The packing of a level's runs into populations: which searches can share compiled programs
(`shape_key`), how many runs train in one population (the cap, by device memory where it is set to 0),
the groups of a level's runs under that cap, and how a population of K runs lies on the mesh
(`parallel.member_layout`)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from typing import Any, Sequence

import jax

from lth_jax import config as config_lib
from lth_jax import optim
from lth_jax.training import feeds
from lth_jax.training import memory
from lth_jax.training import parallel


def groups(keys: Sequence[Any], members_per_program: int) -> list[list[Any]]:
  """A level's whole runs (recorded ones included) in populations of at most `members_per_program`, in
  order and as evenly sized as that allows (10 runs, at most 8 per program: 5 and 5, not 8 and 2).
  Grouping all the runs, not only what is left to train, keeps a resumed level's populations (and
  so their numbers) those of an uninterrupted run: a program's records are written together."""
  if not keys:
    return []
  count = math.ceil(len(keys) / max(1, members_per_program))
  size = math.ceil(len(keys) / count)
  return [list(keys[start : start + size]) for start in range(0, len(keys), size)]


def _largest_cohort(spec: config_lib.RunSpec) -> tuple[int, int]:
  """(level 0's cohort: the trials, a pruned level's cohort: trials x branches)."""
  trials = spec.trials
  return trials, trials * len(spec.branch_names) if spec.pruning.levels else trials


def layout(num_members: int, experiment: Any) -> tuple[int, int]:
  """(member groups, member slots) of a program of `num_members` runs of `experiment`
  (see `parallel.member_layout`); a ConfigError naming the fields when none fits."""
  batch = experiment.spec.training.batch_size
  found = parallel.member_layout(num_members, experiment.mesh.devices.size, batch, experiment.local_device_counts())
  if found is None:
    raise config_lib.ConfigError(
        f'parallel.members_per_program={experiment.spec.parallel.members_per_program}: a program of '
        f'{num_members} runs cannot be laid on the {experiment.mesh.devices.size} devices with '
        f'training.batch_size={batch} (no member grouping leaves a batch that divides its devices); change '
        'the batch size or parallel.num_devices'
    )
  return found


def resolve_members_per_program(experiment: Any, cohort_sizes: tuple[int, int] | None = None) -> int:
  """The cap on runs per program: `parallel.members_per_program`, or with 0 (auto) the largest cohort
  whose program fits in device memory by `memory.footprint`'s estimate (at least 1), and on CPU devices
  no more runs than devices (one CPU device: one run at a time). Checks, before
  anything trains, that every program the run will form can be laid on the mesh, and that an explicit
  cap fits in memory where that can be estimated (a ConfigError saying what to set). `cohort_sizes`: the
  runs of (level 0, a pruned level) when they are not one search's (a sweep's variants packed together)."""
  spec = experiment.spec
  requested = spec.parallel.members_per_program
  level_zero, pruned_level = cohort_sizes or _largest_cohort(spec)
  largest = max(level_zero, pruned_level)
  batch = spec.training.batch_size

  @functools.cache
  def member() -> memory.MemberFootprint:  # traced only where a program of several runs is considered
    return memory.footprint(
        experiment.model,
        feeds.input_example(experiment.dataset),
        optim.from_config(spec.training, experiment.total_steps),
    )

  device_memory = memory.device_memory_bytes()
  resident = sum(
      int(getattr(experiment.dataset, name).nbytes)
      for name in ('train_inputs', 'train_targets')
      if hasattr(experiment.dataset, name)
  )

  def program_bytes(size: int) -> int:
    groups_, slots = layout(size, experiment)
    data = experiment.mesh.devices.size // groups_
    return member().device_bytes(slots // groups_, batch // data)

  def fits(size: int) -> bool:
    return (
        size == 1 or device_memory is None or (program_bytes(size) + resident <= memory.USABLE_FRACTION * device_memory)
    )

  if requested == 0:
    cap = max([size for size in range(1, largest + 1) if fits(size)] or [1])
    if jax.default_backend() == 'cpu':  # XLA spreads one run over a CPU's cores: pack one run per device at most
      cap = min(cap, experiment.mesh.devices.size)
  else:
    cap = requested
    if min(cap, largest) > 1 and not fits(min(cap, largest)):
      assert device_memory is not None  # every size fits when the memory is unknown
      fitting = max([size for size in range(1, largest + 1) if fits(size)] or [1])
      raise config_lib.ConfigError(
          f'parallel.members_per_program={requested}: a program of {min(cap, largest)} runs needs about '
          f'{memory.format_bytes(program_bytes(min(cap, largest)) + resident)} per device, more than '
          f'{memory.USABLE_FRACTION:.0%} of its {memory.format_bytes(device_memory)}; set '
          f'parallel.members_per_program={fitting} (or 0 to choose by memory)'
      )
  for cohort in (level_zero, pruned_level):
    for group in groups(list(range(cohort)), cap):
      if len(group) > 1:
        layout(len(group), experiment)
  return cap


def shape_key(spec: config_lib.RunSpec) -> str:
  """A name for the compiled programs a resolved search trains: equal for searches whose runs can share
  populations (everything but the seed, trials, pruning, controls, transfer and the per-member
  hyperparameters)."""
  fields = dataclasses.asdict(spec)
  for unused in ('seed', 'trials', 'branches', 'pruning', 'transfer'):
    del fields[unused]
  for name in optim.MEMBER_HYPERPARAMETERS:
    del fields['training'][name]
  del fields['report']['print_surviving_weights']
  return hashlib.sha1(json.dumps(fields, sort_keys=True, default=repr).encode()).hexdigest()[:12]


def varying_hyperparameters(specs: Sequence[config_lib.RunSpec]) -> tuple[str, ...]:
  """The names of `optim.MEMBER_HYPERPARAMETERS` whose values differ between `specs`."""
  return tuple(
      name for name in optim.MEMBER_HYPERPARAMETERS if len({getattr(spec.training, name) for spec in specs}) > 1
  )

"""The members of a population: one training run each (where it starts, what it is), what training gives
back for each, and how a population's trees, curve and per-member settings split into (or are made of)
the members' own."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from lth_jax.search import workdir as workdir_lib
from lth_jax.training import steps


@dataclasses.dataclass
class Member:
  """One training run of a population: where it starts (host trees) and what it is."""

  trial: int
  level: int
  branch: str
  params: Any
  model_state: Any
  keep_mask: Any
  data_seed: int
  snapshot_steps: tuple[int, ...] = ()
  # Called with (step, host (params, model_state)) as each of this member's snapshots is taken.
  on_snapshot: Callable[[int, tuple[Any, Any]], None] | None = None
  start_step: int = 0  # the absolute step its training starts at (a level's rewind point)
  variant: str = ''  # the sweep variant it belongs to ('' outside a sweep)
  # Its own values of `optim.MEMBER_HYPERPARAMETERS` where the members of its program differ in them.
  hyperparameters: dict[str, float] = dataclasses.field(default_factory=dict)

  @property
  def key(self) -> str:
    """'t0-ticket' (or 'VARIANT/t0-ticket'): the member's name in a program's checkpoint."""
    return workdir_lib.member_key(self.variant, self.trial, self.branch)


@dataclasses.dataclass
class MemberResult:
  """What training produced for one member."""

  member: Member
  final_params: Any  # host tree
  snapshots: dict[int, tuple[Any, Any]]  # step -> host (params, model_state)
  curve: list[dict[str, Any]]  # one entry per evaluation: step, train_loss, test metrics
  wall_seconds: float  # the program's training time (shared by its members)
  diverged_step: int | None = None  # where a non-finite loss or weight was first seen


def split_entry(entry: dict[str, Any], index: int) -> dict[str, Any]:
  """One member's values of a population's curve entry (lists hold one value per member)."""
  return {key: value[index] if isinstance(value, list) else value for key, value in entry.items()}


def snapshots_at(member: Member, step: int) -> bool:
  """Whether `member` keeps its weights at `step`: one of its snapshot steps, at or after its start."""
  return step in member.snapshot_steps and step >= member.start_step


def hyperparameter_names(members: Sequence[Member]) -> tuple[str, ...]:
  """The hyperparameters the members of one program carry for themselves."""
  return tuple(sorted({name for member in members for name in member.hyperparameters}))


def member_settings(members: Sequence[Member]) -> dict[str, list[float]]:
  """The per-step settings of a population of `members` (padding included): their start steps, where they
  differ."""
  if len({member.start_step for member in members}) > 1:
    return {'start_step': [member.start_step for member in members]}
  return {}


def member_hyperparameters(members: Sequence[Member]) -> dict[str, list[float]]:
  """The hyperparameters the members of a population (padding included) hold for themselves, one value
  per member."""
  return {name: [member.hyperparameters[name] for member in members] for name in hyperparameter_names(members)}


def member_snapshot(snapshot: tuple[Any, Any], index: int) -> tuple[Any, Any]:
  """Member `index`'s own (params, model_state) of a population's snapshot."""
  params, model_state = snapshot
  return steps.member(params, index), steps.member(model_state, index)

"""What a call of `Trainer.train` gives back (TrainResult), leaves behind to be continued
(RunCheckpoint), or raises when asked to stop (Preempted)."""

from __future__ import annotations

import dataclasses
from typing import Any

from lth_jax.training.steps import first_step
from lth_jax.training.steps import TrainState


@dataclasses.dataclass
class TrainResult:
  """What one call of `Trainer.train` produced."""

  state: TrainState
  snapshots: dict[int, tuple[Any, Any]]  # step -> host (params, model_state)
  curve: list[dict[str, float]]  # one entry per evaluation: step, train_loss, test metrics
  wall_seconds: float
  # Per member (one entry for a plain run): the step at which a non-finite loss or weight was first
  # seen, None if never. Training stops early once every member has diverged.
  diverged_steps: list[int | None] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class RunCheckpoint:
  """A `Trainer.train` call stopped at `state.step`, with everything needed to continue it exactly:
  passed back to `Trainer.train` in place of a TrainState, the run goes on as if never stopped
  (same batches, same metric sums, same curve and snapshots; bitwise on the same platform)."""

  state: TrainState
  train_sums: Any  # metric sums of the steps since the last evaluation
  train_sum_steps: int  # how many steps those sums cover
  curve: list[dict[str, float]]  # the evaluations so far
  snapshots: dict[int, tuple[Any, Any]]  # the snapshots taken so far: step -> host (params, model_state)
  wall_seconds: float = 0.0  # training time spent before this point
  diverged_steps: list[int | None] | None = None  # per member: where divergence was first seen so far

  @property
  def step(self) -> int:
    """The absolute step the run stopped at."""
    return first_step(self.state.step)

  def arrays(self) -> dict[str, Any]:
    """The array part, for an orbax tree checkpoint."""
    return {
        'state': self.state,
        'train_sums': self.train_sums,
        'snapshots': {
            str(step): {'params': params, 'model_state': model_state}
            for step, (params, model_state) in self.snapshots.items()
        },
    }

  def metadata(self) -> dict[str, Any]:
    """The JSON part: step, curve, snapshot steps, wall time."""
    return {
        'step': self.step,
        'train_sum_steps': self.train_sum_steps,
        'curve': self.curve,
        'snapshot_steps': sorted(self.snapshots),
        'wall_seconds': self.wall_seconds,
        'diverged_steps': self.diverged_steps,
    }

  @staticmethod
  def arrays_like(
      metadata: dict[str, Any], state: TrainState, train_sums: Any, snapshot: tuple[Any, Any]
  ) -> dict[str, Any]:
    """The target tree to restore `arrays()` into, for a checkpoint with this `metadata`: `state` and
    `train_sums` give shapes and shardings (e.g. a fresh state of the run and
    `Placement.zero_train_sums(state)`), `snapshot` the (params, model_state) host shapes."""
    params, model_state = snapshot
    return {
        'state': state,
        'train_sums': train_sums,
        'snapshots': {str(step): {'params': params, 'model_state': model_state} for step in metadata['snapshot_steps']},
    }

  @classmethod
  def from_parts(cls, arrays: dict[str, Any], metadata: dict[str, Any]) -> 'RunCheckpoint':
    """Rebuilds a RunCheckpoint from restored `arrays()` and `metadata()`."""
    snapshots = {
        int(step): (tree['params'], tree['model_state']) for step, tree in (arrays.get('snapshots') or {}).items()
    }
    return cls(
        state=arrays['state'],
        train_sums=arrays['train_sums'],
        train_sum_steps=int(metadata['train_sum_steps']),
        curve=list(metadata['curve']),
        snapshots=snapshots,
        wall_seconds=float(metadata.get('wall_seconds', 0.0)),
        diverged_steps=metadata.get('diverged_steps'),
    )


class Preempted(Exception):
  """Training stopped early because a stop was requested (e.g. SIGTERM); `step` is where it stopped
  and `checkpointed` whether a checkpoint of that step was handed to `on_checkpoint`."""

  def __init__(self, message: str, step: int, checkpointed: bool):
    super().__init__(message)
    self.step, self.checkpointed = step, checkpointed

"""The loop of one `Trainer.train` call (`lth_jax.training.trainer`), between the dispatches of its train program: where
dispatches end (`Schedule`), whom it tells (`Hooks`), and what it holds from one dispatch to the next
(`TrainLoop`: the state, the metric sums since the last evaluation, the curve, snapshots and divergence, the
clocks of the progress reports). It runs a `Placement` (`lth_jax.training.placement`): the programs and
feed of the population.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import numpy as np

from lth_jax.training import parallel
from lth_jax.training.placement import Placement
from lth_jax.training.run_state import Preempted
from lth_jax.training.run_state import RunCheckpoint
from lth_jax.training.run_state import TrainResult
from lth_jax.training.steps import first_step
from lth_jax.training.steps import summarize
from lth_jax.training.steps import TrainState


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Where one `Trainer.train` call ends and what it does on the way (see its arguments)."""

  end_step: int
  snapshot_steps: Sequence[int]
  eval_every: int
  checkpoint_every: int
  heartbeat_seconds: float

  def boundaries(self, start_step: int) -> list[int]:
    """The steps that end a dispatch after `start_step`, ascending: snapshots, evaluations, checkpoints, the end."""
    end_step, eval_every, checkpoint_every = self.end_step, self.eval_every, self.checkpoint_every
    boundaries = {end_step}
    boundaries.update(step for step in self.snapshot_steps if start_step < step < end_step)
    if eval_every:
      boundaries.update(range(start_step - start_step % eval_every + eval_every, end_step, eval_every))
    if checkpoint_every:
      boundaries.update(
          range(start_step - start_step % checkpoint_every + checkpoint_every, end_step, checkpoint_every)
      )
    return sorted(boundaries)

  def evaluates_at(self, step: int) -> bool:
    """Whether `step` is evaluated: every `eval_every` steps, and at the end."""
    return step == self.end_step or bool(self.eval_every and step % self.eval_every == 0)

  def checkpoints_at(self, step: int) -> bool:
    """Whether `step` is a periodic checkpoint step."""
    return bool(self.checkpoint_every and step % self.checkpoint_every == 0)


@dataclasses.dataclass(frozen=True)
class Hooks:
  """The callbacks of one `Trainer.train` call (see its arguments)."""

  progress: Callable[[dict[str, float]], None] | None
  on_checkpoint: Callable[[RunCheckpoint], None] | None
  should_stop: Callable[[int], bool] | None
  on_snapshot: Callable[[int, tuple[Any, Any]], None] | None
  heartbeat: Callable[[dict[str, float]], None] | None


@dataclasses.dataclass
class TrainLoop:
  """One `Trainer.train` call between dispatches: the state, the metric sums since the last evaluation,
  what was recorded so far (curve, snapshots, divergence) and the clocks of the progress reports."""

  placement: Placement  # the population's programs and feed on the mesh
  schedule: Schedule
  hooks: Hooks
  state: TrainState
  member_settings: Any  # on the devices: the members' own per-step values (see `Trainer.train`)
  train_sums: Any  # on the devices: the metric sums of the `train_sum_steps` steps since the last evaluation
  train_sum_steps: int
  curve: list[dict[str, Any]]
  snapshots: dict[int, tuple[Any, Any]]
  diverged: list[int | None]  # per member: the step where its numbers were first found not all finite
  wall_before: float  # the run's training time before this call (a resumed checkpoint's)
  started: float  # when this call started
  start_step: int = 0
  current: int = 0
  segment_started: float = 0.0  # when the training since the last evaluation started
  reported_step: int = 0  # the last progress report (evaluation or heartbeat)
  reported_at: float = 0.0

  @classmethod
  def begin(
      cls,
      placement: Placement,
      state: TrainState | RunCheckpoint,
      schedule: Schedule,
      hooks: Hooks,
      member_settings: Any,
      started: float,
  ) -> TrainLoop:
    """The loop of a call from a TrainState, or from a `RunCheckpoint` of the same run, with the members'
    own `member_settings` (on the devices)."""
    undiverged: list[int | None] = [None] * placement.population_size
    if isinstance(state, RunCheckpoint):
      return cls(
          placement=placement,
          schedule=schedule,
          hooks=hooks,
          member_settings=member_settings,
          state=state.state,
          train_sums=placement.put_state(state.train_sums),
          train_sum_steps=state.train_sum_steps,
          curve=list(state.curve),
          snapshots=dict(state.snapshots),
          diverged=list(state.diverged_steps or []) or undiverged,
          wall_before=state.wall_seconds,
          started=started,
          start_step=first_step(state.state.step),
      )
    return cls(
        placement=placement,
        schedule=schedule,
        hooks=hooks,
        member_settings=member_settings,
        state=state,
        train_sums=placement.zero_train_sums(state),
        train_sum_steps=0,
        curve=[],
        snapshots={},
        diverged=undiverged,
        wall_before=0.0,
        started=started,
        start_step=first_step(state.step),
    )

  @property
  def examples_per_step(self) -> int:
    """Training examples of one step, over every member."""
    return self.placement.batch_size * self.placement.population_size

  def start(self) -> None:
    """Snapshots the starting weights if asked to, raises `Preempted` for a stop requested before any training,
    and starts the clocks."""
    start_step, should_stop = self.start_step, self.hooks.should_stop
    if start_step in self.schedule.snapshot_steps and start_step not in self.snapshots:
      self.take_snapshot(start_step)
    if should_stop is not None and start_step < self.schedule.end_step and should_stop(start_step):
      raise Preempted(f'stopped at step {start_step} before training', start_step, checkpointed=False)
    self.current, self.segment_started = start_step, time.perf_counter()
    self.reported_step, self.reported_at = self.current, self.segment_started  # the last progress report

  def run(self, seeds: list[int]) -> TrainResult:
    """Trains dispatch by dispatch to the end step (or until every member diverged, or a stop request)."""
    hooks = self.hooks
    for boundary in self.schedule.boundaries(self.start_step):
      while self.current < boundary:
        self.dispatch(seeds, min(self.placement.steps_per_dispatch, boundary - self.current))
        all_diverged = self.report()
        if self.current == self.schedule.end_step:
          break
        if all_diverged:
          return self.stopped_diverged()
        stop = hooks.should_stop is not None and hooks.should_stop(self.current)
        if hooks.on_checkpoint is not None and (stop or self.schedule.checkpoints_at(self.current)):
          if self.train_sum_steps and self.note_divergence(self.losses_finite()):  # the checkpoint syncs anyway
            return self.stopped_diverged()
          hooks.on_checkpoint(self.checkpoint())
        if stop:
          raise Preempted(f'stopped at step {self.current}', self.current, checkpointed=hooks.on_checkpoint is not None)
    return self.result()

  def dispatch(self, seeds: list[int], chunk: int) -> None:
    """Runs the next `chunk` steps in one call of the train program (no host sync), then the snapshot due."""
    placement = self.placement
    items = placement.items(seeds, self.current, chunk)
    self.state, self.train_sums = placement.programs.train_chunk(
        self.state, self.train_sums, placement.feed.arrays, items, np.int32(chunk), self.member_settings
    )
    self.current += chunk
    self.train_sum_steps += chunk
    if self.current in self.schedule.snapshot_steps:
      self.take_snapshot(self.current)

  def take_snapshot(self, step: int) -> None:
    """Copies the state's (params, model_state) to the host as the snapshot of `step`, and hands it to `on_snapshot`."""
    self.snapshots[step] = parallel.to_host((self.state.params, self.state.model_state))
    if self.hooks.on_snapshot is not None:
      self.hooks.on_snapshot(step, self.snapshots[step])

  def report(self) -> bool:
    """The evaluation due at the current step, else a heartbeat if one is due; True once every member diverged."""
    if self.schedule.evaluates_at(self.current):
      entry, finite = self.evaluation_entry()
      all_diverged = self.note_divergence(finite)
      if self.hooks.progress is not None:
        self.hooks.progress(entry)
      return all_diverged
    if self.hooks.heartbeat is not None and time.perf_counter() - self.reported_at >= self.schedule.heartbeat_seconds:
      all_diverged = self.note_divergence(self.losses_finite())  # waits for the dispatch, as the heartbeat must
      now = time.perf_counter()
      speed = (self.current - self.reported_step) * self.examples_per_step / max(now - self.reported_at, 1e-9)
      self.hooks.heartbeat({'step': self.current, 'examples_per_second': speed})
      self.reported_step, self.reported_at = self.current, now
      return all_diverged
    return False

  def evaluation_entry(self) -> tuple[dict[str, Any], np.ndarray]:
    """Evaluates the current step: its curve entry (appended to the curve; the train metric sums restart) and
    whether the numbers of each member are all finite."""
    placement, current = self.placement, self.current
    entry: dict[str, Any] = {'step': current}
    if self.train_sum_steps:  # fetching the sums waits for the steps: training time ends here
      entry.update(summarize(placement.task, parallel.to_host(self.train_sums), 'train'))
    trained = time.perf_counter()
    entry.update(placement.evaluate(self.state))
    finite = np.asarray(parallel.to_host(placement.programs.all_finite(self.state.params)), bool)
    for name in ('train_loss', 'test_loss'):
      if name in entry:
        finite = finite & np.isfinite(np.asarray(entry[name], np.float64))
    now = time.perf_counter()
    entry['examples_per_second'] = (
        (current - max(self.curve[-1]['step'] if self.curve else self.start_step, self.start_step))
        * self.examples_per_step
        / max(trained - self.segment_started, 1e-9)
    )
    entry['evaluation_seconds'] = now - trained
    self.segment_started, self.train_sums, self.train_sum_steps = now, placement.zero_train_sums(self.state), 0
    self.reported_step, self.reported_at = current, now
    self.curve.append(entry)
    return entry, finite

  def note_divergence(self, finite: Any) -> bool:
    """Records the members whose numbers are not all finite now; True once every member has diverged."""
    for index, ok in enumerate(np.atleast_1d(np.asarray(finite, bool))):
      if not ok and self.diverged[index] is None:
        self.diverged[index] = self.current
    return all(step is not None for step in self.diverged)

  def losses_finite(self) -> np.ndarray:
    """Whether the train-loss sums since the last evaluation are finite (fetches a few floats)."""
    return np.isfinite(np.asarray(parallel.to_host(self.train_sums['loss']), np.float64))

  def stopped_diverged(self) -> TrainResult:
    """Every member diverged: the result so far, its last curve entry at the current step."""
    if not self.curve or self.curve[-1]['step'] != self.current:
      entry, _ = self.evaluation_entry()
      if self.hooks.progress is not None:
        self.hooks.progress(entry)
    return self.result()

  def checkpoint(self) -> RunCheckpoint:
    """A checkpoint of the current step (its state stays on the devices)."""
    return RunCheckpoint(
        state=self.state,
        train_sums=self.train_sums,
        train_sum_steps=self.train_sum_steps,
        curve=list(self.curve),
        snapshots=dict(self.snapshots),
        wall_seconds=self.wall_before + time.perf_counter() - self.started,
        diverged_steps=list(self.diverged),
    )

  def result(self) -> TrainResult:
    """What the call returns."""
    return TrainResult(
        state=self.state,
        snapshots=self.snapshots,
        curve=self.curve,
        wall_seconds=self.wall_before + time.perf_counter() - self.started,
        diverged_steps=self.diverged,
    )

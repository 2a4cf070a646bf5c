"""Cohorts: the training runs of one lottery level trained together, as one population program.

Every (trial, branch) run of a level trains to the same end step, so the runs that are not yet
recorded form a cohort (its members: `lth_jax.search.members`), trained in programs of at most
`parallel.members_per_program` members (`lth_jax.search.packing`). A sweep's cohort also holds the runs
of several variants (`lth_jax.search.packs`): members may then start at their own step (a rewind point;
the program starts at the earliest and a member waits, unchanged, until its start) and carry their own
learning rate, warmup and weight decay. A program of K > 1 members is one `jax.vmap`-ed Trainer over a
('members', 'data') mesh (`parallel.member_layout` picks its shape); a program of one member is the
plain data-parallel Trainer, exactly as runs were trained one after another. Each member keeps its own
weights, mask, optimizer state and batch order (its trial's seed), so it sees the batches its run alone
would see. This module trains a program: from its newest good checkpoint, with progress lines
(`lth_jax.search.progress`) and scalars, and splits its result per member.

A program is checkpointed like a single run (periodically, and at the current step on SIGTERM) in
`WORKDIR/checkpoints/running/level_L_<members>` (`workdir.program_directory`); the checkpoint names its
members, and a re-run resumes it only for the same members. One member's program keeps the single-run
folder `checkpoints/trial_T/running/level_L_BRANCH`; a program of a sweep's variants keeps
`SWEEP/checkpoints/running/level_L_<count>_<digest of its members>`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Sequence

from lth_jax import config as config_lib
from lth_jax.search import members as members_lib
from lth_jax.search import progress
from lth_jax.search import workdir as workdir_lib
from lth_jax.search.members import Member
from lth_jax.search.members import MemberResult
from lth_jax.training import checkpoints
from lth_jax.training import parallel
from lth_jax.training import run_state
from lth_jax.training import steps
from lth_jax.training import trainer as trainer_lib


def _runs(members: Sequence[Member]) -> list[tuple[str, int, str]]:
  return [(member.variant, member.trial, member.branch) for member in members]


@dataclasses.dataclass
class ProgramSettings:
  """How programs are trained and watched (from the config's training, checkpointing and report)."""

  end_step: int
  eval_every: int
  checkpoint_every: int
  max_to_keep: int
  progress_every_seconds: float
  levels: int  # the run's pruning levels, for progress labels

  @classmethod
  def from_spec(cls, spec: config_lib.RunSpec) -> 'ProgramSettings':
    """The settings of a resolved config: its evaluation period, checkpointing and progress period;
    programs train to the end of training."""
    return cls(
        end_step=spec.training.num_steps,
        eval_every=spec.training.eval_every,
        checkpoint_every=spec.checkpointing.every_steps,
        max_to_keep=spec.checkpointing.max_to_keep,
        progress_every_seconds=spec.report.progress_every_seconds,
        levels=spec.pruning.levels,
    )


class ProgramRunner:
  """Trains groups of members as programs (resuming each from its newest good checkpoint)."""

  def __init__(
      self,
      workdir: str,
      trainer_for: Callable[[int, tuple[str, ...]], tuple[trainer_lib.Trainer, int]],
      settings: ProgramSettings,
      log: Callable[[str], None],
      should_stop: Callable[[int], bool] | None,
      scalars: Any,
  ):
    """`trainer_for(K, names)` gives the Trainer of a K-member program whose members carry their own
    values of the hyperparameters `names`, and its member slots (K plus any padding members the mesh
    needs; a plain Trainer and 1 for one member with none)."""
    self.workdir, self.trainer_for, self.settings = workdir, trainer_for, settings
    self.log, self.should_stop, self.scalars = log, should_stop, scalars
    self._evaluation_seconds = 0.0  # how long the last evaluation took (for the ETA between them)

  def train(self, members: Sequence[Member]) -> list[MemberResult]:
    """Trains `members` (each from its start step to the end) as one program; one result per member."""
    members = list(members)
    trainer, slots = self.trainer_for(len(members), members_lib.hyperparameter_names(members))
    program = _Program.create(members, trainer, slots, self.settings, self.workdir)
    with checkpoints.RunCheckpoints(program.directory, self.settings.max_to_keep) as running:
      result = self._train_program(program, running)
    return program.results(result)

  def _train_program(self, program: _Program, running: checkpoints.RunCheckpoints) -> run_state.TrainResult:
    """Trains `program` from its newest good checkpoint in `running` (else from its start), checkpointing it
    there; a stop request is raised again as `Preempted` naming the program and its checkpoint."""
    settings, total, label = self.settings, self.settings.end_step, program.label
    restored = running.restore_latest(program.arrays_like)
    start: steps.TrainState | run_state.RunCheckpoint = program.state
    if restored is not None:
      start = run_state.RunCheckpoint.from_parts(*restored)
      self.log(f'{label}: resuming at step {start.step}/{total} from {running.directory}/{start.step}')
    try:
      return program.trainer.train(
          start,
          total,
          program.seeds,
          program.snapshot_steps,
          settings.eval_every,
          functools.partial(self._progress, program),
          checkpoint_every=settings.checkpoint_every,
          on_checkpoint=functools.partial(program.save, running),
          should_stop=self.should_stop,
          on_snapshot=program.on_snapshot,
          heartbeat=functools.partial(self._heartbeat, program),
          heartbeat_seconds=settings.progress_every_seconds,
          member_settings=program.member_settings,
      )
    except run_state.Preempted as error:
      running.wait()
      where = f'checkpointed in {running.directory}/{error.step}' if error.checkpointed else 'nothing to checkpoint'
      raise run_state.Preempted(
          f'{label}: stopped at step {error.step}/{total} on request (SIGTERM); '
          f'{where}; run the same command again to continue',
          error.step,
          error.checkpointed,
      ) from None
    finally:
      for run in program.scalars_runs:
        self.scalars.close(run)

  def _progress(self, program: _Program, entry: dict[str, Any]) -> None:
    """Logs an evaluation's curve entry as one progress line and writes its scalars (one run per member)."""
    members = program.members
    metric = program.trainer.task.metric_name
    self._evaluation_seconds = entry.get('evaluation_seconds', 0.0)
    speed = program.counted(entry['examples_per_second'])
    if program.population:
      started = [index for index, member in enumerate(members) if member.start_step < entry['step']]
      metrics = progress.metrics_text(entry, metric, started)
      self.log(program.progress_line(entry['step'], speed, metrics, self._evaluation_seconds))
      for index in started:
        run, member_entry = program.scalars_runs[index], members_lib.split_entry(entry, index)
        member_entry['examples_per_second'] = speed / len(members)
        self.scalars.write(run, entry['step'], {k: v for k, v in member_entry.items() if k != 'step'})
      return
    self.log(
        program.progress_line(entry['step'], speed, progress.metrics_text(entry, metric), self._evaluation_seconds)
    )
    self.scalars.write(program.scalars_runs[0], entry['step'], {k: v for k, v in entry.items() if k != 'step'})

  def _heartbeat(self, program: _Program, entry: dict[str, Any]) -> None:
    """Logs a progress line between evaluations (no metrics yet)."""
    self.log(
        program.progress_line(
            entry['step'], program.counted(entry['examples_per_second']), '', self._evaluation_seconds
        )
    )


@dataclasses.dataclass(frozen=True)
class _Program:
  """One program of `ProgramRunner.train`: its members on their Trainer (with any padding members), the state
  they start from, and how its checkpoints, progress lines and scalars name it."""

  members: list[Member]
  trainer: trainer_lib.Trainer
  slots: int  # the members and any padding members the mesh needs
  settings: ProgramSettings
  start_step: int
  state: steps.TrainState
  seeds: Any  # the data seed of a single run; one per slot for a population
  snapshot_like: tuple[Any, Any]  # host trees that give a checkpoint's snapshots their shapes
  snapshot_steps: tuple[int, ...]
  keys: list[str]
  directory: str  # where its checkpoints are kept
  label: str  # how progress lines name it
  scalars_runs: list[str]  # one scalars run per member
  member_settings: dict[str, list[float]]  # the members' own start steps and hyperparameters ({}: none)

  @property
  def population(self) -> bool:
    """Whether the program is a population (vmapped members) rather than one plain run."""
    return self.trainer.population_size > 0

  @classmethod
  def create(
      cls,
      members: list[Member],
      trainer: trainer_lib.Trainer,
      slots: int,
      settings: ProgramSettings,
      workdir: str,
  ) -> _Program:
    """The program of `members` on `trainer` (of `slots` member slots), its state at the earliest start
    step on the mesh, checkpointed under `workdir`."""
    padded = members + [members[0]] * (slots - len(members))  # padding members: copies, results dropped
    start_step = min(member.start_step for member in members)
    if trainer.population_size > 0:
      # The stacked host trees also give a checkpoint's snapshots their shapes (create_state copies them).
      snapshot_like = (
          steps.stack_members([member.params for member in padded]),
          steps.stack_members([member.model_state for member in padded]),
      )
      keep_masks = steps.stack_members([member.keep_mask for member in padded])
      state = trainer.create_state(*snapshot_like, keep_masks, start_step)
      seeds: Any = [member.data_seed for member in padded]
    else:
      member = members[0]
      state = trainer.create_state(member.params, member.model_state, member.keep_mask, start_step)
      seeds, snapshot_like = member.data_seed, (member.params, member.model_state)
    level = members[0].level
    return cls(
        members=members,
        trainer=trainer,
        slots=slots,
        settings=settings,
        start_step=start_step,
        state=state,
        seeds=seeds,
        snapshot_like=snapshot_like,
        snapshot_steps=tuple(sorted({step for member in members for step in member.snapshot_steps})),
        keys=[member.key for member in members],
        directory=workdir_lib.program_directory(workdir, level, _runs(members)),
        label=progress.label(members, settings.levels),
        scalars_runs=[
            os.path.join(member.variant, f'trial_{member.trial}', f'level_{member.level}_{member.branch}')
            for member in members
        ],
        member_settings=members_lib.member_settings(padded),
    )

  def arrays_like(self, metadata: dict[str, Any]) -> Any:
    """The arrays of a checkpoint of this program, shaped from its `metadata` (a ValueError for another run's)."""
    start_step, total = self.start_step, self.settings.end_step
    if not start_step < metadata['step'] < total:
      raise ValueError(f'step {metadata["step"]} is outside this run ({start_step}..{total})')
    if self.population and metadata.get('members') != self.keys:
      raise ValueError(f'it holds the members {metadata.get("members")}, not {self.keys}')
    return run_state.RunCheckpoint.arrays_like(
        metadata, self.state, self.trainer.zero_train_sums(self.state), self.snapshot_like
    )

  def progress_line(self, step: int, speed: float, metrics: str, evaluation_seconds: float) -> str:
    """'LABEL: step S/N (P%) METRICS| SPEED examples/s | ETA T', evaluations taking `evaluation_seconds`."""
    settings = self.settings
    return progress.line(
        self.label,
        step,
        self.start_step,
        settings.end_step,
        settings.eval_every,
        self.trainer.batch_size * len(self.members),
        speed,
        metrics,
        evaluation_seconds,
    )

  def counted(self, speed: float) -> float:
    """The examples/s of the real members (padding excluded) of the program's `speed`."""
    return speed * len(self.members) / self.slots

  def on_snapshot(self, step: int, snapshot: tuple[Any, Any]) -> None:
    """Hands each member that asked for a snapshot of `step` (at or after its start) its own."""
    for index, member in enumerate(self.members):
      if member.on_snapshot is not None and members_lib.snapshots_at(member, step):
        member.on_snapshot(step, members_lib.member_snapshot(snapshot, index) if self.population else snapshot)

  def save(self, running: checkpoints.RunCheckpoints, checkpoint: run_state.RunCheckpoint) -> None:
    """Saves `checkpoint` in `running`, naming the program's members."""
    running.save(checkpoint.step, checkpoint.arrays(), {**checkpoint.metadata(), 'members': self.keys})

  def results(self, result: run_state.TrainResult) -> list[MemberResult]:
    """One result per member (padding dropped) of the program's `result`."""
    members = self.members
    final_params = parallel.to_host(result.state.params)
    if not self.population:
      return [
          MemberResult(
              members[0], final_params, result.snapshots, result.curve, result.wall_seconds, result.diverged_steps[0]
          )
      ]
    # A member that starts later than the program has no evaluation, and no snapshot, before its start.
    return [
        MemberResult(
            member,
            steps.member(final_params, index),
            {
                step: members_lib.member_snapshot(snapshot, index)
                for step, snapshot in result.snapshots.items()
                if members_lib.snapshots_at(member, step)
            },
            [members_lib.split_entry(entry, index) for entry in result.curve if entry['step'] > member.start_step],
            result.wall_seconds,
            result.diverged_steps[index],
        )
        for index, member in enumerate(members)
    ]

"""A population: the runs of one lottery level (of one or several searches) that train together, as one
vmapped program over a ('members', 'data') mesh.

Every (trial, branch) run of a level trains to the same end step, so a level's runs that are not yet
recorded are grouped (`lth_jax.search.packing`) into populations of at most
`parallel.members_per_program` members (`lth_jax.search.members`). Members may start at their own step
(a sweep's rewind points: the population starts at the earliest and a member waits, unchanged, until
its start) and carry their own learning rate, warmup and weight decay. A population is one Trainer of
K >= 1 members (`parallel.member_layout` picks its mesh; for one member, the compiled program is that of
an unbatched data-parallel run: `programs.over_members`). Each member keeps its
own weights, mask, optimizer state and batch order (its trial's seed), so it sees the batches its run
alone would see. `train` trains a population from its newest good checkpoint, with progress lines
(`lth_jax.search.progress`) and scalars, and splits its result per member.

A population is checkpointed like a single run (periodically, and at the current step on SIGTERM) in
`workdir.population_directory`; the checkpoint names its members, and a re-run resumes it only for the
same members.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np

from lth_jax import config as config_lib
from lth_jax import optim
from lth_jax.search import members as members_lib
from lth_jax.search import progress
from lth_jax.search import scalars as scalars_lib
from lth_jax.search import workdir as workdir_lib
from lth_jax.search.members import Member
from lth_jax.search.members import MemberResult
from lth_jax.training import checkpoints
from lth_jax.training import parallel
from lth_jax.training import run_state
from lth_jax.training import steps
from lth_jax.training import trainer as trainer_lib


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
  """How populations are trained and watched (from the config's training, checkpointing and report)."""

  end_step: int
  eval_every: int
  checkpoint_every: int
  max_to_keep: int
  progress_every_seconds: float
  levels: int  # the searches' most pruning levels, for progress labels

  @classmethod
  def from_spec(cls, spec: config_lib.RunSpec, levels: int | None = None) -> 'TrainingSettings':
    """The settings of a resolved config (populations train to the end of training); `levels`: the
    label's level count, when the searches of a population have several."""
    return cls(
        end_step=spec.training.num_steps,
        eval_every=spec.training.eval_every,
        checkpoint_every=spec.checkpointing.every_steps,
        max_to_keep=spec.checkpointing.max_to_keep,
        progress_every_seconds=spec.report.progress_every_seconds,
        levels=spec.pruning.levels if levels is None else levels,
    )


@dataclasses.dataclass(frozen=True)
class Watch:
  """Who watches training: the log of progress lines, the stop request, and the scalars writer."""

  log: Callable[[str], None]
  should_stop: Callable[[int], bool] | None
  scalars: scalars_lib.Scalars


def train(
    members: Sequence[Member],
    trainer: trainer_lib.Trainer,
    slots: int,
    settings: TrainingSettings,
    workdir: str,
    watch: Watch,
) -> list[MemberResult]:
  """Trains `members` (each from its start step to the end) as one population on `trainer` (of `slots`
  member slots: K plus any padding members the mesh needs), checkpointed under `workdir`, resuming from
  its newest good checkpoint; one result per member. A stop request is raised again as `Preempted`
  naming the population and its checkpoint."""
  population = Population.create(list(members), trainer, slots, settings, workdir)
  total, label = settings.end_step, population.label
  reporter = _Reporter(population, watch)
  with checkpoints.RunCheckpoints(population.directory, settings.max_to_keep) as running:
    restored = running.restore_latest(population.arrays_like)
    start: steps.TrainState | run_state.RunCheckpoint = population.state
    if restored is not None:
      start = population.resumed(*restored)
      watch.log(f'{label}: resuming at step {start.step}/{total} from {running.directory}/{start.step}')
    try:
      result = trainer.train(
          start,
          total,
          population.seeds,
          population.snapshot_steps,
          settings.eval_every,
          reporter.evaluated,
          checkpoint_every=settings.checkpoint_every,
          on_checkpoint=functools.partial(population.save, running),
          should_stop=watch.should_stop,
          on_snapshot=population.on_snapshot,
          heartbeat=reporter.heartbeat,
          heartbeat_seconds=settings.progress_every_seconds,
          member_settings=population.member_settings,
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
      for run in population.scalars_runs:
        watch.scalars.close(run)
  return population.results(result)


@dataclasses.dataclass
class _Reporter:
  """The progress lines and scalars of one population's training (and how long its last evaluation took,
  for the ETA between evaluations)."""

  population: Population
  watch: Watch
  evaluation_seconds: float = 0.0

  def evaluated(self, entry: dict[str, Any]) -> None:
    """Logs an evaluation's curve entry as one progress line and writes its scalars (one run per member)."""
    population, scalars = self.population, self.watch.scalars
    members = population.members
    metric = population.trainer.task.metric_name
    self.evaluation_seconds = entry.get('evaluation_seconds', 0.0)
    speed = population.counted(entry['examples_per_second'])
    started = [index for index, member in enumerate(members) if member.start_step < entry['step']]
    metrics = progress.metrics_text(entry, metric, started)
    self.watch.log(population.progress_line(entry['step'], speed, metrics, self.evaluation_seconds))
    for index in started:
      run, member_entry = population.scalars_runs[index], members_lib.split_entry(entry, index)
      member_entry['examples_per_second'] = speed / len(members)
      scalars.write(run, entry['step'], {k: v for k, v in member_entry.items() if k != 'step'})

  def heartbeat(self, entry: dict[str, Any]) -> None:
    """Logs a progress line between evaluations (no metrics yet)."""
    speed = self.population.counted(entry['examples_per_second'])
    self.watch.log(self.population.progress_line(entry['step'], speed, '', self.evaluation_seconds))


@dataclasses.dataclass(frozen=True)
class Population:
  """One population of `train`: its members on their Trainer (with any padding members), the state they
  start from, and how its checkpoints, progress lines and scalars name it."""

  members: list[Member]
  trainer: trainer_lib.Trainer
  slots: int  # the members and any padding members the mesh needs
  settings: TrainingSettings
  start_step: int
  state: steps.TrainState
  seeds: list[int]  # the data seed of each slot
  snapshot_like: tuple[Any, Any]  # host trees (leading axis: slots) that give a checkpoint's snapshots their shapes
  snapshot_steps: tuple[int, ...]
  keys: list[str]
  directory: str  # where its checkpoints are kept
  label: str  # how progress lines name it
  scalars_runs: list[str]  # one scalars run per member
  member_settings: dict[str, list[float]]  # the members' own start steps ({}: all start together)

  @classmethod
  def create(
      cls,
      members: list[Member],
      trainer: trainer_lib.Trainer,
      slots: int,
      settings: TrainingSettings,
      workdir: str,
  ) -> Population:
    """The population of `members` on `trainer` (of `slots` member slots), its state at the earliest start
    step on the mesh, checkpointed under `workdir`."""
    padded = members + [members[0]] * (slots - len(members))  # padding members: copies, results dropped
    start_step = min(member.start_step for member in members)
    # The stacked host trees also give a checkpoint's snapshots their shapes (create_state copies them).
    snapshot_like = (
        steps.stack_members([member.params for member in padded]),
        steps.stack_members([member.model_state for member in padded]),
    )
    keep_masks = steps.stack_members([member.keep_mask for member in padded])
    hyperparameters = members_lib.member_hyperparameters(padded)
    state = trainer.create_state(*snapshot_like, keep_masks, start_step, hyperparameters=hyperparameters)
    level = members[0].level
    return cls(
        members=members,
        trainer=trainer,
        slots=slots,
        settings=settings,
        start_step=start_step,
        state=state,
        seeds=[member.data_seed for member in padded],
        snapshot_like=snapshot_like,
        snapshot_steps=tuple(sorted({step for member in members for step in member.snapshot_steps})),
        keys=[member.key for member in members],
        directory=workdir_lib.population_directory(
            workdir, level, [(member.variant, member.trial, member.branch) for member in members]
        ),
        label=progress.label(members, settings.levels),
        scalars_runs=[
            os.path.join(member.variant, f'trial_{member.trial}', f'level_{member.level}_{member.branch}')
            for member in members
        ],
        member_settings=members_lib.member_settings(padded),
    )

  def arrays_like(self, metadata: dict[str, Any]) -> Any:
    """The arrays of a checkpoint of this population, shaped from its `metadata` (a ValueError for another
    run's). A checkpoint of an earlier layout (see `resumed`) is restored in that layout."""
    start_step, total = self.start_step, self.settings.end_step
    if not start_step < metadata['step'] < total:
      raise ValueError(f'step {metadata["step"]} is outside this run ({start_step}..{total})')
    if metadata.get('members') != self.keys:
      raise ValueError(f'it holds the members {metadata.get("members")}, not {self.keys}')
    state, train_sums, snapshot_like = (
        self.state,
        self.trainer.placement.zero_train_sums(self.state),
        self.snapshot_like,
    )
    if metadata.get('optimizer_layout') != optim.STATE_LAYOUT:  # written before the hyperparameters lived there
      state = dataclasses.replace(state, opt_state=optim.without_hyperparameters(state.opt_state))
    if not self._has_member_axis(metadata):  # a run alone, written before every state had a member axis
      state, train_sums, snapshot_like = (_first_member(tree) for tree in (state, train_sums, snapshot_like))
    return run_state.RunCheckpoint.arrays_like(metadata, state, train_sums, snapshot_like)

  def resumed(self, arrays: dict[str, Any], metadata: dict[str, Any]) -> run_state.RunCheckpoint:
    """The checkpoint to continue from, of a restored checkpoint's `arrays` and `metadata`, in the current
    layout. Two earlier layouts are lifted into it: a run alone written before every state had a member
    axis gets one (of one member), and an optimizer state written before the hyperparameters lived in it
    gets the population's own."""
    if not self._has_member_axis(metadata):
      arrays = {
          'state': self.trainer.put_state(steps.stack_members([parallel.to_host(arrays['state'])])),
          'train_sums': steps.stack_members([arrays['train_sums']]),
          'snapshots': {step: steps.stack_members([tree]) for step, tree in (arrays.get('snapshots') or {}).items()},
      }
      metadata = {**metadata, 'curve': [_one_member_entry(entry) for entry in metadata['curve']]}
    if metadata.get('optimizer_layout') != optim.STATE_LAYOUT:
      restored = arrays['state']
      opt_state = optim.restore_hyperparameters(restored.opt_state, self.state.opt_state)
      arrays = {**arrays, 'state': dataclasses.replace(restored, opt_state=opt_state)}
    return run_state.RunCheckpoint.from_parts(arrays, metadata)

  def _has_member_axis(self, metadata: dict[str, Any]) -> bool:
    """Whether a checkpoint's state has a member axis: every one written since the metadata says so, and
    before that every population's but a run alone's, which trained on a Trainer without a member axis
    when it carried no hyperparameters of its own and the mesh had one member group."""
    if metadata.get('member_axis'):
      return True
    alone = len(self.members) == 1 and self.slots == 1 and not self.trainer.member_hyperparameters
    return not (alone and parallel.member_groups(self.trainer.mesh) == 1)

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
    """The examples/s of the real members (padding excluded) of the population's `speed`."""
    return speed * len(self.members) / self.slots

  def on_snapshot(self, step: int, snapshot: tuple[Any, Any]) -> None:
    """Hands each member that asked for a snapshot of `step` (at or after its start) its own."""
    for index, member in enumerate(self.members):
      if member.on_snapshot is not None and members_lib.snapshots_at(member, step):
        member.on_snapshot(step, members_lib.member_snapshot(snapshot, index))

  def save(self, running: checkpoints.RunCheckpoints, checkpoint: run_state.RunCheckpoint) -> None:
    """Saves `checkpoint` in `running`, naming the population's members."""
    metadata = {
        **checkpoint.metadata(),
        'members': self.keys,
        'optimizer_layout': optim.STATE_LAYOUT,
        'member_axis': True,
    }
    running.save(checkpoint.step, checkpoint.arrays(), metadata)

  def results(self, result: run_state.TrainResult) -> list[MemberResult]:
    """One result per member (padding dropped) of the population's `result`."""
    members = self.members
    final_params = parallel.to_host(result.state.params)
    # A member that starts later than the population has no evaluation, and no snapshot, before its start.
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


def _one_member_entry(entry: dict[str, Any]) -> dict[str, Any]:
  """A curve entry of a run alone written before every state had a member axis, as a population of one
  records it: each metric a list of one value (the step and the clocks stay numbers)."""
  shared = ('step', 'examples_per_second', 'evaluation_seconds')
  return {key: value if key in shared else [value] for key, value in entry.items()}


def _first_member(tree: Any) -> Any:
  """The first member's slice of a population tree, as host arrays (0-d arrays, not numpy scalars: a
  checkpoint restores into arrays)."""
  return jax.tree_util.tree_map(lambda leaf: np.asarray(np.asarray(leaf)[0]), tree)

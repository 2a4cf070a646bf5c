"""The lottery runner: levels of training, pruning and resetting, with control branches.

Level 0 trains the dense network from W_0 and keeps the weights at `pruning.rewind_step` (W_k; W_0
when the rewind step is 0). Each later level prunes the previous ticket's trained weights by
magnitude, resets the survivors to W_k and trains them from step k to the end; each control branch
(random reinitialization, permuted mask, ...) trains from the same level's mask. Every finished
(level, branch, trial) is appended to `WORKDIR/results.jsonl`; re-running in the same workdir skips
what is already recorded.

Each level's runs that are not yet recorded (level 0: every trial's dense run; level L: every trial's
ticket and controls) train as a cohort, in programs of at most `parallel.members_per_program` runs
(`lth_jax.cohorts`). Runs survive being killed: a program in progress is checkpointed every
`checkpointing.every_steps` steps (and at the current step on SIGTERM), and a re-run continues it from
its newest good checkpoint with the same result as a run never interrupted. What a config builds
lives in `lth_jax.experiment`; the workdir's lock and config check in `lth_jax.workdir`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from lth_jax import branches as branches_lib
from lth_jax import checkpoints
from lth_jax import cohorts
from lth_jax import masks as masks_lib
from lth_jax import pruning
from lth_jax import results as results_lib
from lth_jax import scalars as scalars_lib
from lth_jax import tickets as tickets_lib
from lth_jax import train as train_lib
from lth_jax import validation
from lth_jax import workdir as workdir_lib

# The pieces a run is made of, under the names the library has always had here.
from lth_jax.cohorts import estimate_remaining_seconds  # noqa: F401  pylint: disable=unused-import
from lth_jax.experiment import Experiment, prepare, prunable_from_config  # noqa: F401
from lth_jax.preemption import StopRequest
from lth_jax.workdir import CONFIG_FILE, LOCK_FILE, RESULTS_FILE, check_workdir_config, workdir_lock  # noqa: F401

Preempted = train_lib.Preempted


@dataclasses.dataclass
class LotteryResults:
  """What a lottery run produced: its records (one per level, branch and trial) and where it lives."""

  workdir: str
  records: list[dict[str, Any]]

  def table(self) -> str:
    """The records as a printable table."""
    return results_lib.format_table(self.records)

  def sparsity_table(self) -> str:
    """Test metric against fraction of weights remaining, one column per branch."""
    return results_lib.format_sparsity_table(self.records)

  def select(self, **fields: Any) -> list[dict[str, Any]]:
    """Records whose fields equal the given values, e.g. `select(branch='ticket', trial=0)`."""
    return [record for record in self.records if all(record.get(k) == v for k, v in fields.items())]


@dataclasses.dataclass(frozen=True)
class PruningPlan:
  """The pruning fields of a config as plain values."""

  scope: str
  fraction: float
  layer_fractions: dict[str, float]
  levels: int
  mode: str
  target_density: float | None
  min_weights_per_layer: int
  rewind_step: int
  turnaround_step: int  # prune from the weights at this step (0: at the end of training)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'PruningPlan':
    """Reads config.pruning (already validated)."""
    pruning_config = config.pruning
    return cls(
        scope=pruning_config.get('scope', 'local'),
        fraction=validation.fraction_per_level(config),
        layer_fractions=dict(pruning_config.get('layer_fractions') or {}),
        levels=pruning_config.levels,
        mode=pruning_config.get('mode', 'iterative'),
        target_density=pruning_config.get('target_density'),
        min_weights_per_layer=pruning_config.get('min_weights_per_layer', 0),
        rewind_step=pruning_config.get('rewind_step', 0),
        turnaround_step=pruning_config.get('turnaround_step', 0) or 0,
    )

  def pruning_weights(self, snapshots: dict[int, tuple[Any, Any]], final_params: Any) -> Any:
    """The weights a run's mask is pruned from: its snapshot at the turnaround step, or its final weights."""
    if self.turnaround_step:
      return snapshots[self.turnaround_step][0]
    return final_params

  def next_mask(self, level: int, ticket_params: Any, keep_mask: Any, dense_params: Any, prunable: Any) -> Any:
    """The winning-ticket mask of `level` (>= 1)."""
    if self.mode == 'one_shot':
      fraction, layer_fractions = pruning.one_shot_fractions(self.fraction, self.layer_fractions, level)
      return pruning.prune(
          pruning.magnitude_scores(dense_params),
          masks_lib.ones_like(keep_mask),
          prunable,
          fraction,
          self.scope,
          layer_fractions,
          self.min_weights_per_layer,
      )
    return pruning.prune(
        pruning.magnitude_scores(ticket_params),
        keep_mask,
        prunable,
        self.fraction,
        self.scope,
        self.layer_fractions,
        self.min_weights_per_layer,
    )

  def reached_target(self, density: float) -> bool:
    """Whether the target density (if any) is reached."""
    return self.target_density is not None and density <= self.target_density * (1 + validation.DENSITY_TOLERANCE)


def _branch_seed(*parts: int) -> int:
  """A seed derived from (config seed, trial, level, branch index)."""
  return int(np.random.SeedSequence([int(part) for part in parts]).generate_state(1)[0])


def format_surviving_weights(params: Any, keep_mask: Any, prunable: Any, limit: int = 32) -> str:
  """The surviving prunable weights, one per line as 'layer [input, output]: value' (kernel indices)."""
  lines = []
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  for (path, weight), keep, is_prunable in zip(
      flat, jax.tree_util.tree_leaves(keep_mask), jax.tree_util.tree_leaves(prunable)
  ):
    if not is_prunable:
      continue
    lines.append(f'  {masks_lib.leaf_name(masks_lib.path_to_names(path))}')
    positions = np.argwhere(np.asarray(keep))
    for position in positions[:limit]:
      lines.append(f'    [{", ".join(map(str, position))}]: {float(np.asarray(weight)[tuple(position)]):.6g}')
    if len(positions) > limit:
      lines.append(f'    ... {len(positions) - limit} more')
  return '\n'.join(lines)


class _Trial:
  """One trial's lottery state between levels: its seeds, W_0, the rewind point, and the ticket it
  prunes the next level's mask from. Builds the members a level trains and takes their results."""

  def __init__(self, runner: '_LevelRunner', trial: int):
    self.runner, self.trial = runner, trial
    self.plan = runner.plan
    self.init_seed, self.data_seed = trial_seeds(runner.seed, trial)
    self.trial_dir = os.path.join(runner.workdir, 'checkpoints', f'trial_{trial}')
    self.params0, self.model_state0 = runner.trainer.init_variables(self.init_seed)
    self.prunable = prunable_from_config(self.params0, runner.config)
    self.keep_mask = jax.tree_util.tree_map(lambda leaf: np.ones(leaf.shape, bool), self.params0)
    if runner.experiment.ticket is not None:  # a transferred ticket: level 0 starts from it
      transfer = runner.config.transfer
      self.params0, self.model_state0, self.keep_mask = tickets_lib.transfer_start(
          runner.experiment.ticket,
          self.params0,
          self.model_state0,
          transfer.get('start', 'ticket'),
          transfer.get('output_layer', 'dense'),
          seed=self.init_seed,
      )
    self.rewind: tuple[Any, Any] | None = None  # (params, model_state) at the rewind step
    self.dense_params: Any = None  # what one-shot pruning prunes from
    self.ticket_params: Any = None  # what the next level's mask is pruned from
    self.active = True
    self.last_level: dict[str, tuple[dict[str, Any], Any, Any]] = {}

  @property
  def rewind_dir(self) -> str:
    return os.path.join(self.trial_dir, 'rewind')

  def level_dir(self, level: int) -> str:
    return level_directory(self.runner.workdir, self.trial, level)

  def done(self, level: int, branch: str) -> bool:
    """Whether (this trial, level, branch) is recorded (then its leftover checkpoints go)."""
    done = self.runner.recorded(self.trial, level, branch)
    if done:  # a run killed between writing its record and deleting its checkpoints left them behind
      checkpoints.remove(running_directory(self.runner.workdir, self.trial, level, branch))
    return done

  def _restore_finished(self, directory: str, like: Any, what: str, level: int) -> Any:
    """A checkpoint of a finished level, or a CheckpointError naming it and saying how to recover."""
    try:
      return checkpoints.restore_tree(directory, like)
    except Exception as error:  # pylint: disable=broad-except  (orbax and tensorstore raise many types)
      message = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
      raise checkpoints.CheckpointError(
          f'{os.path.abspath(directory)}: cannot restore the {what} of trial {self.trial} (finished, '
          f'and needed by the levels after it): {message}. To recompute it, delete that folder and the '
          f'records of trial {self.trial} with level >= {level} from {self.runner.results_path}, then re-run; '
          f'or start over in a new workdir.'
      ) from error

  def _restore_level(self, level: int) -> tuple[Any, Any, Any]:
    """(final weights, weights to prune from, mask) of a finished level."""
    like = {'params': self.params0, 'mask': self.keep_mask}
    if self.plan.turnaround_step:
      like['turnaround_params'] = self.params0
    tree = self._restore_finished(self.level_dir(level), like, f'level {level} ticket checkpoint', level)
    return tree['params'], tree.get('turnaround_params', tree['params']), tree['mask']

  def _save_level(self, level: int, final_params: Any, pruning_params: Any) -> None:
    """Keeps a level's ticket for good: final weights, mask, and (with early turnaround) the weights
    the next level prunes from."""
    tree = {'params': final_params, 'mask': self.keep_mask}
    if self.plan.turnaround_step:
      tree['turnaround_params'] = pruning_params
    checkpoints.save_tree(self.level_dir(level), tree)

  def level_zero(self) -> list[cohorts.Member]:
    """The dense run, or nothing when it is recorded (its rewind point and weights are restored)."""
    rewind_step = self.plan.rewind_step
    if self.done(0, 'ticket') and self.runner.diverged_ticket(self.trial, 0) is not None:
      return []  # the dense run diverged: nothing to restore, the trial stops (see `_LevelRunner.run`)
    if self.done(0, 'ticket'):
      self.rewind = self._restore_finished(
          self.rewind_dir, (self.params0, self.model_state0), f'rewind point (step {rewind_step})', 0
      )
      _, self.dense_params, self.keep_mask = self._restore_level(0)
      self.ticket_params = self.dense_params
      self.runner.log(f'trial {self.trial} level 0: already done, restored from {self.level_dir(0)}')
      return []

    def save_rewind_point(step: int, snapshot: tuple[Any, Any]) -> None:
      if step == rewind_step:  # at once: a run killed later in level 0 still has it
        checkpoints.save_tree(self.rewind_dir, snapshot)

    turnaround = tuple(step for step in (self.plan.turnaround_step,) if step)
    return [
        cohorts.Member(
            self.trial,
            0,
            'ticket',
            self.params0,
            self.model_state0,
            self.keep_mask,
            self.data_seed,
            (rewind_step, *turnaround),
            save_rewind_point,
        )
    ]

  def stop_diverged(self, level: int, step: int | None) -> None:
    """Stops this trial after its level-`level` ticket diverged, saying what to change."""
    self.active = False
    self.runner.log(
        f'lth_jax: trial {self.trial}: the level {level} ticket diverged (non-finite loss or weights at step {step}), '
        f'so level {level + 1} is not pruned from its weights and this trial stops here. Lower '
        f'training.learning_rate ({self.runner.learning_rate:g}) or add training.warmup_steps, and run again in a '
        'new workdir.'
    )

  def prepare_level(self, level: int) -> None:
    """Prunes this level's winning-ticket mask (or stops the trial when nothing is left to prune)."""
    new_mask = self.plan.next_mask(level, self.ticket_params, self.keep_mask, self.dense_params, self.prunable)
    if all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree_util.tree_leaves(new_mask), jax.tree_util.tree_leaves(self.keep_mask))
    ):
      self.runner.log(f'trial {self.trial} level {level}: no weight left to prune; stopping')
      self.active = False
      return
    self.keep_mask = new_mask
    if self.done(level, 'ticket'):
      _, self.ticket_params, self.keep_mask = self._restore_level(level)

  def member(self, level: int, branch: str) -> cohorts.Member:
    """The starting point of one (level >= 1, branch) run of this trial."""
    runner = self.runner
    rewind_params, rewind_model_state = self.rewind
    inputs = branches_lib.BranchInputs(
        ticket_mask=self.keep_mask,
        rewind_params=rewind_params,
        rewind_model_state=rewind_model_state,
        prunable=self.prunable,
        init_variables=runner.trainer.init_variables,
        seed=_branch_seed(runner.seed, self.trial, level, 2 + runner.branch_names.index(branch)),
        loss_gradients=lambda params, model_state: runner.trainer.mean_gradients(
            params, model_state, self.data_seed, runner.snip_batches
        ),
    )
    params, model_state, branch_mask = branches_lib.start(branch, inputs)
    turnaround = tuple(step for step in (self.plan.turnaround_step,) if step)
    return cohorts.Member(
        self.trial,
        level,
        branch,
        params,
        model_state,
        branch_mask,
        self.data_seed,
        turnaround if branch == 'ticket' else (),
    )

  def finish(self, result: cohorts.MemberResult) -> dict[str, Any]:
    """Takes one member's result (keeping a ticket's level for good); returns its record (not yet written).
    A diverged ticket stops the trial: the next level is not pruned from non-finite weights."""
    member = result.member
    if result.diverged_step is not None:
      self.runner.log(
          f'lth_jax: warning: trial {self.trial} level {member.level} {member.branch} diverged: a '
          f'non-finite loss or weight at step {result.diverged_step} '
          f'(training.learning_rate={self.runner.learning_rate:g}); its record says "diverged": true'
      )
    if member.level == 0:
      self.rewind = result.snapshots.get(self.plan.rewind_step)
      if self.plan.turnaround_step and self.plan.turnaround_step not in result.snapshots:
        self.dense_params = result.final_params  # diverged before the turnaround step: never pruned from
      else:
        self.dense_params = self.plan.pruning_weights(result.snapshots, result.final_params)
      if self.rewind is not None and not os.path.isdir(self.rewind_dir):  # resumed past the rewind step
        checkpoints.save_tree(self.rewind_dir, self.rewind)
      self.ticket_params = self.dense_params
      self._save_level(0, result.final_params, self.dense_params)
    elif member.branch == 'ticket':
      self.ticket_params = (
          result.final_params
          if self.plan.turnaround_step not in result.snapshots and self.plan.turnaround_step
          else self.plan.pruning_weights(result.snapshots, result.final_params)
      )
      self._save_level(member.level, result.final_params, self.ticket_params)
    if member.branch == 'ticket' and result.diverged_step is not None:
      self.stop_diverged(member.level, result.diverged_step)
    start_step = 0 if member.level == 0 else self.plan.rewind_step
    record = self.runner.record(member, result, self.prunable, start_step)
    self.last_level[member.branch] = (record, result.final_params, member.keep_mask)
    return record


class _LevelRunner:
  """Runs (or resumes) every trial's levels, each level's unrecorded runs trained as a cohort."""

  def __init__(
      self,
      experiment: 'Experiment',
      workdir: str,
      records: list[dict[str, Any]],
      log: Callable[[str], None],
      should_stop: Callable[[int], bool] | None = None,
      scalars: scalars_lib.Scalars | None = None,
  ):
    config = experiment.config
    self.config, self.experiment, self.workdir = config, experiment, workdir
    self.trainer = experiment.trainer()
    self.plan = PruningPlan.from_config(config)
    self.total_steps, self.records, self.log = experiment.total_steps, records, log
    self.scalars = scalars or scalars_lib.Scalars(None)
    self.seed = int(config.get('seed', 0))
    self.results_path = os.path.join(workdir, RESULTS_FILE)
    self.snip_batches = int(config.pruning.get('snip_batches', 1))
    self.branch_names = ['ticket', *[name for name in config.get('branches', ()) if name != 'ticket']]
    self.members_per_program = experiment.members_per_program
    self.learning_rate = float(config.training.learning_rate)
    checkpointing = config.get('checkpointing', {})
    settings = cohorts.ProgramSettings(
        end_step=self.total_steps,
        eval_every=int(config.training.get('eval_every', 0)),
        checkpoint_every=int(checkpointing.get('every_steps', 0)),
        max_to_keep=int(checkpointing.get('max_to_keep', 2)),
        progress_every_seconds=float(config.get('report', {}).get('progress_every_seconds', 60.0)),
        levels=self.plan.levels,
    )
    self.programs = cohorts.ProgramRunner(workdir, experiment.program_trainer, settings, log, should_stop, self.scalars)

  def diverged_ticket(self, trial: int, level: int) -> dict[str, Any] | None:
    """The record of (trial, level)'s ticket if it diverged."""
    return next(
        (
            record
            for record in self.records
            if record['trial'] == trial
            and record['level'] == level
            and record['branch'] == 'ticket'
            and results_lib.is_diverged(record)
        ),
        None,
    )

  def recorded(self, trial: int, level: int, branch: str) -> bool:
    return any(
        record['trial'] == trial and record['level'] == level and record['branch'] == branch for record in self.records
    )

  def record(
      self, member: cohorts.Member, result: cohorts.MemberResult, prunable: Any, start_step: int
  ) -> dict[str, Any]:
    """The record of one finished run."""
    final = result.curve[-1]
    metric = 'test_accuracy' if 'test_accuracy' in final else 'test_rmse'
    values = [entry[metric] for entry in result.curve if np.isfinite(entry[metric])]
    best = (max(values) if metric == 'test_accuracy' else min(values)) if values else None
    record = {
        'trial': member.trial,
        'level': member.level,
        'branch': member.branch,
        'fraction_remaining': masks_lib.density(member.keep_mask, prunable),
        'kept_weights': int(sum(masks_lib.count_per_layer(member.keep_mask, prunable).values())),
        'nonzero_weights': masks_lib.nonzero_count(result.final_params, prunable),
        'layer_density': masks_lib.density_per_layer(member.keep_mask, prunable),
        metric: final[metric],
        'test_loss': final['test_loss'],
        f'best_{metric}': best,
        'steps': self.total_steps - start_step,
        'start_step': start_step,
        'end_step': self.total_steps,
        'curve': [
            {key: entry[key] for key in ('step', metric, 'test_loss', 'train_loss') if key in entry}
            for entry in result.curve
        ],
        'wall_seconds': result.wall_seconds,
        'seed': self.seed,
    }
    if result.diverged_step is not None:
      record.update(diverged=True, diverged_step=result.diverged_step)
    return results_lib.finite_or_none(record)

  def _write(self, program: list[cohorts.Member], records: list[dict[str, Any]]) -> None:
    """Appends a program's records in one atomic write, then deletes its periodic checkpoints."""
    if jax.process_index() == 0:
      results_lib.append_records(self.results_path, records)
    self.records.extend(records)
    # The records are what mark the runs done: only now may their periodic checkpoints go.
    checkpoints.remove(
        cohorts.running_directory(self.workdir, program[0].level, [(member.trial, member.branch) for member in program])
    )
    for record in records:
      metric = 'test_accuracy' if 'test_accuracy' in record else 'test_rmse'
      self.scalars.write(
          os.path.join(f'trial_{record["trial"]}', 'levels'),
          record['level'],
          {
              f'{record["branch"]}/{metric}': record[metric],
              f'{record["branch"]}/percent_remaining': 100 * record['fraction_remaining'],
          },
      )

  def _train_cohort(
      self,
      level: int,
      keys: list[tuple[int, str]],
      build: Callable[[int, str], cohorts.Member | None],
      trials: dict[int, _Trial],
  ) -> None:
    """Trains the unrecorded runs among `keys` ((trial, branch) of this level) in programs."""
    start_step = 0 if level == 0 else self.plan.rewind_step
    for group in cohorts.groups(keys, self.members_per_program):
      program = [member for member in (build(trial, branch) for trial, branch in group) if member is not None]
      if not program:  # recorded: a run killed before deleting its checkpoints may have left them
        checkpoints.remove(cohorts.running_directory(self.workdir, level, group))
        continue
      results = self.programs.train(program, start_step)
      records = [trials[result.member.trial].finish(result) for result in results]
      self._write(program, records)

  def run(self, num_trials: int) -> None:
    """Level 0 of every trial as one cohort, then each pruning level's trials x branches as one."""
    trials = {trial: _Trial(self, trial) for trial in range(num_trials)}
    level_zero = {trial: state.level_zero() for trial, state in trials.items()}
    self._train_cohort(
        0, [(trial, 'ticket') for trial in trials], lambda trial, branch: (level_zero[trial] or [None])[0], trials
    )
    for level in range(1, self.plan.levels + 1):
      active = [state for state in trials.values() if state.active]
      for state in active:
        diverged = self.diverged_ticket(state.trial, level - 1)
        if diverged is not None:  # recorded so by an earlier run of this workdir
          state.stop_diverged(level - 1, diverged.get('diverged_step'))
          continue
        state.prepare_level(level)
      active = [state for state in active if state.active]
      if not active:
        break
      keys = [(state.trial, branch) for state in active for branch in self.branch_names]
      self._train_cohort(
          level,
          keys,
          lambda trial, branch: None if trials[trial].done(level, branch) else trials[trial].member(level, branch),
          trials,
      )
      for state in active:
        if self.plan.reached_target(masks_lib.density(state.keep_mask, state.prunable)):
          self.log(f'trial {state.trial} level {level}: target density reached; stopping')
          state.active = False
    for state in trials.values():
      running = os.path.join(state.trial_dir, 'running')
      if jax.process_index() == 0 and os.path.isdir(running) and not os.listdir(running):
        os.rmdir(running)
    running = os.path.join(self.workdir, 'checkpoints', 'running')
    if jax.process_index() == 0 and os.path.isdir(running) and not os.listdir(running):
      os.rmdir(running)
    if self.config.get('report', {}).get('print_surviving_weights', False):
      for state in trials.values():
        for branch, (record, final_params, branch_mask) in state.last_level.items():
          metric = 'test_accuracy' if 'test_accuracy' in record else 'test_rmse'
          self.log(
              f'trial {state.trial} level {record["level"]} {branch}: {record["kept_weights"]} weights '
              f'kept, {metric}={record[metric]:.6g}\n'
              + format_surviving_weights(final_params, branch_mask, state.prunable)
          )


def trial_seeds(seed: int, trial: int) -> tuple[int, int]:
  """(initialization seed, batch-order seed) of one trial."""
  return _branch_seed(seed, trial, 0), _branch_seed(seed, trial, 1)


def level_directory(workdir: str, trial: int, level: int) -> str:
  """Where a level's ticket (final weights and mask) is checkpointed."""
  return os.path.join(workdir, 'checkpoints', f'trial_{trial}', f'level_{level}')


def running_directory(workdir: str, trial: int, level: int, branch: str) -> str:
  """Where the periodic checkpoints of the (trial, level, branch) run in progress are kept when it
  trains alone (see `cohorts.running_directory` for a cohort program)."""
  return cohorts.running_directory(workdir, level, [(trial, branch)])


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    log: Callable[[str], None] = workdir_lib.log_on_process_zero,
    *,
    allow_config_change: bool = False,
) -> LotteryResults:
  """Runs (or resumes) the lottery experiment of `config` in `workdir`; returns its records.

  Every config check runs before any training: a bad field raises `validation.ConfigError` naming it,
  a workdir that is a file or not writable `validation.WorkdirError`, and a config whose results
  would differ from those of the config in `WORKDIR/config.json` a ConfigError listing the differing
  fields (unless `allow_config_change`). On SIGTERM, the run in progress is checkpointed at its
  current step and `Preempted` is raised; re-running continues it. A finished level whose checkpoint
  is damaged raises `checkpoints.CheckpointError` naming it.
  """
  experiment = prepare(config)
  workdir_lib.check_writable(workdir)
  experiment.trainer()  # built before WORKDIR/config.json is written
  try:
    with workdir_lock(workdir, log):
      return _run_locked(config, experiment, workdir, log, allow_config_change)
  except (Preempted, validation.ConfigError, checkpoints.CheckpointError):
    raise
  except Exception as error:  # pylint: disable=broad-except  (orbax, tensorstore, tensorboardX, the OS)
    written = results_lib.as_write_error(error, workdir)
    if written is None:
      raise
    raise written from error


def _run_locked(
    config: ml_collections.ConfigDict,
    experiment: 'Experiment',
    workdir: str,
    log: Callable[[str], None],
    allow_config_change: bool,
) -> LotteryResults:
  """`run` once the workdir is locked."""
  workdir_lib.check_config_file(config, workdir, allow_config_change, log, resolved=experiment.config)
  config = experiment.config  # resolved: global batch size, lengths in steps
  total_steps = experiment.total_steps
  plan = PruningPlan.from_config(config)
  records = results_lib.read_records(os.path.join(workdir, RESULTS_FILE))
  checkpointing = config.get('checkpointing', {})
  scalars = scalars_lib.Scalars(
      os.path.join(workdir, 'tensorboard') if checkpointing.get('tensorboard', True) else None
  )
  started = time.perf_counter()
  log(
      f'lth_jax: {config.model.name} on {config.dataset.name}, {total_steps} steps per level, '
      f'{plan.levels} pruning levels of {plan.fraction:.3g} ({plan.scope}, {plan.mode}), rewind step '
      f'{plan.rewind_step}, {config.get("trials", 1)} trial(s), {experiment.mesh.devices.size} device(s), '
      f'up to {experiment.members_per_program} run(s) per program'
      + (f'; {len(records)} record(s) already in {workdir}' if records else '')
  )
  stop = StopRequest()
  stop.install()
  try:
    _LevelRunner(experiment, workdir, records, log, should_stop=stop, scalars=scalars).run(config.get('trials', 1))
  finally:
    stop.restore()
    scalars.close()
  log(f'finished in {time.perf_counter() - started:.1f} s; results in {os.path.join(workdir, RESULTS_FILE)}')
  log(results_lib.format_table(records))
  log(results_lib.format_sparsity_table(records))
  return LotteryResults(workdir=workdir, records=records)

"""The level runner: every trial's levels in order, each level's unrecorded runs (level 0: the
trials' dense runs; level L: every trial's ticket and controls) trained as one cohort in programs of
at most `parallel.members_per_program` runs, their records appended atomically to the results file.
A sweep drives several level runners level by level instead (`lth_jax.search.packs`), through
`start`, `level_runs`, `member`, `finish`, `write`, `level_finished` and `end`."""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import numpy as np

from lth_jax import masks as masks_lib
from lth_jax import results as results_lib
from lth_jax.search import cohorts
from lth_jax.search import packing
from lth_jax.search import workdir as workdir_lib
from lth_jax.search.members import Member
from lth_jax.search.members import MemberResult
from lth_jax.search import scalars as scalars_lib
from lth_jax.training import checkpoints
from lth_jax.search.experiment import Experiment
from lth_jax.search.trial import Trial
from lth_jax.results import RESULTS_FILE


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


class LevelRunner:
  """Runs (or resumes) every trial's levels, each level's unrecorded runs trained as a cohort."""

  def __init__(
      self,
      experiment: Experiment,
      workdir: str,
      records: list[dict[str, Any]],
      log: Callable[[str], None],
      should_stop: Callable[[int], bool] | None = None,
      scalars: scalars_lib.Scalars | None = None,
      keep_snapshots: tuple[int, ...] = (),
      record_fields: dict[str, Any] | None = None,
      programs: cohorts.ProgramRunner | None = None,
      variant: str = '',
      hyperparameters: dict[str, float] | None = None,
  ):
    """`programs`, `variant` and `hyperparameters`: for a sweep's variant whose runs train in programs
    shared with other variants (`lth_jax.search.packs`): the shared ProgramRunner, the variant's name
    in them and its own values of the hyperparameters its programs' members differ in."""
    spec = experiment.spec
    self.spec, self.experiment, self.workdir = spec, experiment, workdir
    self.trainer = experiment.trainer()
    self.plan = spec.pruning
    self.total_steps, self.records, self.log = experiment.total_steps, records, log
    self.scalars = scalars or scalars_lib.Scalars(None)
    self.seed = spec.seed
    self.results_path = os.path.join(workdir, RESULTS_FILE)
    self.branch_names = spec.branch_names
    self.members_per_program = experiment.members_per_program
    self.keep_snapshots, self.record_fields = keep_snapshots, dict(record_fields or {})
    self.variant, self.hyperparameters = variant, dict(hyperparameters or {})
    self.trials: dict[int, Trial] = {}
    self._level_zero: dict[int, list[Member]] = {}
    settings = cohorts.ProgramSettings.from_spec(spec)
    self.programs = programs or cohorts.ProgramRunner(
        workdir, experiment.program_trainer, settings, log, should_stop, self.scalars
    )

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

  def record(self, member: Member, result: MemberResult, prunable: Any, start_step: int) -> dict[str, Any]:
    """The record of one finished run."""
    final = result.curve[-1]
    task = self.experiment.task
    metric = task.metric_name
    values = [entry[metric] for entry in result.curve if np.isfinite(entry[metric])]
    best = (max(values) if task.higher_is_better else min(values)) if values else None
    other_metrics = {f'test_{extra.name}': final[f'test_{extra.name}'] for extra in task.metrics[1:]}
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
        **other_metrics,
        'metric': metric,
        'higher_is_better': task.higher_is_better,
        'steps': self.total_steps - start_step,
        'start_step': start_step,
        'end_step': self.total_steps,
        'curve': [
            {key: entry[key] for key in ('step', metric, 'test_loss', 'train_loss') if key in entry}
            for entry in result.curve
        ],
        'wall_seconds': result.wall_seconds,
        'seed': self.seed,
        **self.record_fields,
    }
    if result.diverged_step is not None:
      record.update(diverged=True, diverged_step=result.diverged_step)
    return results_lib.finite_or_none(record)

  def write(self, records: list[dict[str, Any]]) -> None:
    """Appends finished runs' records to the results file in one atomic write (and their level scalars)."""
    if jax.process_index() == 0:
      results_lib.append_records(self.results_path, records)
    self.records.extend(records)
    for record in records:
      metric = results_lib.metric_of(record)
      self.scalars.write(
          os.path.join(f'trial_{record["trial"]}', 'levels'),
          record['level'],
          {
              f'{record["branch"]}/{metric}': record[metric],
              f'{record["branch"]}/percent_remaining': 100 * record['fraction_remaining'],
          },
      )

  def finish(self, results: list[MemberResult]) -> list[dict[str, Any]]:
    """The records of finished members of this search (each trial takes its own results first)."""
    return [self.trials[result.member.trial].finish(result) for result in results]

  def start(self, num_trials: int) -> None:
    """Builds every trial (its W_0) and level 0's runs (none for a trial whose level 0 is recorded)."""
    self.trials = {trial: Trial(self, trial) for trial in range(num_trials)}
    self._level_zero = {trial: state.level_zero() for trial, state in self.trials.items()}

  def level_runs(self, level: int) -> list[tuple[int, str]]:
    """The (trial, branch) runs of `level`, recorded ones included: level 0's dense runs; for a pruned
    level, every active trial's ticket and controls once its mask is pruned (none once no trial is active)."""
    if level == 0:
      return [(trial, 'ticket') for trial in self.trials]
    active = [state for state in self.trials.values() if state.active]
    for state in active:
      diverged = self.diverged_ticket(state.trial, level - 1)
      if diverged is not None:  # recorded so by an earlier run of this workdir
        state.stop_diverged(level - 1, diverged.get('diverged_step'))
        continue
      state.prepare_level(level)
    return [(state.trial, branch) for state in active if state.active for branch in self.branch_names]

  def member(self, level: int, trial: int, branch: str) -> Member | None:
    """The member that trains (trial, level, branch), or None when it is recorded."""
    if level == 0:
      member = self._level_zero[trial][0] if self._level_zero[trial] else None
    else:
      member = None if self.trials[trial].done(level, branch) else self.trials[trial].member(level, branch)
    if member is not None:
      member.variant, member.hyperparameters = self.variant, dict(self.hyperparameters)
    return member

  def level_finished(self, level: int) -> None:
    """Stops the trials whose ticket reached the target density at `level` (>= 1)."""
    for state in self.trials.values():
      if state.active and self.plan.reached_target(masks_lib.density(state.keep_mask, state.prunable)):
        self.log(f'trial {state.trial} level {level}: target density reached; stopping')
        state.active = False

  def _train_cohort(self, level: int, runs: list[tuple[int, str]]) -> None:
    """Trains the unrecorded runs among `runs` ((trial, branch) of this level) in programs."""
    for group in packing.groups(runs, self.members_per_program):
      directory = workdir_lib.program_directory(self.workdir, level, [(self.variant, *run) for run in group])
      program = [member for member in (self.member(level, *run) for run in group) if member is not None]
      if program:
        self.write(self.finish(self.programs.train(program)))
      # The records are what mark the runs done: only now may their periodic checkpoints go (a run killed
      # before deleting them leaves them behind).
      checkpoints.remove(directory)

  def run(self, num_trials: int) -> None:
    """Level 0 of every trial as one cohort, then each pruning level's trials x branches as one."""
    self.start(num_trials)
    self._train_cohort(0, self.level_runs(0))
    for level in range(1, self.plan.levels + 1):
      runs = self.level_runs(level)
      if not runs:
        break
      self._train_cohort(level, runs)
      self.level_finished(level)
    self.end()

  def end(self) -> None:
    """Removes the emptied folders of programs in progress; prints the surviving weights if asked to."""
    for state in self.trials.values():
      running = workdir_lib.running_folder(self.workdir, state.trial)
      if jax.process_index() == 0 and os.path.isdir(running) and not os.listdir(running):
        os.rmdir(running)
    running = workdir_lib.running_folder(self.workdir)
    if jax.process_index() == 0 and os.path.isdir(running) and not os.listdir(running):
      os.rmdir(running)
    if self.spec.report.print_surviving_weights:
      for state in self.trials.values():
        for branch, (record, final_params, branch_mask) in state.last_level.items():
          metric = results_lib.metric_of(record)
          self.log(
              f'trial {state.trial} level {record["level"]} {branch}: {record["kept_weights"]} weights '
              f'kept, {metric}={record[metric]:.6g}\n'
              + format_surviving_weights(final_params, branch_mask, state.prunable)
          )

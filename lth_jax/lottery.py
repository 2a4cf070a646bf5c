"""The lottery runner: levels of training, pruning and resetting, with control branches.

Level 0 trains the dense network from W_0 and keeps the weights at `pruning.rewind_step` (W_k; W_0
when the rewind step is 0). Each later level prunes the previous ticket's trained weights by
magnitude, resets the survivors to W_k and trains them from step k to the end; each control branch
(random reinitialization, permuted mask, ...) trains from the same level's mask. Every finished
(level, branch, trial) is appended to `WORKDIR/results.jsonl`; re-running in the same workdir skips
what is already recorded.

Runs survive being killed: the run in progress is checkpointed every `checkpointing.every_steps`
steps (and at the current step on SIGTERM) under `WORKDIR/checkpoints/trial_T/running/level_L_BRANCH`,
and a re-run continues it from its newest good checkpoint with the same result as a run never
interrupted. The config is kept in `WORKDIR/config.json`; a re-run with a config that would change
the results is refused unless `allow_config_change`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import socket
import threading
import time
from typing import Any, Callable, Iterator

try:
  import fcntl
except ImportError:  # not on POSIX: runs sharing a workdir are not detected
  fcntl = None

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from lth_jax import branches as branches_lib
from lth_jax import checkpoints
from lth_jax import cohorts
from lth_jax import config_schema
from lth_jax import data as data_lib
from lth_jax import masks as masks_lib
from lth_jax import models as models_lib
from lth_jax import optim
from lth_jax import parallel
from lth_jax import pruning
from lth_jax import results as results_lib
from lth_jax import tickets as tickets_lib
from lth_jax import train as train_lib
from lth_jax import validation

from lth_jax.cohorts import estimate_remaining_seconds  # pylint: disable=unused-import  (public name)

RESULTS_FILE = 'results.jsonl'
CONFIG_FILE = 'config.json'
LOCK_FILE = '.lock'
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
    return cls(scope=pruning_config.get('scope', 'local'),
               fraction=validation.fraction_per_level(config),
               layer_fractions=dict(pruning_config.get('layer_fractions') or {}),
               levels=pruning_config.levels,
               mode=pruning_config.get('mode', 'iterative'),
               target_density=pruning_config.get('target_density'),
               min_weights_per_layer=pruning_config.get('min_weights_per_layer', 0),
               rewind_step=pruning_config.get('rewind_step', 0),
               turnaround_step=pruning_config.get('turnaround_step', 0) or 0)

  def pruning_weights(self, snapshots: dict[int, tuple[Any, Any]], final_params: Any) -> Any:
    """The weights a run's mask is pruned from: its snapshot at the turnaround step, or its final weights."""
    if self.turnaround_step:
      return snapshots[self.turnaround_step][0]
    return final_params

  def next_mask(self, level: int, ticket_params: Any, keep_mask: Any, dense_params: Any,
                prunable: Any) -> Any:
    """The winning-ticket mask of `level` (>= 1)."""
    if self.mode == 'one_shot':
      fraction, layer_fractions = pruning.one_shot_fractions(self.fraction, self.layer_fractions, level)
      return pruning.prune(pruning.magnitude_scores(dense_params), masks_lib.ones_like(keep_mask), prunable,
                           fraction, self.scope, layer_fractions, self.min_weights_per_layer)
    return pruning.prune(pruning.magnitude_scores(ticket_params), keep_mask, prunable, self.fraction,
                         self.scope, self.layer_fractions, self.min_weights_per_layer)

  def reached_target(self, density: float) -> bool:
    """Whether the target density (if any) is reached."""
    return (self.target_density is not None
            and density <= self.target_density * (1 + validation.DENSITY_TOLERANCE))


def _branch_seed(*parts: int) -> int:
  """A seed derived from (config seed, trial, level, branch index)."""
  return int(np.random.SeedSequence([int(part) for part in parts]).generate_state(1)[0])


def _layer_sizes(params: Any, prunable: Any) -> dict[str, int]:
  """Number of prunable weights per layer (module path)."""
  sizes: dict[str, int] = {}
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  for (path, leaf), is_prunable in zip(flat, jax.tree_util.tree_leaves(prunable)):
    if is_prunable:
      layer = masks_lib.module_path(masks_lib.path_to_names(path))
      sizes[layer] = sizes.get(layer, 0) + int(np.prod(leaf.shape))
  return sizes


def _prunable_from_config(params: Any, config: ml_collections.ConfigDict) -> Any:
  return masks_lib.prunable_tree(params, tuple(config.pruning.get('prunable_parameters', ('kernel',))),
                                 tuple(config.pruning.get('excluded_layers', ())))


def format_surviving_weights(params: Any, keep_mask: Any, prunable: Any, limit: int = 32) -> str:
  """The surviving prunable weights, one per line as 'layer [input, output]: value' (kernel indices)."""
  lines = []
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  for (path, weight), keep, is_prunable in zip(flat, jax.tree_util.tree_leaves(keep_mask),
                                               jax.tree_util.tree_leaves(prunable)):
    if not is_prunable:
      continue
    lines.append(f'  {masks_lib.leaf_name(masks_lib.path_to_names(path))}')
    positions = np.argwhere(np.asarray(keep))
    for position in positions[:limit]:
      lines.append(f'    [{", ".join(map(str, position))}]: {float(np.asarray(weight)[tuple(position)]):.6g}')
    if len(positions) > limit:
      lines.append(f'    ... {len(positions) - limit} more')
  return '\n'.join(lines)




class _Scalars:
  """TensorBoard event files of scalar metrics (written with tensorboardX; nothing if it is missing):
  `WORKDIR/tensorboard/trial_T/level_L_BRANCH` for each run's curve, `.../trial_T/levels` for each
  record's final metric against the level. Written by process 0 only."""

  def __init__(self, directory: str | None):
    self.directory = directory
    self._writer_class = None
    self._writers: dict[str, Any] = {}
    if directory is not None and jax.process_index() == 0:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
        self._writer_class = SummaryWriter
      except ImportError:
        pass

  @property
  def enabled(self) -> bool:
    return self._writer_class is not None

  def write(self, run: str, step: int, scalars: dict[str, Any]) -> None:
    """Adds the numbers among `scalars` at `step` to the events of `run` (a folder below the directory)."""
    if self._writer_class is None:
      return
    if run not in self._writers:
      self._writers[run] = self._writer_class(os.path.join(self.directory, run))
    for tag, value in scalars.items():  # (a diverged run's NaNs are left out: TensorBoard cannot plot them)
      if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        self._writers[run].add_scalar(tag, value, step)
    self._writers[run].flush()

  def close(self, run: str | None = None) -> None:
    """Closes the event file of `run` (of every run when None)."""
    for name in [run] if run is not None else list(self._writers):
      writer = self._writers.pop(name, None)
      if writer is not None:
        writer.close()



class _Trial:
  """One trial's lottery state between levels: its seeds, W_0, the rewind point, and the ticket it
  prunes the next level's mask from. Builds the members a level trains and takes their results."""

  def __init__(self, runner: '_LevelRunner', trial: int):
    self.runner, self.trial = runner, trial
    self.plan = runner.plan
    self.init_seed, self.data_seed = trial_seeds(runner.seed, trial)
    self.trial_dir = os.path.join(runner.workdir, 'checkpoints', f'trial_{trial}')
    self.params0, self.model_state0 = runner.trainer.init_variables(self.init_seed)
    self.prunable = _prunable_from_config(self.params0, runner.config)
    self.keep_mask = jax.tree_util.tree_map(lambda leaf: np.ones(leaf.shape, bool), self.params0)
    if runner.experiment.ticket is not None:  # a transferred ticket: level 0 starts from it
      transfer = runner.config.transfer
      self.params0, self.model_state0, self.keep_mask = tickets_lib.transfer_start(
          runner.experiment.ticket, self.params0, self.model_state0, transfer.get('start', 'ticket'),
          transfer.get('output_layer', 'dense'), seed=self.init_seed)
    self.rewind: tuple[Any, Any] | None = None     # (params, model_state) at the rewind step
    self.dense_params: Any = None                  # what one-shot pruning prunes from
    self.ticket_params: Any = None                 # what the next level's mask is pruned from
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
          f'or start over in a new workdir.') from error

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
      self.rewind = self._restore_finished(self.rewind_dir, (self.params0, self.model_state0),
                                           f'rewind point (step {rewind_step})', 0)
      _, self.dense_params, self.keep_mask = self._restore_level(0)
      self.ticket_params = self.dense_params
      self.runner.log(f'trial {self.trial} level 0: already done, restored from {self.level_dir(0)}')
      return []

    def save_rewind_point(step: int, snapshot: tuple[Any, Any]) -> None:
      if step == rewind_step:  # at once: a run killed later in level 0 still has it
        checkpoints.save_tree(self.rewind_dir, snapshot)

    turnaround = tuple(step for step in (self.plan.turnaround_step,) if step)
    return [cohorts.Member(self.trial, 0, 'ticket', self.params0, self.model_state0, self.keep_mask,
                           self.data_seed, (rewind_step, *turnaround), save_rewind_point)]

  def stop_diverged(self, level: int, step: int | None) -> None:
    """Stops this trial after its level-`level` ticket diverged, saying what to change."""
    self.active = False
    self.runner.log(
        f'lth_jax: trial {self.trial}: the level {level} ticket diverged (non-finite loss or weights at step {step}), '
        f'so level {level + 1} is not pruned from its weights and this trial stops here. Lower '
        f'training.learning_rate ({self.runner.learning_rate:g}) or add training.warmup_steps, and run again in a '
        'new workdir.')

  def prepare_level(self, level: int) -> None:
    """Prunes this level's winning-ticket mask (or stops the trial when nothing is left to prune)."""
    new_mask = self.plan.next_mask(level, self.ticket_params, self.keep_mask, self.dense_params, self.prunable)
    if all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(new_mask),
                                                 jax.tree_util.tree_leaves(self.keep_mask))):
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
        ticket_mask=self.keep_mask, rewind_params=rewind_params, rewind_model_state=rewind_model_state,
        prunable=self.prunable, init_variables=runner.trainer.init_variables,
        seed=_branch_seed(runner.seed, self.trial, level, 2 + runner.branch_names.index(branch)),
        loss_gradients=lambda params, model_state: runner.trainer.mean_gradients(
            params, model_state, self.data_seed, runner.snip_batches))
    params, model_state, branch_mask = branches_lib.start(branch, inputs)
    turnaround = tuple(step for step in (self.plan.turnaround_step,) if step)
    return cohorts.Member(self.trial, level, branch, params, model_state, branch_mask, self.data_seed,
                          turnaround if branch == 'ticket' else ())

  def finish(self, result: cohorts.MemberResult) -> dict[str, Any]:
    """Takes one member's result (keeping a ticket's level for good); returns its record (not yet written).
    A diverged ticket stops the trial: the next level is not pruned from non-finite weights."""
    member = result.member
    if result.diverged_step is not None:
      self.runner.log(f'lth_jax: warning: trial {self.trial} level {member.level} {member.branch} diverged: a '
                      f'non-finite loss or weight at step {result.diverged_step} '
                      f'(training.learning_rate={self.runner.learning_rate:g}); its record says "diverged": true')
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
      self.ticket_params = (result.final_params if self.plan.turnaround_step not in result.snapshots and
                            self.plan.turnaround_step else
                            self.plan.pruning_weights(result.snapshots, result.final_params))
      self._save_level(member.level, result.final_params, self.ticket_params)
    if member.branch == 'ticket' and result.diverged_step is not None:
      self.stop_diverged(member.level, result.diverged_step)
    start_step = 0 if member.level == 0 else self.plan.rewind_step
    record = self.runner.record(member, result, self.prunable, start_step)
    self.last_level[member.branch] = (record, result.final_params, member.keep_mask)
    return record


class _LevelRunner:
  """Runs (or resumes) every trial's levels, each level's unrecorded runs trained as a cohort."""

  def __init__(self, experiment: 'Experiment', workdir: str, records: list[dict[str, Any]],
               log: Callable[[str], None], should_stop: Callable[[int], bool] | None = None,
               scalars: _Scalars | None = None):
    config = experiment.config
    self.config, self.experiment, self.workdir = config, experiment, workdir
    self.trainer = experiment.trainer()
    self.plan = PruningPlan.from_config(config)
    self.total_steps, self.records, self.log = experiment.total_steps, records, log
    self.scalars = scalars or _Scalars(None)
    self.seed = int(config.get('seed', 0))
    self.results_path = os.path.join(workdir, RESULTS_FILE)
    self.snip_batches = int(config.pruning.get('snip_batches', 1))
    self.branch_names = ['ticket', *[name for name in config.get('branches', ()) if name != 'ticket']]
    self.members_per_program = experiment.members_per_program
    self.learning_rate = float(config.training.learning_rate)
    checkpointing = config.get('checkpointing', {})
    settings = cohorts.ProgramSettings(
        end_step=self.total_steps, eval_every=int(config.training.get('eval_every', 0)),
        checkpoint_every=int(checkpointing.get('every_steps', 0)),
        max_to_keep=int(checkpointing.get('max_to_keep', 2)),
        progress_every_seconds=float(config.get('report', {}).get('progress_every_seconds', 60.0)),
        levels=self.plan.levels)
    self.programs = cohorts.ProgramRunner(workdir, experiment.program_trainer, settings, log, should_stop,
                                          self.scalars)

  def diverged_ticket(self, trial: int, level: int) -> dict[str, Any] | None:
    """The record of (trial, level)'s ticket if it diverged."""
    return next((record for record in self.records if record['trial'] == trial and record['level'] == level
                 and record['branch'] == 'ticket' and results_lib.is_diverged(record)), None)

  def recorded(self, trial: int, level: int, branch: str) -> bool:
    return any(record['trial'] == trial and record['level'] == level and record['branch'] == branch
               for record in self.records)

  def record(self, member: cohorts.Member, result: cohorts.MemberResult, prunable: Any,
             start_step: int) -> dict[str, Any]:
    """The record of one finished run."""
    final = result.curve[-1]
    metric = 'test_accuracy' if 'test_accuracy' in final else 'test_rmse'
    values = [entry[metric] for entry in result.curve if np.isfinite(entry[metric])]
    best = (max(values) if metric == 'test_accuracy' else min(values)) if values else None
    record = {
        'trial': member.trial, 'level': member.level, 'branch': member.branch,
        'fraction_remaining': masks_lib.density(member.keep_mask, prunable),
        'kept_weights': int(sum(masks_lib.count_per_layer(member.keep_mask, prunable).values())),
        'nonzero_weights': masks_lib.nonzero_count(result.final_params, prunable),
        'layer_density': masks_lib.density_per_layer(member.keep_mask, prunable),
        metric: final[metric], 'test_loss': final['test_loss'],
        f'best_{metric}': best,
        'steps': self.total_steps - start_step, 'start_step': start_step, 'end_step': self.total_steps,
        'curve': [{key: entry[key] for key in ('step', metric, 'test_loss', 'train_loss') if key in entry}
                  for entry in result.curve],
        'wall_seconds': result.wall_seconds, 'seed': self.seed,
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
    checkpoints.remove(cohorts.running_directory(self.workdir, program[0].level,
                                                 [(member.trial, member.branch) for member in program]))
    for record in records:
      metric = 'test_accuracy' if 'test_accuracy' in record else 'test_rmse'
      self.scalars.write(os.path.join(f'trial_{record["trial"]}', 'levels'), record['level'],
                         {f'{record["branch"]}/{metric}': record[metric],
                          f'{record["branch"]}/percent_remaining': 100 * record['fraction_remaining']})

  def _train_cohort(self, level: int, keys: list[tuple[int, str]],
                    build: Callable[[int, str], cohorts.Member | None], trials: dict[int, _Trial]) -> None:
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
    self._train_cohort(0, [(trial, 'ticket') for trial in trials],
                       lambda trial, branch: (level_zero[trial] or [None])[0], trials)
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
          level, keys,
          lambda trial, branch: None if trials[trial].done(level, branch) else trials[trial].member(level, branch),
          trials)
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
          self.log(f'trial {state.trial} level {record["level"]} {branch}: {record["kept_weights"]} weights '
                   f'kept, {metric}={record[metric]:.6g}\n'
                   + format_surviving_weights(final_params, branch_mask, state.prunable))


def _print(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)


@dataclasses.dataclass
class Experiment:
  """What a validated config builds before any training: data, model, mesh and training length.
  `config` is resolved: the global batch size set, lengths in epochs converted to steps."""
  config: ml_collections.ConfigDict
  dataset: data_lib.Dataset
  model: Any
  mesh: jax.sharding.Mesh   # the mesh of one run alone: 1 x N (data parallel) where the batch divides
  total_steps: int
  members_per_program: int = 1  # parallel.members_per_program, resolved (0 = auto becomes a number)
  ticket: tickets_lib.Ticket | None = None  # transfer.ticket, loaded and checked against the model
  _trainers: dict[tuple[int, int], train_lib.Trainer] = dataclasses.field(default_factory=dict, repr=False)

  def _build_trainer(self, population_size: int, groups: int) -> train_lib.Trainer:
    key = (population_size, groups)
    if key not in self._trainers:
      training = self.config.training
      mesh = self.mesh if groups == parallel.member_groups(self.mesh) else parallel.create_mesh(
          self.config.get('parallel', {}).get('num_devices', 0), groups)
      like = next(iter(self._trainers.values())).feed if self._trainers else None
      self._trainers[key] = train_lib.Trainer(
          self.model, self.dataset, optim.from_config(training, self.total_steps), mesh, training.batch_size,
          training.get('steps_per_dispatch', 64), training.get('eval_batch_size', 1000), population_size,
          feed_like=like)
    return self._trainers[key]

  def trainer(self, population_size: int = 0) -> train_lib.Trainer:
    """The Trainer of this experiment for one run, or for a population of exactly `population_size`
    members (> 0) spread over the mesh's member groups (built once, then reused)."""
    if not population_size:
      return self._build_trainer(0, parallel.member_groups(self.mesh))
    layout = parallel.member_layout(population_size, self.mesh.devices.size, self.config.training.batch_size,
                                    _local_device_counts(self))
    groups = layout[0] if layout and layout[1] == population_size else parallel.member_groups(self.mesh)
    return self._build_trainer(population_size, groups)

  def program_trainer(self, num_members: int) -> tuple[train_lib.Trainer, int]:
    """(Trainer, member slots) of a cohort program of `num_members` runs: the one-run Trainer for a
    single run whose batch divides the devices, else a population laid out by `parallel.member_layout`
    (slots beyond `num_members` are padding)."""
    if num_members == 1 and parallel.member_groups(self.mesh) == 1:
      return self.trainer(), 1
    groups, slots = cohorts.layout(num_members, self)
    return self._build_trainer(slots, groups), slots

  def prunable(self, params: Any) -> Any:
    """The prunable-leaf tree of `params` under this config."""
    return _prunable_from_config(params, self.config)


def prepare(config: ml_collections.ConfigDict) -> Experiment:
  """Validates `config` (raising `validation.ConfigError` naming the field) and builds the dataset,
  model and mesh; the experiment's config is resolved (global batch, epochs as steps). No training
  happens here."""
  validation.check_config(config)
  num_devices = config.get('parallel', {}).get('num_devices', 0)
  try:
    mesh = parallel.create_mesh(num_devices)
  except ValueError as error:
    raise validation.ConfigError(str(error)) from error
  config = validation.resolve_batch_size(config, mesh.devices.size)
  try:
    dataset = data_lib.build(config.dataset)
    model = models_lib.build(config.model, dataset.num_outputs)
  except data_lib.DatasetNotPreparedError:
    raise
  except ValueError as error:  # a dataset or model field the builders rejected
    raise validation.ConfigError(str(error)) from error
  config = validation.resolve_epochs(config, dataset.num_train)
  example = jnp.zeros((1, *dataset.input_shape), jnp.float32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), example, train=False))
  param_shapes, _ = train_lib.split_variables(shapes)
  layers = sorted({masks_lib.module_path(masks_lib.path_to_names(path))
                   for path, _ in jax.tree_util.tree_flatten_with_path(param_shapes)[0]})
  validation.check_against_data(config, dataset.num_train,
                                _layer_sizes(param_shapes, _prunable_from_config(param_shapes, config)), layers)
  requested = config.get('parallel', {}).get('members_per_program', 0)
  if requested != 1:  # a run alone may need member groups where its batch does not divide the devices
    layout = parallel.member_layout(1, mesh.devices.size, config.training.batch_size,
                                    _local_device_counts(mesh=mesh, dataset=dataset))
    if layout is not None and layout[0] > 1:
      mesh = parallel.create_mesh(num_devices, layout[0])
  try:
    parallel.check_batch_size(config.training.batch_size, mesh)
  except ValueError as error:
    raise validation.ConfigError(str(error) + ('' if requested == 1 else
                                               ' (or parallel.members_per_program)')) from error
  experiment = Experiment(config=config, dataset=dataset, model=model, mesh=mesh,
                          total_steps=validation.total_steps(config.training, dataset.num_train))
  experiment.members_per_program = cohorts.resolve_members_per_program(experiment)
  experiment.ticket = _transferred_ticket(config, param_shapes)
  return experiment


def _transferred_ticket(config: ml_collections.ConfigDict, param_shapes: Any) -> tickets_lib.Ticket | None:
  """The ticket of `transfer.ticket`, loaded and checked against the model's parameter shapes (a
  ConfigError naming the field when it is missing, damaged or of another architecture)."""
  transfer = config.get('transfer', {})
  path = transfer.get('ticket')
  if not path:
    return None
  if not os.path.isfile(path):
    raise validation.ConfigError(f'transfer.ticket={path!r}: no such file (export one with `python -m '
                                 'lth_jax.tickets export --workdir=DIR --level=L --out=FILE`)')
  try:
    ticket = tickets_lib.load_exported(path)
    shapes = jax.tree_util.tree_map(lambda shape: np.zeros(shape.shape, shape.dtype), param_shapes)
    tickets_lib.transfer_start(ticket, shapes, {}, transfer.get('start', 'ticket'),
                               transfer.get('output_layer', 'dense'), seed=0, where=f'transfer.ticket={path!r}')
  except tickets_lib.TicketError as error:
    raise validation.ConfigError(str(error)) from error
  return ticket


def _local_device_counts(experiment: 'Experiment | None' = None, mesh: jax.sharding.Mesh | None = None,
                         dataset: data_lib.Dataset | None = None) -> tuple[int, ...] | None:
  """Every host's device count in the mesh when member groups must stay within hosts (streamed data
  on several hosts: each host reads its slice of every member's batch), else None."""
  mesh = experiment.mesh if experiment is not None else mesh
  dataset = experiment.dataset if experiment is not None else dataset
  if jax.process_count() == 1 or not isinstance(dataset, data_lib.StreamingDataset):
    return None
  counts: dict[int, int] = {}
  for device in mesh.devices.flat:
    counts[device.process_index] = counts.get(device.process_index, 0) + 1
  return tuple(counts.values())


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


class StopRequest:
  """A SIGTERM handler that asks the training loop to stop: it only sets `requested`, and the loop
  checks it between dispatches, checkpoints the current step and raises `Preempted`.

  A second SIGTERM goes to the handler that was installed before (by default: terminate at once).
  With several processes, a stop is agreed through JAX's preemption sync point (all processes
  stop at the same step; JAX's coordination service receives the signal), so no handler is installed.
  """

  def __init__(self):
    self.requested = False
    self._previous: Any = None
    self._installed = False
    self._checks = 0

  def _handle(self, signum: int, frame: Any) -> None:
    if self.requested:  # the second one: do what would have happened without us
      self.restore()
      signal.raise_signal(signal.SIGTERM)
      return
    self.requested = True  # nothing else here: a handler that prints could interrupt a print

  def install(self) -> None:
    """Installs the handler (main thread of a single-process run only; elsewhere, a no-op)."""
    if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
      return
    previous = signal.signal(signal.SIGTERM, self._handle)
    self._previous = signal.SIG_DFL if previous is None else previous  # None: not set from Python
    self._installed = True

  def restore(self) -> None:
    """Puts back the handler that was installed before."""
    if self._installed:
      signal.signal(signal.SIGTERM, self._previous)
      self._installed = False

  def __call__(self, step: int) -> bool:
    """Whether to stop now (called by every process at the same points of training)."""
    if jax.process_count() > 1:
      self._checks += 1  # the sync point id must increase on every process alike
      try:
        return bool(multihost_utils.reached_preemption_sync_point(self._checks))
      except RuntimeError:  # no preemption service (jax.distributed started without one)
        return False
    return self.requested


def _check_workdir(workdir: str) -> None:
  """Creates `workdir` if needed; a WorkdirError when it is a file or cannot be written."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise validation.WorkdirError(f'workdir {workdir}: exists and is not a folder')
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.lth_jax-write-test-{os.getpid()}-{jax.process_index()}')
    with open(probe, 'w') as file:
      file.write('ok')
    os.remove(probe)
  except OSError as error:
    raise validation.WorkdirError(f'workdir {workdir}: cannot create or write there ({error})') from error


@contextlib.contextmanager
def workdir_lock(workdir: str, log: Callable[[str], None] = _print) -> Iterator[None]:
  """Holds an exclusive lock on WORKDIR/.lock (process 0) while the block runs: a second run started
  on the same workdir fails at once with a WorkdirError naming the holder, instead of both writing
  checkpoints and records over each other. Released when the block ends or the process dies."""
  if jax.process_index() != 0 or fcntl is None:
    yield
    return
  path = os.path.join(workdir, LOCK_FILE)
  with open(path, 'a+') as file:
    try:
      fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      file.seek(0)
      holder = file.read().strip() or 'another process'
      raise validation.WorkdirError(
          f'workdir {workdir}: in use by another lth_jax run ({holder}); let it finish, stop it, or use '
          'another --workdir') from None
    except OSError as error:  # a file system without locks
      log(f'lth_jax: warning: cannot lock {path} ({error}); make sure no other run uses this workdir')
      yield
      return
    try:
      file.seek(0)
      file.truncate()
      file.write(f'pid {os.getpid()} on {socket.gethostname()}, since {time.strftime("%Y-%m-%d %H:%M:%S")}\n')
      file.flush()
      yield
    finally:
      fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def _holds_runs(workdir: str) -> bool:
  """Whether `workdir` holds anything of a run: a record in results.jsonl or a checkpoint."""
  results_path = os.path.join(workdir, RESULTS_FILE)
  if os.path.exists(results_path) and os.path.getsize(results_path) > 0:
    return True
  return any(files for _, _, files in os.walk(os.path.join(workdir, 'checkpoints')))


# Config values worked out before a run (global batch, lengths in steps), recorded in config.json.
RESOLVED_FIELDS = {'training': ('batch_size', 'num_steps', 'warmup_steps', 'eval_every', 'decay_boundaries'),
                   'pruning': ('rewind_step', 'turnaround_step')}


def check_workdir_config(config: ml_collections.ConfigDict, resolved: ml_collections.ConfigDict, workdir: str,
                         log: Callable[[str], None] = _print) -> None:
  """A ConfigError when `workdir` holds runs of a config whose results would differ from `config`'s
  (`resolved`: the same config as `prepare` resolved it), as `run` checks before it continues them."""
  _check_config_file(config, workdir, False, log, resolved)


def _check_config_file(config: ml_collections.ConfigDict, workdir: str, allow_config_change: bool,
                       log: Callable[[str], None], resolved: ml_collections.ConfigDict | None = None) -> None:
  """Compares `config` with the one in WORKDIR/config.json (refusing a change that would make the
  recorded runs disagree with the config, unless allowed) and writes it there (process 0).

  With `resolved` (the config with the global batch and the lengths in steps worked out for these
  devices and this dataset), those values are recorded under 'resolved' and compared too: the same
  `parallel.batch_per_device` on another number of devices is another global batch.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path) and _holds_runs(workdir) and not allow_config_change:
    raise validation.ConfigError(
        f'{workdir} holds runs but no {CONFIG_FILE}, so their config cannot be checked against this one; '
        'put it back, use another --workdir, or --allow_config_change to record this config as theirs')
  new = validation.config_to_json(config)
  if resolved is not None:
    new['resolved'] = validation.config_to_json(ml_collections.ConfigDict(
        {section: {field: resolved[section].get(field) for field in fields}
         for section, fields in RESOLVED_FIELDS.items()}))
  if os.path.exists(path):
    try:
      with open(path) as file:
        old = json.load(file)
    except (OSError, ValueError) as error:
      raise validation.ConfigError(f'{path}: cannot read the config of the runs in this workdir ({error}); '
                                   'repair or delete it') from error
    defaults = validation.config_to_json(config_schema.base_config())
    changing, neutral = validation.config_differences(old, new, defaults)
    if changing and not _holds_runs(workdir):
      log(f'lth_jax: {path} is from a run that recorded nothing; replacing it with this config')
      changing, neutral = [], []
    if changing and not allow_config_change:
      raise validation.ConfigError(
          f'{workdir} holds runs of a different config ({path}); fields that differ (old -> new):\n  '
          + '\n  '.join(changing) + '\nUse the same config, another --workdir, or --allow_config_change to '
          'continue anyway (records already there are kept as they are).')
    if changing:
      log(f'lth_jax: warning: config changed from {path} (allowed): ' + '; '.join(changing))
    if neutral:
      log('lth_jax: config changes that do not affect results: ' + '; '.join(neutral))
    if old == new:
      return
  if jax.process_index() == 0:
    with results_lib.atomic_open(path) as file:
      file.write(results_lib.strict_json(new, indent=2, sort_keys=True) + '\n')


def run(config: ml_collections.ConfigDict, workdir: str,
        log: Callable[[str], None] = _print, *, allow_config_change: bool = False) -> LotteryResults:
  """Runs (or resumes) the lottery experiment of `config` in `workdir`; returns its records.

  Every config check runs before any training: a bad field raises `validation.ConfigError` naming it,
  a workdir that is a file or not writable `validation.WorkdirError`, and a config whose results
  would differ from those of the config in `WORKDIR/config.json` a ConfigError listing the differing
  fields (unless `allow_config_change`). On SIGTERM, the run in progress is checkpointed at its
  current step and `Preempted` is raised; re-running continues it. A finished level whose checkpoint
  is damaged raises `checkpoints.CheckpointError` naming it.
  """
  experiment = prepare(config)
  _check_workdir(workdir)
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


def _run_locked(config: ml_collections.ConfigDict, experiment: 'Experiment', workdir: str,
                log: Callable[[str], None], allow_config_change: bool) -> LotteryResults:
  """`run` once the workdir is locked."""
  _check_config_file(config, workdir, allow_config_change, log, resolved=experiment.config)
  config = experiment.config  # resolved: global batch size, lengths in steps
  total_steps = experiment.total_steps
  plan = PruningPlan.from_config(config)
  records = results_lib.read_records(os.path.join(workdir, RESULTS_FILE))
  checkpointing = config.get('checkpointing', {})
  scalars = _Scalars(os.path.join(workdir, 'tensorboard') if checkpointing.get('tensorboard', True) else None)
  started = time.perf_counter()
  log(f'lth_jax: {config.model.name} on {config.dataset.name}, {total_steps} steps per level, '
      f'{plan.levels} pruning levels of {plan.fraction:.3g} ({plan.scope}, {plan.mode}), rewind step '
      f'{plan.rewind_step}, {config.get("trials", 1)} trial(s), {experiment.mesh.devices.size} device(s), '
      f'up to {experiment.members_per_program} run(s) per program'
      + (f'; {len(records)} record(s) already in {workdir}' if records else ''))
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

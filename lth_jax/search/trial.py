"""One trial of a lottery run between its levels: its seeds, W_0, the rewind point, the ticket the next
level's mask is pruned from, and where its checkpoints live. It builds the members a level trains
(`lth_jax.search.members`) and turns their results into records."""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Protocol

import jax
import numpy as np

from lth_jax import branches as branches_lib
from lth_jax import config as config_lib
from lth_jax import pruning
from lth_jax import tickets as tickets_lib
from lth_jax.search import workdir as workdir_lib
from lth_jax.training import checkpoints
from lth_jax.search.experiment import Experiment
from lth_jax.search.members import Member
from lth_jax.search.members import MemberResult
from lth_jax.search.workdir import level_directory
from lth_jax.search.workdir import snapshot_directory
from lth_jax.training.trainer import Trainer


def branch_seed(*parts: int) -> int:
  """A seed derived from (config seed, trial, level, branch index)."""
  return int(np.random.SeedSequence([int(part) for part in parts]).generate_state(1)[0])


def trial_seeds(seed: int, trial: int) -> tuple[int, int]:
  """(initialization seed, batch-order seed) of one trial."""
  return branch_seed(seed, trial, 0), branch_seed(seed, trial, 1)


class LevelHost(Protocol):
  """What a Trial uses of the level runner that owns it (`levels.LevelRunner` is one)."""

  spec: config_lib.RunSpec
  experiment: Experiment
  workdir: str
  trainer: Trainer
  plan: config_lib.PruningPlan
  seed: int
  branch_names: list[str]
  keep_snapshots: tuple[int, ...]
  results_path: str
  log: Callable[[str], None]

  def recorded(self, trial: int, level: int, branch: str) -> bool:
    ...

  def diverged_ticket(self, trial: int, level: int) -> dict[str, Any] | None:
    ...

  def record(self, member: Member, result: MemberResult, prunable: Any, start_step: int) -> dict[str, Any]:
    ...


class Trial:
  """One trial's lottery state between levels: its seeds, W_0, the rewind point, and the ticket it
  prunes the next level's mask from. Builds the members a level trains and takes their results."""

  def __init__(self, runner: LevelHost, trial: int):
    self.runner, self.trial = runner, trial
    self.plan = runner.plan
    self.init_seed, self.data_seed = trial_seeds(runner.seed, trial)
    self.params0, self.model_state0 = runner.trainer.init_variables(self.init_seed)
    self.prunable = runner.plan.prunable(self.params0)
    self.keep_mask = jax.tree_util.tree_map(lambda leaf: np.ones(leaf.shape, bool), self.params0)
    if runner.experiment.ticket is not None:  # a transferred ticket: level 0 starts from it
      transfer = runner.spec.transfer
      self.params0, self.model_state0, self.keep_mask = tickets_lib.transfer_start(
          runner.experiment.ticket,
          self.params0,
          self.model_state0,
          transfer.start,
          transfer.output_layer,
          seed=self.init_seed,
      )
    self.rewind: tuple[Any, Any] | None = None  # (params, model_state) at the rewind step
    self.dense_params: Any = None  # what one-shot pruning prunes from
    self.ticket_params: Any = None  # what the next level's mask is pruned from
    self.active = True
    self.last_level: dict[str, tuple[dict[str, Any], Any, Any]] = {}

  @property
  def rewind_dir(self) -> str:
    return workdir_lib.rewind_directory(self.runner.workdir, self.trial)

  def level_dir(self, level: int) -> str:
    return level_directory(self.runner.workdir, self.trial, level)

  def done(self, level: int, branch: str) -> bool:
    """Whether (this trial, level, branch) is recorded (then its leftover checkpoints go)."""
    done = self.runner.recorded(self.trial, level, branch)
    if done:  # a run killed between writing its record and deleting its checkpoints left them behind
      checkpoints.remove(workdir_lib.running_directory(self.runner.workdir, level, [(self.trial, branch)]))
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

  def level_zero(self) -> list[Member]:
    """The dense run, or nothing when it is recorded (its rewind point and weights are restored)."""
    rewind_step = self.plan.rewind_step
    if self.done(0, 'ticket') and self.runner.diverged_ticket(self.trial, 0) is not None:
      return []  # the dense run diverged: nothing to restore, the trial stops (see `LevelRunner.run`)
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
      if step in self.runner.keep_snapshots:
        checkpoints.save_tree(snapshot_directory(self.runner.workdir, self.trial, step), snapshot)

    turnaround = tuple(step for step in (self.plan.turnaround_step,) if step)
    steps = tuple(dict.fromkeys((rewind_step, *turnaround, *self.runner.keep_snapshots)))
    return [
        Member(
            self.trial,
            0,
            'ticket',
            self.params0,
            self.model_state0,
            self.keep_mask,
            self.data_seed,
            steps,
            save_rewind_point,
        )
    ]

  def stop_diverged(self, level: int, step: int | None) -> None:
    """Stops this trial after its level-`level` ticket diverged, saying what to change."""
    self.active = False
    self.runner.log(
        f'lth_jax: trial {self.trial}: the level {level} ticket diverged (non-finite loss or weights at step {step}), '
        f'so level {level + 1} is not pruned from its weights and this trial stops here. Lower '
        f'training.learning_rate ({self.runner.spec.training.learning_rate:g}) or add training.warmup_steps, and run again in a '
        'new workdir.'
    )

  def prepare_level(self, level: int) -> None:
    """Prunes this level's winning-ticket mask (or stops the trial when nothing is left to prune)."""
    plan, trainer = self.plan, self.runner.trainer
    # The mean gradient for a criterion that asks (snip): model in training mode, so batch norm uses each
    # batch's statistics and the initial model state gives only its structure.
    gradients = functools.partial(
        trainer.mean_gradients, model_state=self.model_state0, data_seed=self.data_seed, num_batches=plan.snip_batches
    )
    inputs = pruning.level_inputs(
        plan.mode, self.ticket_params, self.keep_mask, self.dense_params, self.prunable, gradients
    )
    new_mask = pruning.next_mask(plan, level, pruning.criterion(plan.criterion)(inputs), self.keep_mask, self.prunable)
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

  def member(self, level: int, branch: str) -> Member:
    """The starting point of one (level >= 1, branch) run of this trial."""
    runner = self.runner
    assert self.rewind is not None, 'level 0 (trained or restored) sets the rewind point'
    rewind_params, rewind_model_state = self.rewind
    inputs = branches_lib.BranchInputs(
        ticket_mask=self.keep_mask,
        rewind_params=rewind_params,
        rewind_model_state=rewind_model_state,
        prunable=self.prunable,
        init_variables=runner.trainer.init_variables,
        seed=branch_seed(runner.seed, self.trial, level, 2 + runner.branch_names.index(branch)),
        loss_gradients=lambda params, model_state: runner.trainer.mean_gradients(
            params, model_state, self.data_seed, runner.plan.snip_batches
        ),
    )
    params, model_state, branch_mask = branches_lib.start(branch, inputs)
    turnaround = tuple(step for step in (self.plan.turnaround_step,) if step)
    return Member(
        self.trial,
        level,
        branch,
        params,
        model_state,
        branch_mask,
        self.data_seed,
        turnaround if branch == 'ticket' else (),
        start_step=self.plan.rewind_step,
    )

  def finish(self, result: MemberResult) -> dict[str, Any]:
    """Takes one member's result (keeping a ticket's level for good); returns its record (not yet written).
    A diverged ticket stops the trial: the next level is not pruned from non-finite weights."""
    member = result.member
    if result.diverged_step is not None:
      self.runner.log(
          f'lth_jax: warning: trial {self.trial} level {member.level} {member.branch} diverged: a '
          f'non-finite loss or weight at step {result.diverged_step} '
          f'(training.learning_rate={self.runner.spec.training.learning_rate:g}); its record says "diverged": true'
      )
    if member.level == 0:
      self.rewind = result.snapshots.get(self.plan.rewind_step)
      if self.plan.turnaround_step and self.plan.turnaround_step not in result.snapshots:
        self.dense_params = result.final_params  # diverged before the turnaround step: never pruned from
      else:
        self.dense_params = self.plan.pruning_weights(result.snapshots, result.final_params)
      if self.rewind is not None and not os.path.isdir(self.rewind_dir):  # resumed past the rewind step
        checkpoints.save_tree(self.rewind_dir, self.rewind)
      for step in self.runner.keep_snapshots:  # those a resumed run took before its checkpoint
        directory = snapshot_directory(self.runner.workdir, self.trial, step)
        if step in result.snapshots and not os.path.isdir(directory):
          checkpoints.save_tree(directory, result.snapshots[step])
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

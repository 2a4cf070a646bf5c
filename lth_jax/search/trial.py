"""One trial of a lottery search between its levels, as a value (`TrialState`: its seeds, W_0, the
rewind point, the ticket the next level's mask is pruned from), and the functions of a level:
`start` builds W_0 (or restores a finished level 0), `prepare_level` prunes a level's mask, `member` builds one of its
runs (`lth_jax.search.members`), `absorb` takes a run's result (keeping a ticket's level for good) and
returns the new state with the run's record, `after_level` stops a trial at the target density."""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from lth_jax import branches as branches_lib
from lth_jax import masks as masks_lib
from lth_jax import pruning
from lth_jax import structured
from lth_jax import tickets as tickets_lib
from lth_jax.search import early_bird
from lth_jax.search import records as records_lib
from lth_jax.search import workdir as workdir_lib
from lth_jax.search.members import Member
from lth_jax.search.members import MemberResult
from lth_jax.search.searches import Search
from lth_jax.training import checkpoints


def branch_seed(*parts: int) -> int:
  """A seed derived from (config seed, trial, level, branch index)."""
  return int(np.random.SeedSequence([int(part) for part in parts]).generate_state(1)[0])


def trial_seeds(seed: int, trial: int) -> tuple[int, int]:
  """(initialization seed, batch-order seed) of one trial."""
  return branch_seed(seed, trial, 0), branch_seed(seed, trial, 1)


@dataclasses.dataclass(frozen=True)
class TrialState:
  """One trial's lottery state between levels (host trees)."""

  trial: int
  init_seed: int
  data_seed: int
  params0: Any  # W_0 (or a transferred ticket's start)
  model_state0: Any
  prunable: Any  # bool tree: the leaves pruning may touch
  keep_mask: Any  # the current level's ticket mask
  rewind: tuple[Any, Any] | None = None  # (params, model_state) at the rewind step
  dense_params: Any = None  # what one-shot pruning prunes from
  ticket_params: Any = None  # what the next level's mask is pruned from
  active: bool = True
  # branch -> (record, final params, mask) of its latest level (for print_surviving_weights)
  last_level: Mapping[str, tuple[dict[str, Any], Any, Any]] = dataclasses.field(default_factory=dict)


def start(search: Search, trial: int, records: Sequence[dict[str, Any]], log: Callable[[str], None]) -> TrialState:
  """A trial before level 0: its seeds and W_0 (a transferred ticket's start when the config names one);
  after a recorded level 0, its rewind point and the weights it prunes from, restored."""
  experiment = search.experiment
  init_seed, data_seed = trial_seeds(search.spec.seed, trial)
  params0, model_state0 = experiment.trainer().init_variables(init_seed)
  keep_mask = jax.tree_util.tree_map(lambda leaf: np.ones(leaf.shape, bool), params0)
  if experiment.ticket is not None:  # a transferred ticket: level 0 starts from it
    transfer = search.spec.transfer
    params0, model_state0, keep_mask = tickets_lib.transfer_start(
        experiment.ticket, params0, model_state0, transfer.start, transfer.output_layer, seed=init_seed
    )
  state = TrialState(
      trial, init_seed, data_seed, params0, model_state0, search.spec.pruning.prunable(params0), keep_mask
  )
  return _restore_level_zero(state, search, records, log) if recorded(search, records, trial, 0, 'ticket') else state


def recorded(search: Search, records: Sequence[dict[str, Any]], trial: int, level: int, branch: str) -> bool:
  """Whether (trial, level, branch) is recorded (then its leftover checkpoints go: a run killed between
  writing its record and deleting its checkpoints left them behind)."""
  done = records_lib.find(records, trial, level, branch) is not None
  if done:
    checkpoints.remove(workdir_lib.running_directory(search.workdir, level, [(trial, branch)]))
  return done


def level_branches(state: TrialState, level: int, search: Search) -> list[str]:
  """The branches `state`'s trial trains at `level` (recorded ones included; none once it stopped)."""
  if level == 0:
    return ['ticket']
  return list(search.spec.branch_names) if state.active else []


def prepare_level(
    state: TrialState, level: int, search: Search, records: Sequence[dict[str, Any]], log: Callable[[str], None]
) -> TrialState:
  """The trial ready for pruned `level` (level 0 needs nothing): its mask pruned (the ticket's restored
  when that level is recorded), or the trial stopped when its last ticket diverged or nothing is left
  to prune."""
  if level == 0 or not state.active:
    return state
  diverged = records_lib.diverged_ticket(records, state.trial, level - 1)
  if diverged is not None:  # recorded so by an earlier run of this workdir
    return stop_diverged(state, level - 1, diverged.get('diverged_step'), search, log)
  plan, trainer = search.spec.pruning, search.experiment.trainer()
  # The mean gradient for a criterion that asks (snip): model in training mode, so batch norm uses each
  # batch's statistics and the initial model state gives only its structure.
  gradients = functools.partial(
      trainer.mean_gradients, model_state=state.model_state0, data_seed=state.data_seed, num_batches=plan.snip_batches
  )
  inputs = pruning.level_inputs(
      plan.mode, state.ticket_params, state.keep_mask, state.dense_params, state.prunable, gradients
  )
  new_mask = pruning.next_mask(plan, level, pruning.criterion(plan.criterion)(inputs), state.keep_mask, state.prunable)
  if all(
      np.array_equal(a, b)
      for a, b in zip(jax.tree_util.tree_leaves(new_mask), jax.tree_util.tree_leaves(state.keep_mask))
  ):
    log(f'trial {state.trial} level {level}: no weight left to prune; stopping')
    return dataclasses.replace(state, active=False)
  state = dataclasses.replace(state, keep_mask=new_mask)
  if recorded(search, records, state.trial, level, 'ticket'):
    _, ticket_params, keep_mask = _restore_level(state, search, level)
    state = dataclasses.replace(state, ticket_params=ticket_params, keep_mask=keep_mask)
  return state


def member(state: TrialState, level: int, branch: str, search: Search, hyperparameter_names: Sequence[str]) -> Member:
  """The starting point of `state`'s (level, branch) run, carrying its own values of
  `hyperparameter_names` (those the members of its population differ in)."""
  spec, plan = search.spec, search.spec.pruning
  hyperparameters = {name: getattr(spec.training, name) for name in hyperparameter_names}
  if level == 0:
    turnaround = _turnaround_steps(search, 0, 0)
    snapshot_steps = tuple(dict.fromkeys((plan.rewind_step, *turnaround, *search.keep_snapshots)))
    writer = _LevelZeroSnapshots(search.workdir, state.trial, plan.rewind_step, search.keep_snapshots)
    return Member(
        state.trial,
        0,
        'ticket',
        state.params0,
        state.model_state0,
        state.keep_mask,
        state.data_seed,
        snapshot_steps,
        writer,
        variant=search.variant,
        hyperparameters=hyperparameters,
    )
  assert state.rewind is not None, 'level 0 (trained or restored) sets the rewind point'
  trainer = search.experiment.trainer()
  rewind_params, rewind_model_state = state.rewind
  inputs = branches_lib.BranchInputs(
      ticket_mask=state.keep_mask,
      rewind_params=rewind_params,
      rewind_model_state=rewind_model_state,
      prunable=state.prunable,
      init_variables=trainer.init_variables,
      seed=branch_seed(spec.seed, state.trial, level, 2 + spec.branch_names.index(branch)),
      structure=plan.structure,
      layer_fractions=plan.layer_fractions,
      at_init_scope=plan.at_init_scope,
      synflow_rounds=plan.synflow_rounds,
      loss_gradients=functools.partial(
          trainer.mean_gradients, data_seed=state.data_seed, num_batches=plan.snip_batches
      ),
      hessian_gradient=functools.partial(
          trainer.hessian_gradient, data_seed=state.data_seed, num_batches=plan.snip_batches
      ),
      synflow_gradients=trainer.synflow_gradients,
  )
  params, model_state, branch_mask = branches_lib.start(branch, inputs)
  structured.check_mask(branch_mask, state.prunable, plan.structure, plan.layer_fractions, f'branch {branch!r}')
  turnaround = _turnaround_steps(search, level, plan.rewind_step)
  return Member(
      state.trial,
      level,
      branch,
      params,
      model_state,
      branch_mask,
      state.data_seed,
      turnaround if branch == 'ticket' else (),
      start_step=plan.rewind_step,
      variant=search.variant,
      hyperparameters=hyperparameters,
  )


def absorb(
    state: TrialState, result: MemberResult, search: Search, log: Callable[[str], None]
) -> tuple[TrialState, dict[str, Any]]:
  """Takes one member's result (keeping a ticket's level for good); returns the new state and the run's
  record (not yet written). A diverged ticket stops the trial: the next level is not pruned from
  non-finite weights."""
  spec, plan = search.spec, search.spec.pruning
  finished = result.member
  if result.diverged_step is not None:
    log(
        f'lth_jax: warning: trial {state.trial} level {finished.level} {finished.branch} diverged: a '
        f'non-finite loss or weight at step {result.diverged_step} '
        f'(training.learning_rate={spec.training.learning_rate:g}); its record says "diverged": true'
    )
  # Diverged before the turnaround step: the next level is pruned from the final weights.
  pruning_params = (
      result.final_params
      if plan.turnaround_step and plan.turnaround_step not in result.snapshots
      else plan.pruning_weights(result.snapshots, result.final_params)
  )
  start_step = 0 if finished.level == 0 else plan.rewind_step
  found = None
  if finished.branch == 'ticket' and _early_bird_steps(search, finished.level, start_step):
    found = _early_bird(state, search, result, finished.level, finished.keep_mask, start_step, log)
    if found.step is not None and found.step in result.snapshots:
      pruning_params = result.snapshots[found.step][0]
  if finished.level == 0:
    rewind = result.snapshots.get(plan.rewind_step)
    rewind_dir = workdir_lib.rewind_directory(search.workdir, state.trial)
    if rewind is not None and not os.path.isdir(rewind_dir):  # resumed past the rewind step
      checkpoints.save_tree(rewind_dir, rewind)
    for step in search.keep_snapshots:  # those a resumed run took before its checkpoint
      directory = workdir_lib.snapshot_directory(search.workdir, state.trial, step)
      if step in result.snapshots and not os.path.isdir(directory):
        checkpoints.save_tree(directory, result.snapshots[step])
    state = dataclasses.replace(state, rewind=rewind, dense_params=pruning_params, ticket_params=pruning_params)
    _save_level(state, search, 0, result.final_params, pruning_params)
  elif finished.branch == 'ticket':
    state = dataclasses.replace(state, ticket_params=pruning_params)
    _save_level(state, search, finished.level, result.final_params, pruning_params)
  if finished.branch == 'ticket' and result.diverged_step is not None:
    state = stop_diverged(state, finished.level, result.diverged_step, search, log)
  record = records_lib.build(search, finished, result, state.prunable, start_step)
  if found is not None:
    record = found.annotate(record)
  last_level = {**state.last_level, finished.branch: (record, result.final_params, finished.keep_mask)}
  return dataclasses.replace(state, last_level=last_level), record


def after_level(state: TrialState, level: int, search: Search, log: Callable[[str], None]) -> TrialState:
  """The trial after pruned level `level`: stopped once its ticket reached the target density."""
  if state.active and search.spec.pruning.reached_target(masks_lib.density(state.keep_mask, state.prunable)):
    log(f'trial {state.trial} level {level}: target density reached; stopping')
    return dataclasses.replace(state, active=False)
  return state


def stop_diverged(
    state: TrialState, level: int, step: int | None, search: Search, log: Callable[[str], None]
) -> TrialState:
  """The trial stopped after its level-`level` ticket diverged, saying what to change."""
  log(
      f'lth_jax: trial {state.trial}: the level {level} ticket diverged (non-finite loss or weights at step {step}), '
      f'so level {level + 1} is not pruned from its weights and this trial stops here. Lower '
      f'training.learning_rate ({search.spec.training.learning_rate:g}) or add training.warmup_steps, and run '
      'again in a new workdir.'
  )
  return dataclasses.replace(state, active=False)


@dataclasses.dataclass(frozen=True)
class _LevelZeroSnapshots:
  """Keeps a dense run's weights as it takes them: the rewind point at once (a run killed later in level 0
  still has it), and every step a sweep's variants start from."""

  workdir: str
  trial: int
  rewind_step: int
  keep_snapshots: tuple[int, ...]

  def __call__(self, step: int, snapshot: tuple[Any, Any]) -> None:
    if step == self.rewind_step:
      checkpoints.save_tree(workdir_lib.rewind_directory(self.workdir, self.trial), snapshot)
    if step in self.keep_snapshots:
      checkpoints.save_tree(workdir_lib.snapshot_directory(self.workdir, self.trial, step), snapshot)


def _restore_level_zero(
    state: TrialState, search: Search, records: Sequence[dict[str, Any]], log: Callable[[str], None]
) -> TrialState:
  """The trial after its recorded level 0: its rewind point and the weights it prunes from, restored
  (nothing when the dense run diverged: the trial stops at level 1)."""
  if records_lib.diverged_ticket(records, state.trial, 0) is not None:
    return state
  rewind = _restore_finished(
      state,
      search,
      workdir_lib.rewind_directory(search.workdir, state.trial),
      (state.params0, state.model_state0),
      f'rewind point (step {search.spec.pruning.rewind_step})',
      0,
  )
  _, dense_params, keep_mask = _restore_level(state, search, 0)
  log(
      f'trial {state.trial} level 0: already done, restored from '
      f'{workdir_lib.level_directory(search.workdir, state.trial, 0)}'
  )
  return dataclasses.replace(
      state, rewind=rewind, dense_params=dense_params, ticket_params=dense_params, keep_mask=keep_mask
  )


def _restore_finished(state: TrialState, search: Search, directory: str, like: Any, what: str, level: int) -> Any:
  """A checkpoint of a finished level, or a CheckpointError naming it and saying how to recover."""
  try:
    return checkpoints.restore_tree(directory, like)
  except Exception as error:  # pylint: disable=broad-except  (orbax and tensorstore raise many types)
    message = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
    raise checkpoints.CheckpointError(
        f'{os.path.abspath(directory)}: cannot restore the {what} of trial {state.trial} (finished, '
        f'and needed by the levels after it): {message}. To recompute it, delete that folder and the '
        f'records of trial {state.trial} with level >= {level} from {search.results_path}, then re-run; '
        f'or start over in a new workdir.'
    ) from error


def _restore_level(state: TrialState, search: Search, level: int) -> tuple[Any, Any, Any]:
  """(final weights, weights to prune from, mask) of a finished level."""
  like = {'params': state.params0, 'mask': state.keep_mask}
  if search.spec.pruning.keeps_turnaround_weights:
    like['turnaround_params'] = state.params0
  directory = workdir_lib.level_directory(search.workdir, state.trial, level)
  tree = _restore_finished(state, search, directory, like, f'level {level} ticket checkpoint', level)
  return tree['params'], tree.get('turnaround_params', tree['params']), tree['mask']


def _save_level(state: TrialState, search: Search, level: int, final_params: Any, pruning_params: Any) -> None:
  """Keeps a level's ticket for good: final weights, mask, and (with early turnaround) the weights the
  next level prunes from."""
  tree = {'params': final_params, 'mask': state.keep_mask}
  if search.spec.pruning.keeps_turnaround_weights:
    tree['turnaround_params'] = pruning_params
  checkpoints.save_tree(workdir_lib.level_directory(search.workdir, state.trial, level), tree)


def _turnaround_steps(search: Search, level: int, start_step: int) -> tuple[int, ...]:
  """The steps whose weights a level's ticket run keeps to prune from: the turnaround step, if any, and
  the early-bird evaluation steps (`_early_bird_steps`)."""
  plan = search.spec.pruning
  return tuple(step for step in (plan.turnaround_step,) if step) + _early_bird_steps(search, level, start_step)


def _early_bird_steps(search: Search, level: int, start_step: int) -> tuple[int, ...]:
  """The evaluation steps whose weights a level's ticket run keeps for early-bird turnaround (none without
  it, and none at one-shot levels >= 1, which prune from the dense run)."""
  spec = search.spec
  if spec.pruning.turnaround != 'early_bird' or (level and spec.pruning.mode == 'one_shot'):
    return ()
  return early_bird.evaluation_steps(start_step, search.experiment.total_steps, spec.training.eval_every)


def _early_bird(
    state: TrialState,
    search: Search,
    result: MemberResult,
    level: int,
    keep_mask: Any,
    start_step: int,
    log: Callable[[str], None],
) -> early_bird.EarlyBird:
  """Early-bird turnaround of a finished ticket run, logged with the share of training it makes unneeded."""
  plan, trainer = search.spec.pruning, search.experiment.trainer()
  gradients = functools.partial(
      trainer.mean_gradients, model_state=state.model_state0, data_seed=state.data_seed, num_batches=plan.snip_batches
  )
  found = early_bird.find(
      plan,
      level,
      result.snapshots,
      result.final_params,
      keep_mask,
      state.prunable,
      start_step,
      search.experiment.total_steps,
      search.spec.training.eval_every,
      gradients,
  )
  if found.step is None:
    log(
        f'trial {state.trial} level {level}: early bird: the mask did not settle (distances '
        f'{", ".join(f"{d:.3g}" for d in found.distances if d is not None)}); level {level + 1} is pruned from the final weights'
    )
  else:
    log(
        f'trial {state.trial} level {level}: early bird at step {found.step} of {search.experiment.total_steps}: '
        f"its mask is {found.distance_to_end:.3g} (normalized Hamming) from the end of training's; a search "
        f"stopping there would train {found.steps_after:.0%} fewer of this run's steps"
    )
  return found

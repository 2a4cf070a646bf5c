"""The lottery runner: levels of training, pruning and resetting, with control branches.

Level 0 trains the dense network from W_0 and keeps the weights at `pruning.rewind_step` (W_k; W_0
when the rewind step is 0). Each later level prunes the previous ticket's trained weights by
magnitude, resets the survivors to W_k and trains them from step k to the end; each control branch
(random reinitialization, permuted mask, ...) trains from the same level's mask. Every finished
(level, branch, trial) is appended to `WORKDIR/results.jsonl`; re-running in the same workdir skips
what is already recorded.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lth_jax import branches as branches_lib
from lth_jax import checkpoints
from lth_jax import data as data_lib
from lth_jax import masks as masks_lib
from lth_jax import models as models_lib
from lth_jax import optim
from lth_jax import parallel
from lth_jax import pruning
from lth_jax import results as results_lib
from lth_jax import train as train_lib
from lth_jax import validation

RESULTS_FILE = 'results.jsonl'


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

  def pruning_weights(self, result: train_lib.TrainResult) -> Any:
    """The weights a run's mask is pruned from: at the turnaround step, or the final weights."""
    if self.turnaround_step:
      return result.snapshots[self.turnaround_step][0]
    return parallel.to_host(result.state.params)

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
  """Number of prunable weights per layer name."""
  sizes: dict[str, int] = {}
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  for (path, leaf), is_prunable in zip(flat, jax.tree_util.tree_leaves(prunable)):
    if is_prunable:
      layer = masks_lib.layer_name(masks_lib.path_to_names(path))
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


class _TrialRunner:
  """Runs (or resumes) the levels of one trial."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, trainer: train_lib.Trainer,
               plan: PruningPlan, total_steps: int, trial: int, records: list[dict[str, Any]],
               log: Callable[[str], None]):
    self.config, self.workdir, self.trainer, self.plan = config, workdir, trainer, plan
    self.total_steps, self.trial, self.records, self.log = total_steps, trial, records, log
    self.seed = int(config.get('seed', 0))
    self.init_seed, self.data_seed = trial_seeds(self.seed, trial)
    self.trial_dir = os.path.join(workdir, 'checkpoints', f'trial_{trial}')
    self.results_path = os.path.join(workdir, RESULTS_FILE)
    self.eval_every = int(config.training.get('eval_every', 0))
    self.snip_batches = int(config.pruning.get('snip_batches', 1))
    self.branch_names = ['ticket', *[name for name in config.get('branches', ()) if name != 'ticket']]

  def _done(self, level: int, branch: str) -> bool:
    return any(record['trial'] == self.trial and record['level'] == level and record['branch'] == branch
               for record in self.records)

  def _train(self, level: int, branch: str, params: Any, model_state: Any, keep_mask: Any,
             start_step: int, snapshot_steps: tuple[int, ...] = ()) -> train_lib.TrainResult:
    state = self.trainer.create_state(params, model_state, keep_mask, start_step)
    label = f'trial {self.trial} level {level} {branch}'

    def progress(entry: dict[str, float]) -> None:
      metric = 'test_accuracy' if 'test_accuracy' in entry else 'test_rmse'
      self.log(f'{label}: step {entry["step"]}/{self.total_steps} {metric}={entry[metric]:.4g} '
               f'({entry["examples_per_second"]:.0f} examples/s)')

    return self.trainer.train(state, self.total_steps, self.data_seed, snapshot_steps, self.eval_every,
                              progress)

  def _record(self, level: int, branch: str, keep_mask: Any, prunable: Any,
              result: train_lib.TrainResult, final_params: Any, start_step: int) -> dict[str, Any]:
    final = result.curve[-1]
    metric = 'test_accuracy' if 'test_accuracy' in final else 'test_rmse'
    values = [entry[metric] for entry in result.curve]
    record = {
        'trial': self.trial, 'level': level, 'branch': branch,
        'fraction_remaining': masks_lib.density(keep_mask, prunable),
        'kept_weights': int(sum(masks_lib.count_per_layer(keep_mask, prunable).values())),
        'nonzero_weights': masks_lib.nonzero_count(final_params, prunable),
        'layer_density': masks_lib.density_per_layer(keep_mask, prunable),
        metric: final[metric], 'test_loss': final['test_loss'],
        f'best_{metric}': max(values) if metric == 'test_accuracy' else min(values),
        'steps': self.total_steps - start_step, 'start_step': start_step, 'end_step': self.total_steps,
        'curve': [{key: entry[key] for key in ('step', metric, 'test_loss', 'train_loss') if key in entry}
                  for entry in result.curve],
        'wall_seconds': result.wall_seconds, 'seed': self.seed,
    }
    results_lib.append_record(self.results_path, record) if jax.process_index() == 0 else None
    self.records.append(record)
    return record

  def _level_dir(self, level: int) -> str:
    return level_directory(self.workdir, self.trial, level)

  def _save_level(self, level: int, final_params: Any, pruning_params: Any, keep_mask: Any) -> None:
    """Keeps a level's ticket for good: final weights, mask, and (with early turnaround) the weights
    the next level prunes from."""
    tree = {'params': final_params, 'mask': keep_mask}
    if self.plan.turnaround_step:
      tree['turnaround_params'] = pruning_params
    checkpoints.save_tree(self._level_dir(level), tree)

  def _restore_level(self, level: int, like_params: Any, like_mask: Any) -> tuple[Any, Any, Any]:
    """(final weights, weights to prune from, mask) of a finished level."""
    like = {'params': like_params, 'mask': like_mask}
    if self.plan.turnaround_step:
      like['turnaround_params'] = like_params
    tree = checkpoints.restore_tree(self._level_dir(level), like)
    return tree['params'], tree.get('turnaround_params', tree['params']), tree['mask']

  def run(self) -> None:
    """Trains level 0, then prunes and retrains until the level count or target density."""
    params0, model_state0 = self.trainer.init_variables(self.init_seed)
    prunable = _prunable_from_config(params0, self.config)
    keep_mask = jax.tree_util.tree_map(lambda leaf: np.ones(leaf.shape, bool), params0)
    rewind_step = self.plan.rewind_step
    rewind_dir = os.path.join(self.trial_dir, 'rewind')

    snapshot_steps = tuple(step for step in (self.plan.turnaround_step,) if step)
    if self._done(0, 'ticket'):
      rewind_params, rewind_model_state = checkpoints.restore_tree(rewind_dir, (params0, model_state0))
      _, dense_params, keep_mask = self._restore_level(0, params0, keep_mask)
      self.log(f'trial {self.trial} level 0: already done, restored from {self._level_dir(0)}')
    else:
      result = self._train(0, 'ticket', params0, model_state0, keep_mask, 0, (rewind_step, *snapshot_steps))
      rewind_params, rewind_model_state = result.snapshots[rewind_step]
      final_params = parallel.to_host(result.state.params)
      dense_params = self.plan.pruning_weights(result)
      checkpoints.save_tree(rewind_dir, (rewind_params, rewind_model_state))
      self._save_level(0, final_params, dense_params, keep_mask)
      self._record(0, 'ticket', keep_mask, prunable, result, final_params, 0)

    ticket_params = dense_params
    last_level: dict[str, tuple[dict[str, Any], Any, Any]] = {}
    for level in range(1, self.plan.levels + 1):
      new_mask = self.plan.next_mask(level, ticket_params, keep_mask, dense_params, prunable)
      if all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(new_mask),
                                                   jax.tree_util.tree_leaves(keep_mask))):
        self.log(f'trial {self.trial} level {level}: no weight left to prune; stopping')
        break
      keep_mask = new_mask
      inputs = branches_lib.BranchInputs(
          ticket_mask=keep_mask, rewind_params=rewind_params, rewind_model_state=rewind_model_state,
          prunable=prunable, init_variables=self.trainer.init_variables, seed=0,
          loss_gradients=lambda params, model_state: self.trainer.mean_gradients(
              params, model_state, self.data_seed, self.snip_batches))
      for index, branch in enumerate(self.branch_names):
        if self._done(level, branch):
          if branch == 'ticket':
            _, ticket_params, keep_mask = self._restore_level(level, params0, keep_mask)
          continue
        branch_inputs = dataclasses.replace(inputs, seed=_branch_seed(self.seed, self.trial, level, 2 + index))
        params, model_state, branch_mask = branches_lib.start(branch, branch_inputs)
        result = self._train(level, branch, params, model_state, branch_mask, rewind_step,
                             snapshot_steps if branch == 'ticket' else ())
        final_params = parallel.to_host(result.state.params)
        if branch == 'ticket':
          ticket_params = self.plan.pruning_weights(result)
          self._save_level(level, final_params, ticket_params, keep_mask)
        record = self._record(level, branch, branch_mask, prunable, result, final_params, rewind_step)
        last_level[branch] = (record, final_params, branch_mask)
      if self.plan.reached_target(masks_lib.density(keep_mask, prunable)):
        self.log(f'trial {self.trial} level {level}: target density reached; stopping')
        break
    if self.config.get('report', {}).get('print_surviving_weights', False):
      for branch, (record, final_params, branch_mask) in last_level.items():
        metric = 'test_accuracy' if 'test_accuracy' in record else 'test_rmse'
        self.log(f'trial {self.trial} level {record["level"]} {branch}: {record["kept_weights"]} weights '
                 f'kept, {metric}={record[metric]:.6g}\n'
                 + format_surviving_weights(final_params, branch_mask, prunable))


def _print(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)


@dataclasses.dataclass
class Experiment:
  """What a validated config builds before any training: data, model, mesh and training length."""
  config: ml_collections.ConfigDict
  dataset: data_lib.ArrayDataset
  model: Any
  mesh: jax.sharding.Mesh
  total_steps: int

  def trainer(self, population_size: int = 0) -> train_lib.Trainer:
    """A Trainer for this experiment (with a member axis of `population_size` when > 0)."""
    training = self.config.training
    return train_lib.Trainer(self.model, self.dataset, optim.from_config(training, self.total_steps), self.mesh,
                             training.batch_size, training.get('steps_per_dispatch', 64),
                             training.get('eval_batch_size', 1000), population_size)

  def prunable(self, params: Any) -> Any:
    """The prunable-leaf tree of `params` under this config."""
    return _prunable_from_config(params, self.config)


def prepare(config: ml_collections.ConfigDict) -> Experiment:
  """Validates `config` (raising `validation.ConfigError` naming the field) and builds the dataset,
  model and mesh. No training happens here."""
  validation.check_config(config)
  try:
    dataset = data_lib.build(config.dataset)
    model = models_lib.build(config.model, dataset.num_outputs)
  except data_lib.DatasetNotPreparedError:
    raise
  except ValueError as error:  # a dataset or model field the builders rejected
    raise validation.ConfigError(str(error)) from error
  example = jnp.zeros((1, *dataset.input_shape), jnp.float32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), example, train=False))
  param_shapes, _ = train_lib.split_variables(shapes)
  validation.check_against_data(config, dataset.num_train,
                                _layer_sizes(param_shapes, _prunable_from_config(param_shapes, config)))
  mesh = parallel.create_mesh(config.get('parallel', {}).get('num_devices', 0))
  parallel.check_batch_size(config.training.batch_size, mesh)
  return Experiment(config=config, dataset=dataset, model=model, mesh=mesh,
                    total_steps=validation.total_steps(config.training, dataset.num_train))


def trial_seeds(seed: int, trial: int) -> tuple[int, int]:
  """(initialization seed, batch-order seed) of one trial."""
  return _branch_seed(seed, trial, 0), _branch_seed(seed, trial, 1)


def level_directory(workdir: str, trial: int, level: int) -> str:
  """Where a level's ticket (final weights and mask) is checkpointed."""
  return os.path.join(workdir, 'checkpoints', f'trial_{trial}', f'level_{level}')


def run(config: ml_collections.ConfigDict, workdir: str,
        log: Callable[[str], None] = _print) -> LotteryResults:
  """Runs (or resumes) the lottery experiment of `config` in `workdir`; returns its records.

  Every config check runs before any training: a bad field raises `validation.ConfigError` naming it.
  """
  experiment = prepare(config)
  os.makedirs(workdir, exist_ok=True)
  trainer = experiment.trainer()
  total_steps = experiment.total_steps
  plan = PruningPlan.from_config(config)
  records = results_lib.read_records(os.path.join(workdir, RESULTS_FILE))
  started = time.perf_counter()
  log(f'lth_jax: {config.model.name} on {config.dataset.name}, {total_steps} steps per level, '
      f'{plan.levels} pruning levels of {plan.fraction:.3g} ({plan.scope}, {plan.mode}), rewind step '
      f'{plan.rewind_step}, {config.get("trials", 1)} trial(s), {experiment.mesh.devices.size} device(s)')
  for trial in range(config.get('trials', 1)):
    _TrialRunner(config, workdir, trainer, plan, total_steps, trial, records, log).run()
  log(f'finished in {time.perf_counter() - started:.1f} s; results in {os.path.join(workdir, RESULTS_FILE)}')
  log(results_lib.format_table(records))
  log(results_lib.format_sparsity_table(records))
  return LotteryResults(workdir=workdir, records=records)

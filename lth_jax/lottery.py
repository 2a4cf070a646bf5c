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
from lth_jax import config_schema
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


def _format_duration(seconds: float) -> str:
  """'42s', '3m05s', '2h07m'."""
  seconds = int(round(max(seconds, 0.0)))
  if seconds < 60:
    return f'{seconds}s'
  if seconds < 3600:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


def estimate_remaining_seconds(step: int, end_step: int, eval_every: int, batch_size: int,
                               examples_per_second: float, evaluation_seconds: float) -> float:
  """Time left in a run at `step`: its remaining steps at the training speed measured so far, plus
  one evaluation (as long as the last) at each evaluation point still ahead (and at the end)."""
  if step >= end_step:
    return 0.0
  training = (end_step - step) * batch_size / examples_per_second if examples_per_second > 0 else 0.0
  evaluations = 1 + (len(range(step - step % eval_every + eval_every, end_step, eval_every)) if eval_every else 0)
  return training + evaluations * evaluation_seconds


def _format_speed(examples_per_second: float) -> str:
  """'12,345' for fast runs, '0.731' for slow ones (a ResNet-50 on a CPU)."""
  if examples_per_second >= 100:
    return f'{examples_per_second:,.0f}'
  return f'{examples_per_second:.3g}'


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
    for tag, value in scalars.items():
      if isinstance(value, (int, float)) and not isinstance(value, bool):
        self._writers[run].add_scalar(tag, value, step)
    self._writers[run].flush()

  def close(self, run: str | None = None) -> None:
    """Closes the event file of `run` (of every run when None)."""
    for name in [run] if run is not None else list(self._writers):
      writer = self._writers.pop(name, None)
      if writer is not None:
        writer.close()


class _TrialRunner:
  """Runs (or resumes) the levels of one trial."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, trainer: train_lib.Trainer,
               plan: PruningPlan, total_steps: int, trial: int, records: list[dict[str, Any]],
               log: Callable[[str], None], should_stop: Callable[[int], bool] | None = None,
               scalars: _Scalars | None = None):
    self.config, self.workdir, self.trainer, self.plan = config, workdir, trainer, plan
    self.total_steps, self.trial, self.records, self.log = total_steps, trial, records, log
    self.should_stop, self.scalars = should_stop, scalars or _Scalars(None)
    self.seed = int(config.get('seed', 0))
    self.init_seed, self.data_seed = trial_seeds(self.seed, trial)
    self.trial_dir = os.path.join(workdir, 'checkpoints', f'trial_{trial}')
    self.results_path = os.path.join(workdir, RESULTS_FILE)
    self.eval_every = int(config.training.get('eval_every', 0))
    self.snip_batches = int(config.pruning.get('snip_batches', 1))
    self.branch_names = ['ticket', *[name for name in config.get('branches', ()) if name != 'ticket']]
    checkpointing = config.get('checkpointing', {})
    self.checkpoint_every = int(checkpointing.get('every_steps', 0))
    self.max_to_keep = int(checkpointing.get('max_to_keep', 2))
    self.progress_every_seconds = float(config.get('report', {}).get('progress_every_seconds', 60.0))
    self._evaluation_seconds = 0.0  # how long the last evaluation took (for the ETA between them)

  def _done(self, level: int, branch: str) -> bool:
    done = any(record['trial'] == self.trial and record['level'] == level and record['branch'] == branch
               for record in self.records)
    if done:  # a run killed between writing its record and deleting its checkpoints left them behind
      checkpoints.remove(self._running_dir(level, branch))
    return done

  def _running_dir(self, level: int, branch: str) -> str:
    return running_directory(self.workdir, self.trial, level, branch)

  def _train(self, level: int, branch: str, params: Any, model_state: Any, keep_mask: Any,
             start_step: int, snapshot_steps: tuple[int, ...] = (),
             on_snapshot: Callable[[int, tuple[Any, Any]], None] | None = None) -> train_lib.TrainResult:
    """Trains one run from its start, or from its newest good periodic checkpoint."""
    state = self.trainer.create_state(params, model_state, keep_mask, start_step)
    label = f'trial {self.trial} level {level}/{self.plan.levels} {branch}'
    scalars_run = os.path.join(f'trial_{self.trial}', os.path.basename(self._running_dir(level, branch)))
    total = self.total_steps

    def arrays_like(metadata: dict[str, Any]) -> Any:
      if not start_step < metadata['step'] < total:
        raise ValueError(f'step {metadata["step"]} is outside this run ({start_step}..{total})')
      return train_lib.RunCheckpoint.arrays_like(metadata, state, self.trainer.zero_train_sums(state),
                                                 (params, model_state))

    def progress_line(step: int, speed: float, metrics: str) -> str:
      eta = estimate_remaining_seconds(step, total, self.eval_every, self.trainer.batch_size, speed,
                                       self._evaluation_seconds)
      return (f'{label}: step {step}/{total} ({100 * (step - start_step) / max(total - start_step, 1):.0f}%) '
              f'{metrics}| {_format_speed(speed)} examples/s | ETA {_format_duration(eta)}')

    def progress(entry: dict[str, float]) -> None:
      metric = 'test_accuracy' if 'test_accuracy' in entry else 'test_rmse'
      self._evaluation_seconds = entry.get('evaluation_seconds', 0.0)
      train_loss = f' train_loss={entry["train_loss"]:.4g}' if 'train_loss' in entry else ''
      self.log(progress_line(entry['step'], entry['examples_per_second'],
                             f'{metric}={entry[metric]:.4g}{train_loss} '))
      self.scalars.write(scalars_run, entry['step'], {key: value for key, value in entry.items() if key != 'step'})

    def heartbeat(entry: dict[str, float]) -> None:  # between evaluations: no metrics yet
      self.log(progress_line(entry['step'], entry['examples_per_second'], ''))

    with checkpoints.RunCheckpoints(self._running_dir(level, branch), self.max_to_keep) as running:
      restored = running.restore_latest(arrays_like)
      start: train_lib.TrainState | train_lib.RunCheckpoint = state
      if restored is not None:
        start = train_lib.RunCheckpoint.from_parts(*restored)
        self.log(f'{label}: resuming at step {start.step}/{total} from {running.directory}/{start.step}')
      try:
        return self.trainer.train(
            start, total, self.data_seed, snapshot_steps, self.eval_every, progress,
            checkpoint_every=self.checkpoint_every,
            on_checkpoint=lambda checkpoint: running.save(checkpoint.step, checkpoint.arrays(),
                                                          checkpoint.metadata()),
            should_stop=self.should_stop, on_snapshot=on_snapshot, heartbeat=heartbeat,
            heartbeat_seconds=self.progress_every_seconds)
      except train_lib.Preempted as error:
        running.wait()
        where = (f'checkpointed in {running.directory}/{error.step}' if error.checkpointed
                 else 'nothing to checkpoint')
        raise train_lib.Preempted(f'{label}: stopped at step {error.step}/{total} on request (SIGTERM); '
                                  f'{where}; run the same command again to continue',
                                  error.step, error.checkpointed) from None
      finally:
        self.scalars.close(scalars_run)

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
    if jax.process_index() == 0:
      results_lib.append_record(self.results_path, record)
    self.records.append(record)
    # The record is what marks the run done: only now may its periodic checkpoints go.
    checkpoints.remove(self._running_dir(level, branch))
    self.scalars.write(os.path.join(f'trial_{self.trial}', 'levels'), level,
                       {f'{branch}/{metric}': record[metric],
                        f'{branch}/percent_remaining': 100 * record['fraction_remaining']})
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

  def _restore_finished(self, directory: str, like: Any, what: str, level: int) -> Any:
    """A checkpoint of a finished level, or a CheckpointError naming it and saying how to recover."""
    try:
      return checkpoints.restore_tree(directory, like)
    except Exception as error:  # pylint: disable=broad-except  (orbax and tensorstore raise many types)
      message = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
      raise checkpoints.CheckpointError(
          f'{os.path.abspath(directory)}: cannot restore the {what} of trial {self.trial} (finished, '
          f'and needed by the levels after it): {message}. To recompute it, delete that folder and the '
          f'records of trial {self.trial} with level >= {level} from {self.results_path}, then re-run; '
          f'or start over in a new workdir.') from error

  def _restore_level(self, level: int, like_params: Any, like_mask: Any) -> tuple[Any, Any, Any]:
    """(final weights, weights to prune from, mask) of a finished level."""
    like = {'params': like_params, 'mask': like_mask}
    if self.plan.turnaround_step:
      like['turnaround_params'] = like_params
    tree = self._restore_finished(self._level_dir(level), like, f'level {level} ticket checkpoint', level)
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
      rewind_params, rewind_model_state = self._restore_finished(
          rewind_dir, (params0, model_state0), f'rewind point (step {rewind_step})', 0)
      _, dense_params, keep_mask = self._restore_level(0, params0, keep_mask)
      self.log(f'trial {self.trial} level 0: already done, restored from {self._level_dir(0)}')
    else:
      def save_rewind_point(step: int, snapshot: tuple[Any, Any]) -> None:
        if step == rewind_step:  # at once: a run killed later in level 0 still has it
          checkpoints.save_tree(rewind_dir, snapshot)

      result = self._train(0, 'ticket', params0, model_state0, keep_mask, 0, (rewind_step, *snapshot_steps),
                           on_snapshot=save_rewind_point)
      rewind_params, rewind_model_state = result.snapshots[rewind_step]
      final_params = parallel.to_host(result.state.params)
      dense_params = self.plan.pruning_weights(result)
      if not os.path.isdir(rewind_dir):  # resumed past the rewind step from a checkpoint that holds it
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
    running = os.path.join(self.trial_dir, 'running')
    if jax.process_index() == 0 and os.path.isdir(running) and not os.listdir(running):
      os.rmdir(running)
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
  """What a validated config builds before any training: data, model, mesh and training length.
  `config` is resolved: the global batch size set, lengths in epochs converted to steps."""
  config: ml_collections.ConfigDict
  dataset: data_lib.Dataset
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
  model and mesh; the experiment's config is resolved (global batch, epochs as steps). No training
  happens here."""
  validation.check_config(config)
  try:
    mesh = parallel.create_mesh(config.get('parallel', {}).get('num_devices', 0))
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
  try:
    parallel.check_batch_size(config.training.batch_size, mesh)
  except ValueError as error:
    raise validation.ConfigError(str(error)) from error
  return Experiment(config=config, dataset=dataset, model=model, mesh=mesh,
                    total_steps=validation.total_steps(config.training, dataset.num_train))


def trial_seeds(seed: int, trial: int) -> tuple[int, int]:
  """(initialization seed, batch-order seed) of one trial."""
  return _branch_seed(seed, trial, 0), _branch_seed(seed, trial, 1)


def level_directory(workdir: str, trial: int, level: int) -> str:
  """Where a level's ticket (final weights and mask) is checkpointed."""
  return os.path.join(workdir, 'checkpoints', f'trial_{trial}', f'level_{level}')


def running_directory(workdir: str, trial: int, level: int, branch: str) -> str:
  """Where the periodic checkpoints of the (trial, level, branch) run in progress are kept."""
  return os.path.join(workdir, 'checkpoints', f'trial_{trial}', 'running', f'level_{level}_{branch}')


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
      json.dump(new, file, indent=2, sort_keys=True)
      file.write('\n')


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
  trainer = experiment.trainer()  # built before WORKDIR/config.json is written
  with workdir_lock(workdir, log):
    return _run_locked(config, experiment, trainer, workdir, log, allow_config_change)


def _run_locked(config: ml_collections.ConfigDict, experiment: 'Experiment', trainer: train_lib.Trainer,
                workdir: str, log: Callable[[str], None], allow_config_change: bool) -> LotteryResults:
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
      f'{plan.rewind_step}, {config.get("trials", 1)} trial(s), {experiment.mesh.devices.size} device(s)'
      + (f'; {len(records)} record(s) already in {workdir}' if records else ''))
  stop = StopRequest()
  stop.install()
  try:
    for trial in range(config.get('trials', 1)):
      _TrialRunner(config, workdir, trainer, plan, total_steps, trial, records, log, should_stop=stop,
                   scalars=scalars).run()
  finally:
    stop.restore()
    scalars.close()
  log(f'finished in {time.perf_counter() - started:.1f} s; results in {os.path.join(workdir, RESULTS_FILE)}')
  log(results_lib.format_table(records))
  log(results_lib.format_sparsity_table(records))
  return LotteryResults(workdir=workdir, records=records)

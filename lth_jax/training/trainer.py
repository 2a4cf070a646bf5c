"""The Trainer: runs the compiled programs (`lth_jax.training.programs`) over a mesh, from a TrainState to an
end step, with evaluations, snapshots, checkpoints, heartbeats, preemption and divergence checks.

Batches reach the program through a feed (`lth_jax.training.feeds`): an in-memory dataset stays on the
devices and the host sends only example indices; a streamed one (ImageNet, augmented CIFAR-10) is
read by every host for its own devices. Either way step s of a seed always sees the same batch;
`steps_per_dispatch` steps run inside one compiled loop, metrics accumulate on the devices and are
fetched only at evaluation points.

The state and the pure steps live in `lth_jax.training.steps`, what a train call returns in
`lth_jax.training.run_state`.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
import optax

from lth_jax import data as data_lib
from lth_jax import optim
from lth_jax import tasks
from lth_jax.training import feeds as feeds_lib
from lth_jax.training import parallel
from lth_jax.training import placement as placement_lib
from lth_jax.training import programs as programs_lib
from lth_jax.training import train_loop
from lth_jax.training.run_state import RunCheckpoint
from lth_jax.training.run_state import TrainResult
from lth_jax.training.steps import split_variables
from lth_jax.training.steps import TrainState

__all__ = [
    'Trainer',
]


class Trainer:
  """Compiles the train and eval programs once for a (model, dataset, optimizer, mesh) and runs them.

  The same Trainer serves every level, branch and trial, so nothing recompiles between them.
  It trains a population of `population_size=K` members (K >= 1; one run alone is a population of one):
  every tree of the state has a leading member axis of size K (`steps.stack_members`), and one step
  mapped over it (`programs.over_members`) trains the K members in lockstep, each on its own batch order
  (a lottery level's cohort, a sweep, stability experiments). The members are split over the mesh's
  'members' axis (K must be a multiple of its size) and each member's batch over its 'data' axis.
  """

  def __init__(
      self,
      model: nn.Module,
      dataset: data_lib.Dataset,
      optimizer: optax.GradientTransformationExtraArgs,
      mesh: jax.sharding.Mesh,
      batch_size: int,
      steps_per_dispatch: int = 64,
      eval_batch_size: int = 1000,
      population_size: int = 1,
      feed_like: feeds_lib.Feed | None = None,
      member_hyperparameters: Sequence[str] = (),
      task: tasks.Task | None = None,
  ):
    """`member_hyperparameters`: the names of `optim.MEMBER_HYPERPARAMETERS` that `optimizer` was built to
    let members set for themselves (`optim.from_config`), and so that `create_state`'s `hyperparameters`
    may set. `task`: the loss and metrics (`lth_jax.tasks`; None: the default of the dataset's kind)."""
    parallel.check_batch_size(batch_size, mesh)
    groups = parallel.member_groups(mesh)
    if population_size < 1 or (population_size > 1 and population_size % groups):
      raise ValueError(
          f'a population of {population_size} members does not divide over the {groups} member groups of the mesh'
      )
    self.population_size = population_size
    self.member_hyperparameters = tuple(member_hyperparameters)
    self.model = model
    self.dataset = dataset
    self.task = task if task is not None else tasks.for_dataset(dataset.task)
    self.optimizer = optimizer
    self.mesh = mesh
    self.batch_size = batch_size
    self.steps_per_dispatch = max(1, steps_per_dispatch)
    feed = feeds_lib.create(dataset, mesh, batch_size, eval_batch_size, like=feed_like)
    self.eval_batch_size = feed.eval_batch_size
    # A population is split over the mesh's member groups; one of one is replicated over them (the mesh of
    # a run whose batch does not divide the devices has several), like each of its batches.
    state_sharding = parallel.member_sharded(mesh) if population_size > 1 else parallel.replicated(mesh)
    programs = programs_lib.build(
        model,
        feed,
        optimizer,
        mesh,
        self.task,
        feed.batch_shapes(1)[0],
        batch_size,
        self.steps_per_dispatch,
        population_size,
        state_sharding,
    )
    self.placement = placement_lib.Placement(
        mesh, population_size, batch_size, self.steps_per_dispatch, self.task, feed, programs
    )
    self._init: Any = None  # the initialization program, compiled on first use

  @property
  def feed(self) -> feeds_lib.Feed:
    """What brings the batches (`lth_jax.training.feeds`)."""
    return self.placement.feed

  @property
  def programs(self) -> programs_lib.Programs:
    """The compiled programs (`lth_jax.training.programs`)."""
    return self.placement.programs

  def init_variables(self, seed: int) -> tuple[Any, Any]:
    """Fresh initial (params, model_state) on the host for `seed`."""
    key = jax.random.PRNGKey(seed)
    if self._init is None:
      # Initialization runs once per run; XLA:CPU otherwise spends seconds optimizing its PRNG code.
      options = {'xla_backend_optimization_level': 0} if jax.default_backend() == 'cpu' else {}
      self._init = self.programs.init.lower(key).compile(compiler_options=options)
    return split_variables(parallel.to_host(self._init(key)))

  def create_state(
      self,
      params: Any,
      model_state: Any,
      keep_mask: Any,
      step: int,
      opt_state: Any | None = None,
      hyperparameters: Mapping[str, Sequence[float]] | None = None,
  ) -> TrainState:
    """A TrainState on the mesh starting at absolute `step`, with `opt_state` or a fresh one.

    Every tree carries the leading member axis (see `steps.stack_members`), and a fresh optimizer state
    holds each member's own `hyperparameters` ({name: one value per member}, among the Trainer's
    `member_hyperparameters`; the others are the optimizer's own).
    """
    params = self.put_state(params)
    if opt_state is None:
      opt_state = self.programs.init_optimizer(params)
      if hyperparameters:
        opt_state = optim.with_hyperparameters(opt_state, self._member_hyperparameters(hyperparameters))
    elif hyperparameters:
      raise ValueError('hyperparameters are set in a fresh optimizer state, not in a given opt_state')
    state = TrainState(
        step=self.put_state(np.full((self.population_size,), step, np.int32)),
        params=params,
        model_state=self.put_state(model_state),
        opt_state=self.put_state(opt_state),
        keep_mask=self.put_state(keep_mask),
    )
    # Once more as a whole: a copy that shares no buffer with the caller's arrays (train donates it).
    return self.put_state(state)

  def put_state(self, tree: Any) -> Any:
    """Places a state tree (leading axis: members) on the mesh (`Placement.put_state`)."""
    return self.placement.put_state(tree)

  def fresh_optimizer_state(self, params: Any) -> Any:
    """The optimizer's initial state for one member's params, on the host."""
    return parallel.to_host(self.optimizer.init(params))

  def evaluate(self, state: TrainState) -> dict[str, Any]:
    """Test metrics of the state's parameters: test_loss and test_<metric> for each of the task's
    metrics, each a list of one value per member."""
    return self.placement.evaluate(state)

  def evaluate_params(self, params: Any, model_state: Any) -> dict[str, Any]:
    """Test metrics of any parameters (host or device trees shaped like the state's: leading axis members)."""
    return self.placement.evaluate_params(params, model_state)

  def mean_gradients(self, params: Any, model_state: Any, data_seed: int, num_batches: int) -> Any:
    """The loss gradient at `params`, averaged over the first `num_batches` training batches of
    `data_seed` (model in training mode: batch norm uses each batch's statistics), as a host tree."""
    return self._over_batches(self.programs.mean_gradients, params, model_state, data_seed, num_batches)

  def hessian_gradient(self, params: Any, model_state: Any, data_seed: int, num_batches: int) -> Any:
    """GraSP's Hessian-gradient product H g at `params` as a host tree: g the loss gradient averaged over
    the first `num_batches` training batches of `data_seed` (as `mean_gradients`), H the Hessian of that
    mean loss."""
    return self._over_batches(self.programs.hessian_gradient, params, model_state, data_seed, num_batches)

  def synflow_gradients(self, params: Any, model_state: Any) -> Any:
    """SynFlow's gradient dR/dw at |w| (data-free; the model in evaluation mode, see
    `programs._synflow_program`), as a host tree."""
    gradients = self.programs.synflow_gradients(
        parallel.put_replicated(params, self.mesh), parallel.put_replicated(model_state, self.mesh)
    )
    return parallel.to_host(gradients)

  def _over_batches(
      self, program: Callable[..., Any], params: Any, model_state: Any, data_seed: int, num_batches: int
  ) -> Any:
    """`program` (params, model_state, arrays, items, dropout_seed) over the first `num_batches` training
    batches of `data_seed`, as a host tree."""
    items = self.feed.put(self.feed.host_steps(data_seed, 0, num_batches), 1)
    result = program(
        parallel.put_replicated(params, self.mesh),
        parallel.put_replicated(model_state, self.mesh),
        self.feed.arrays,
        items,
        np.uint32(data_seed % 2**32),
    )
    return parallel.to_host(result)

  def _seeds(self, data_seed: Sequence[int]) -> list[int]:
    """The batch-order seed of every member."""
    if isinstance(data_seed, (int, np.integer)):
      raise TypeError(f'a population takes one data seed per member: [{data_seed}] for a population of one')
    seeds = [int(seed) for seed in data_seed]
    if len(seeds) != self.population_size:
      raise ValueError(f'a population of {self.population_size} needs as many data seeds, got {len(seeds)}')
    return seeds

  def _member_values(
      self, values: Mapping[str, Sequence[float]], allowed: tuple[str, ...], what: str
  ) -> dict[str, np.ndarray]:
    """`values` as host arrays of one value per member (a ValueError naming what does not fit)."""
    unknown = sorted(set(values) - set(allowed))
    if unknown:
      raise ValueError(f'member {what} {sorted(values)}: this Trainer takes {allowed} for a population')
    arrays = {}
    for name, member_values in values.items():
      dtype = np.int32 if name in ('start_step', 'warmup_steps') else np.float32
      arrays[name] = np.asarray(member_values, dtype)
      if arrays[name].shape != (self.population_size,):
        raise ValueError(f'member {what} {name}: {len(member_values)} values for {self.population_size} members')
    return arrays

  def _member_hyperparameters(self, hyperparameters: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
    """The members' own hyperparameters as host arrays (see `create_state`)."""
    return self._member_values(hyperparameters, self.member_hyperparameters, 'hyperparameters')

  def train(
      self,
      state: TrainState | RunCheckpoint,
      end_step: int,
      data_seed: Sequence[int],
      snapshot_steps: Sequence[int] = (),
      eval_every: int = 0,
      progress: Callable[[dict[str, float]], None] | None = None,
      *,
      checkpoint_every: int = 0,
      on_checkpoint: Callable[[RunCheckpoint], None] | None = None,
      should_stop: Callable[[int], bool] | None = None,
      on_snapshot: Callable[[int, tuple[Any, Any]], None] | None = None,
      heartbeat: Callable[[dict[str, float]], None] | None = None,
      heartbeat_seconds: float = 60.0,
      member_settings: Mapping[str, Sequence[float]] | None = None,
  ) -> TrainResult:
    """Trains from the state's step to `end_step`.

    Args:
      state: the starting TrainState (donated: do not reuse it), or a `RunCheckpoint` of this same
        run (same end step, data seed, snapshot steps and evaluation schedule) to continue it.
      end_step: absolute step to stop at.
      data_seed: the batch-order seed of each member; step s always sees the same batch for the same seed.
      snapshot_steps: absolute steps at which (params, model_state) are copied to the host
        (a step equal to the start step snapshots the starting weights).
      eval_every: evaluate every this many steps (0: only at the end); always at the end.
      progress: called with each curve entry (step, train_loss, test metrics, examples_per_second of
        the training since the previous entry, evaluation_seconds; the metrics as per-member lists).
      checkpoint_every: call `on_checkpoint` at every multiple of this many steps before the end
        (0: never); these steps end a dispatch, like evaluation and snapshot steps.
      on_checkpoint: receives a `RunCheckpoint` of the current step; its state is on the devices and
        is donated to the next dispatch as soon as the callback returns, so copy (or save) it then.
      should_stop: called with the current step between dispatches (no device sync); when it returns
        True, the current step is handed to `on_checkpoint` and `Preempted` is raised.
      on_snapshot: called with (step, host (params, model_state)) as each snapshot is taken.
      heartbeat: progress between evaluations: after a dispatch that ends `heartbeat_seconds` or more
        after the last evaluation or heartbeat, waits for that dispatch (one sync, not one per step)
        and is called with {'step', 'examples_per_second' since the last report}.
      member_settings: the members' own values, {name: one value per member}: 'start_step' (a
        member waits, unchanged, until the clock reaches it; training starts at the earliest). (The
        members' own hyperparameters are in their optimizer state: `create_state`.)
    """
    started = time.perf_counter()
    schedule = train_loop.Schedule(end_step, snapshot_steps, eval_every, checkpoint_every, heartbeat_seconds)
    hooks = train_loop.Hooks(progress, on_checkpoint, should_stop, on_snapshot, heartbeat)
    seeds = self._seeds(data_seed)
    settings = self._member_values(member_settings or {}, ('start_step',), 'settings')
    # Each run's dropout rng follows its batch-order seed (`steps.dropout_key`).
    settings['dropout_seed'] = np.asarray([seed % 2**32 for seed in seeds], np.uint32)
    loop = train_loop.TrainLoop.begin(self.placement, state, schedule, hooks, self.put_state(settings), started)
    loop.start()
    if isinstance(self.feed, feeds_lib.StreamingFeed):
      self.feed.forget_streams(keep=seeds)
    return loop.run(seeds)

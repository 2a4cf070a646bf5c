"""The jit-compiled programs a Trainer runs, built once for a (model, feed, optimizer, mesh).

A chunk of `steps_per_dispatch` train steps in one loop, the evaluation over groups of test batches,
the mean gradient over training batches (SNIP scores), the all-weights-finite check, initialization
of the variables and of the optimizer state. With `population_size=K > 0` each program is vmapped
over a leading member axis that lives on the mesh's 'members' axis.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lth_jax import tasks
from lth_jax.models import calling
from lth_jax.training import feeds as feeds_lib
from lth_jax.training import parallel
from lth_jax.training import steps as steps_lib


@dataclasses.dataclass(frozen=True)
class Programs:
  """The compiled programs of one Trainer (see `build`)."""

  # (state, sums, arrays, items, num_active, member_settings) -> (state, sums)
  train_chunk: Callable[..., Any]
  sums_shape: Callable[[Any], Any]  # state -> shapes of one train step's metric sums
  evaluate: Callable[..., Any]  # (params, model_state, totals, group) -> totals
  evaluation_sums_shape: Callable[[Any, Any], Any]  # (params, model_state) -> shapes of one batch's sums
  mean_gradients: Callable[..., Any]  # (params, model_state, arrays, items, dropout_seed) -> mean gradient
  all_finite: Callable[[Any], Any]  # params -> whether every weight is finite (per member)
  init: Any  # jitted key -> flax variables (lowered and compiled by the Trainer)
  init_optimizer: Callable[[Any], Any]  # params -> optimizer state on the mesh


def build(
    model: nn.Module,
    feed: feeds_lib.Feed,
    optimizer: optax.GradientTransformationExtraArgs,
    mesh: jax.sharding.Mesh,
    task: tasks.Task,
    example: jax.ShapeDtypeStruct,
    batch_size: int,
    steps_per_dispatch: int,
    population_size: int,
    state_sharding: jax.sharding.Sharding,
) -> Programs:
  """Builds (jits; XLA compiles on first call) every program of a Trainer.

  Args:
    feed: where batches come from; `feed.batch` and `feed.evaluation_batch` run inside the programs.
    task: the loss and metrics (`lth_jax.tasks`).
    example: a batch of one input (shape and dtype); initialization traces the model on it.
    steps_per_dispatch: the length of the train loop's item axis (1: no loop at all).
    population_size: 0 for one run, K for K members along a leading axis.
    state_sharding: where the state lives (replicated, or split over the members axis).
  """
  replicated = parallel.replicated(mesh)
  step = functools.partial(steps_lib.train_step, model=model, optimizer=optimizer, task=task)
  batch_sharding = parallel.batch_sharded(mesh)
  evaluate_one = functools.partial(steps_lib.eval_step, model=model, task=task)
  if population_size:
    step = jax.vmap(step)
    batch_sharding = parallel.batch_sharded(mesh, 1, member_axis=0)
    evaluate_one = jax.vmap(evaluate_one, in_axes=(0, 0, None, None, None))
  return Programs(
      train_chunk=_train_chunk_program(
          step, feed, mesh, batch_sharding, steps_per_dispatch, population_size, state_sharding
      ),
      sums_shape=_sums_shape_function(step, feed.batch_shapes(batch_size), population_size),
      evaluate=_evaluation_program(evaluate_one, feed, state_sharding),
      evaluation_sums_shape=_evaluation_sums_shape_function(evaluate_one, feed),
      mean_gradients=_mean_gradients_program(model, task, feed, batch_sharding, replicated),
      all_finite=_finiteness_program(population_size, replicated),
      init=_init_program(model, example),
      init_optimizer=_init_optimizer_program(optimizer, population_size, state_sharding),
  )


def _constrained_batch(
    feed: feeds_lib.Feed, batch_sharding: jax.sharding.Sharding, arrays: Any, item: Any
) -> tuple[Any, Any]:
  """The feed's (inputs, targets) of `item`, constrained to `batch_sharding` (inside a program)."""
  inputs, targets = feed.batch(arrays, item)
  return (
      jax.lax.with_sharding_constraint(inputs, batch_sharding),
      jax.lax.with_sharding_constraint(targets, batch_sharding),
  )


def _train_chunk_program(
    step: Callable[..., Any],
    feed: feeds_lib.Feed,
    mesh: jax.sharding.Mesh,
    batch_sharding: jax.sharding.Sharding,
    steps_per_dispatch: int,
    population_size: int,
    state_sharding: jax.sharding.Sharding,
) -> Callable[..., Any]:
  """The jitted chunk of train steps: (state, sums, arrays, items, num_active, member_settings) -> (state,
  sums), both donated; `member_settings` ({} for none) are the members' own values (`steps.train_step`)."""

  def train_chunk(state, sums, arrays, items, num_active, member_settings):
    """Runs the first `num_active` of the steps in `items` (leading axis: steps_per_dispatch; one
    program serves every chunk length, so nothing recompiles at evaluation, snapshot or checkpoint
    boundaries), adding each step's metric sums to `sums` in step order: the totals do not depend on
    where chunks end."""

    def add_step(state, sums, item):
      state, step_sums = step(state, *_constrained_batch(feed, batch_sharding, arrays, item), member_settings)
      return state, jax.tree_util.tree_map(jnp.add, sums, step_sums)

    def item_at(position):
      return jax.tree_util.tree_map(lambda leaf: leaf[position], items)

    if steps_per_dispatch == 1:  # no loop at all
      return add_step(state, sums, item_at(0))

    # A loop with a traced trip count: one program for every chunk length, and the state is
    # updated in place (no per-step copies, unlike a conditional inside a fixed-length scan).
    return jax.lax.fori_loop(0, num_active, lambda position, carry: add_step(*carry, item_at(position)), (state, sums))

  replicated = parallel.replicated(mesh)
  member_axes = 1 if population_size else 0  # leading axes before the batch axis
  return jax.jit(
      train_chunk,
      in_shardings=(
          state_sharding,
          state_sharding,
          replicated,
          parallel.batch_sharded(mesh, 1 + member_axes, 1 if population_size else None),
          replicated,
          state_sharding,
      ),
      out_shardings=(state_sharding, state_sharding),
      donate_argnums=(0, 1),
  )


def _sums_shape_function(
    step: Callable[..., Any], batch_shapes: tuple[Any, Any], population_size: int
) -> Callable[[Any], Any]:
  """state -> the shapes of one train step's metric sums, for batches of `batch_shapes` (inputs, targets)."""

  def sums_shape(state):
    shapes = (
        jax.ShapeDtypeStruct((population_size, *shape.shape), shape.dtype) if population_size else shape
        for shape in batch_shapes
    )
    return jax.eval_shape(step, state, *shapes)[1]

  return sums_shape


def _evaluation_program(
    evaluate_one: Callable[..., Any], feed: feeds_lib.Feed, state_sharding: jax.sharding.Sharding
) -> Callable[..., Any]:
  """The jitted evaluation: (params, model_state, totals, group) -> totals (donated)."""

  def evaluate(params, model_state, totals, group):
    """Adds the metric sums of every batch of `group` (leading axis: batches) to `totals`."""

    def body(totals, batch):
      inputs, targets = feed.evaluation_batch(batch)
      sums = evaluate_one(params, model_state, inputs, targets, batch['weights'])
      return jax.tree_util.tree_map(jnp.add, totals, sums), None

    totals, _ = jax.lax.scan(body, totals, group)
    return totals

  return jax.jit(evaluate, out_shardings=state_sharding, donate_argnums=(2,))


def _evaluation_sums_shape_function(
    evaluate_one: Callable[..., Any], feed: feeds_lib.Feed
) -> Callable[[Any, Any], Any]:
  """(params, model_state) -> the shapes of one evaluation batch's metric sums."""

  def evaluation_sums_shape(params, model_state):
    return jax.eval_shape(
        evaluate_one,
        params,
        model_state,
        *feed.batch_shapes(feed.eval_batch_size),
        jax.ShapeDtypeStruct((feed.eval_batch_size,), jnp.float32),
    )

  return evaluation_sums_shape


def _mean_gradients_program(
    model: nn.Module,
    task: tasks.Task,
    feed: feeds_lib.Feed,
    batch_sharding: jax.sharding.Sharding,
    replicated: jax.sharding.Sharding,
) -> Callable[..., Any]:
  """The jitted mean gradient: (params, model_state, arrays, items, dropout_seed) -> the loss gradient
  averaged over `items`."""

  def mean_gradients(params, model_state, arrays, items, dropout_seed):
    def batch_gradients(position_and_item):
      position, item = position_and_item
      inputs, targets = _constrained_batch(feed, batch_sharding, arrays, item)
      rngs = {'dropout': steps_lib.dropout_key(dropout_seed, position)}

      def loss_fn(params):
        # Training mode, as a train step sees the batch: batch norm normalizes with the batch's
        # statistics (the updated running statistics are dropped).
        outputs, _ = steps_lib.apply_model(model, params, model_state, inputs, train=True, rngs=rngs)
        return steps_lib.loss_and_metric_sums(task, outputs, targets)[0]

      return jax.grad(loss_fn)(params)

    positions = jnp.arange(jax.tree_util.tree_leaves(items)[0].shape[0])
    total = jax.lax.map(batch_gradients, (positions, items))
    return jax.tree_util.tree_map(lambda gradients: gradients.mean(0), total)

  return jax.jit(mean_gradients, out_shardings=replicated)


def _all_finite(params: Any) -> jax.Array:
  """Whether every weight of `params` is finite (inside a program)."""
  leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(params)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _finiteness_program(population_size: int, replicated: jax.sharding.Sharding) -> Callable[[Any], Any]:
  """The jitted all-weights-finite check: params -> a bool (per member)."""
  # Run only where the host waits anyway (evaluations).
  return jax.jit(jax.vmap(_all_finite) if population_size else _all_finite, out_shardings=replicated)


def _init_program(model: nn.Module, example: jax.ShapeDtypeStruct) -> Any:
  """The jitted initialization: key -> flax variables, traced on a batch of one zero example (made
  inside the program: no computation runs before it)."""
  return jax.jit(lambda key: calling.init(model, key, jnp.zeros(example.shape, example.dtype)))


def _init_optimizer_program(
    optimizer: optax.GradientTransformationExtraArgs, population_size: int, state_sharding: jax.sharding.Sharding
) -> Callable[[Any], Any]:
  """The jitted optimizer initialization: params -> optimizer state on the mesh."""
  # One compiled program instead of one eager op per optimizer-state leaf.
  return jax.jit(jax.vmap(optimizer.init) if population_size else optimizer.init, out_shardings=state_sharding)

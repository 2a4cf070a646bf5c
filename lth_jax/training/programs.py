"""The jit-compiled programs a Trainer runs, built once for a (model, feed, optimizer, mesh).

A chunk of `steps_per_dispatch` train steps in one loop, the evaluation over groups of test batches,
the mean gradient over training batches (SNIP scores), the Hessian-gradient product (GraSP), the
data-free SynFlow gradient, the all-weights-finite check, initialization of the variables and of the
optimizer state. Every tree of the state has a leading member axis of
`population_size` members that lives on the mesh's 'members' axis: the programs map over it
(`over_members`).
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
  hessian_gradient: Callable[..., Any]  # (params, model_state, arrays, items, dropout_seed) -> H g (GraSP)
  synflow_gradients: Callable[[Any, Any], Any]  # (params, model_state) -> SynFlow's dR/dw at |w|
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
    population_size: K >= 1, the length of the leading member axis of every state tree.
    state_sharding: where the state lives (split over the members axis; one member: replicated).
  """
  if population_size < 1:
    raise ValueError(f'a population has at least one member, not {population_size}')
  replicated = parallel.replicated(mesh)
  step = functools.partial(steps_lib.train_step, model=model, optimizer=optimizer, task=task)
  evaluate_one = functools.partial(steps_lib.eval_step, model=model, task=task)
  evaluation_axes = (0, 0, None, None, None)  # (params, model_state, inputs, targets, weights)
  if population_size > 1:
    train_chunk = _train_chunk(jax.vmap(step), feed, parallel.batch_sharded(mesh, 1, member_axis=0), steps_per_dispatch)
    evaluate = _evaluation(jax.vmap(evaluate_one, in_axes=evaluation_axes), feed)
  else:  # the programs of an unbatched run, the member axis taken off the arguments and put back on the results
    train_chunk = _one_member(
        _train_chunk(step, feed, parallel.batch_sharded(mesh), steps_per_dispatch), (0, 0, None, 1, None, 0)
    )
    evaluate = _one_member(_evaluation(evaluate_one, feed), (0, 0, 0, None))
  return Programs(
      train_chunk=_train_chunk_program(train_chunk, mesh, state_sharding, population_size),
      sums_shape=_sums_shape_function(
          over_members(step, population_size), feed.batch_shapes(batch_size), population_size
      ),
      evaluate=jax.jit(evaluate, out_shardings=state_sharding, donate_argnums=(2,)),
      evaluation_sums_shape=_evaluation_sums_shape_function(
          over_members(evaluate_one, population_size, evaluation_axes), feed
      ),
      mean_gradients=_mean_gradients_program(model, task, feed, parallel.batch_sharded(mesh), replicated),
      hessian_gradient=_hessian_gradient_program(model, task, feed, parallel.batch_sharded(mesh), replicated),
      synflow_gradients=_synflow_program(model, example, replicated),
      # Run only where the host waits anyway (evaluations).
      all_finite=jax.jit(over_members(_all_finite, population_size), out_shardings=replicated),
      init=_init_program(model, example),
      # One compiled program instead of one eager op per optimizer-state leaf.
      init_optimizer=jax.jit(over_members(optimizer.init, population_size), out_shardings=state_sharding),
  )


def over_members(
    function: Callable[..., Any], population_size: int, in_axes: int | tuple[int | None, ...] = 0
) -> Callable[..., Any]:
  """`function` of one member mapped over the member axis of its arguments (`in_axes`: its position in
  each argument, None: shared by every member) and the leading axis of its outputs: `jax.vmap`-ed for a
  population of K > 1, `function` itself on the single member's slices for a population of one."""
  if population_size > 1:
    return jax.vmap(function, in_axes=in_axes)
  return _one_member(function, in_axes)


def _one_member(function: Callable[..., Any], in_axes: int | tuple[int | None, ...]) -> Callable[..., Any]:
  """`function` of one member's arguments on a population of one: the member axis (`in_axes`, as for
  `jax.vmap`) taken off each argument and put back, leading, on each output. One run alone so compiles
  to the program of an unbatched run, bitwise (XLA:CPU picks other kernels, with other roundings, for a
  `jax.vmap` over one member)."""

  def one_member(*args: Any) -> Any:
    axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
    inner = [
        arg if axis is None else jax.tree_util.tree_map(lambda leaf: jax.lax.index_in_dim(leaf, 0, axis, False), arg)
        for arg, axis in zip(args, axes, strict=True)
    ]
    return jax.tree_util.tree_map(lambda leaf: leaf[None], function(*inner))

  return one_member


def _constrained_batch(
    feed: feeds_lib.Feed, batch_sharding: jax.sharding.Sharding, arrays: Any, item: Any
) -> tuple[Any, Any]:
  """The feed's (inputs, targets) of `item`, constrained to `batch_sharding` (inside a program)."""
  inputs, targets = feed.batch(arrays, item)
  return (
      jax.lax.with_sharding_constraint(inputs, batch_sharding),
      jax.lax.with_sharding_constraint(targets, batch_sharding),
  )


def _train_chunk(
    step: Callable[..., Any],
    feed: feeds_lib.Feed,
    batch_sharding: jax.sharding.Sharding,
    steps_per_dispatch: int,
) -> Callable[..., Any]:
  """The chunk of train steps: (state, sums, arrays, items, num_active, member_settings) -> (state, sums);
  `member_settings` ({} for none) are the members' own values (`steps.train_step`)."""

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

  return train_chunk


def _train_chunk_program(
    train_chunk: Callable[..., Any],
    mesh: jax.sharding.Mesh,
    state_sharding: jax.sharding.Sharding,
    population_size: int,
) -> Callable[..., Any]:
  """The jitted chunk of train steps (see `_train_chunk`), its state and sums donated; the items' members
  split over the mesh's member groups (one member: replicated over them)."""
  replicated = parallel.replicated(mesh)
  return jax.jit(
      train_chunk,
      in_shardings=(
          state_sharding,
          state_sharding,
          replicated,
          parallel.batch_sharded(mesh, 2, member_axis=1 if population_size > 1 else None),  # (steps, members, batch)
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
    shapes = (jax.ShapeDtypeStruct((population_size, *shape.shape), shape.dtype) for shape in batch_shapes)
    return jax.eval_shape(step, state, *shapes)[1]

  return sums_shape


def _evaluation(evaluate_one: Callable[..., Any], feed: feeds_lib.Feed) -> Callable[..., Any]:
  """The evaluation: (params, model_state, totals, group) -> totals."""

  def evaluate(params, model_state, totals, group):
    """Adds the metric sums of every batch of `group` (leading axis: batches) to `totals`."""

    def body(totals, batch):
      inputs, targets = feed.evaluation_batch(batch)
      sums = evaluate_one(params, model_state, inputs, targets, batch['weights'])
      return jax.tree_util.tree_map(jnp.add, totals, sums), None

    totals, _ = jax.lax.scan(body, totals, group)
    return totals

  return evaluate


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


def _batch_loss(
    model: nn.Module,
    task: tasks.Task,
    feed: feeds_lib.Feed,
    batch_sharding: jax.sharding.Sharding,
    model_state: Any,
    arrays: Any,
    item: Any,
    dropout_key: jax.Array,
) -> Callable[[Any], jax.Array]:
  """params -> the mean loss of one training batch (`item`), the model in training mode as a train step
  sees the batch: batch norm normalizes with the batch's statistics (the updated running statistics are
  dropped)."""
  inputs, targets = _constrained_batch(feed, batch_sharding, arrays, item)

  def loss_fn(params):
    outputs, _ = steps_lib.apply_model(model, params, model_state, inputs, train=True, rngs={'dropout': dropout_key})
    return steps_lib.loss_and_metric_sums(task, outputs, targets)[0]

  return loss_fn


def _mean_over_batches(per_batch: Callable[[Any], Any], items: Any) -> Any:
  """The mean over the batches of `items` of `per_batch((position, item))`, one batch at a time."""
  positions = jnp.arange(jax.tree_util.tree_leaves(items)[0].shape[0])
  total = jax.lax.map(per_batch, (positions, items))
  return jax.tree_util.tree_map(lambda batch_values: batch_values.mean(0), total)


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
      key = steps_lib.dropout_key(dropout_seed, position)
      return jax.grad(_batch_loss(model, task, feed, batch_sharding, model_state, arrays, item, key))(params)

    return _mean_over_batches(batch_gradients, items)

  return jax.jit(mean_gradients, out_shardings=replicated)


def _hessian_gradient_program(
    model: nn.Module,
    task: tasks.Task,
    feed: feeds_lib.Feed,
    batch_sharding: jax.sharding.Sharding,
    replicated: jax.sharding.Sharding,
) -> Callable[..., Any]:
  """The jitted Hessian-gradient product of GraSP: (params, model_state, arrays, items, dropout_seed) ->
  H g, with g the gradient of the loss averaged over `items` and H its Hessian (the mean of each batch's
  Hessian times g: forward-over-reverse differentiation, one batch at a time)."""
  mean_gradients = _mean_gradients_program(model, task, feed, batch_sharding, replicated)

  def hessian_gradient(params, model_state, arrays, items, dropout_seed):
    gradient = mean_gradients(params, model_state, arrays, items, dropout_seed)

    def batch_product(position_and_item):
      position, item = position_and_item
      key = steps_lib.dropout_key(dropout_seed, position)
      batch_gradient = jax.grad(_batch_loss(model, task, feed, batch_sharding, model_state, arrays, item, key))
      return jax.jvp(batch_gradient, (params,), (gradient,))[1]

    return _mean_over_batches(batch_product, items)

  return jax.jit(hessian_gradient, out_shardings=replicated)


def _synflow_program(model: nn.Module, example: jax.ShapeDtypeStruct, replicated: jax.sharding.Sharding) -> Any:
  """The jitted SynFlow gradient (Tanaka et al.): (params, model_state) -> dR/dw at |w|, where R is the sum
  of the model's outputs on one input of all ones, every weight and running statistic replaced by its
  absolute value. Data-free; the model runs in evaluation mode (batch norm normalizes with its running
  statistics, dropout is off), as in the paper."""

  def synflow_gradients(params, model_state):
    positive_state = jax.tree_util.tree_map(jnp.abs, model_state)
    inputs = jnp.ones(example.shape, example.dtype)

    def total_output(positive_params):
      outputs, _ = steps_lib.apply_model(model, positive_params, positive_state, inputs, train=False)
      return sum(jnp.sum(leaf) for leaf in jax.tree_util.tree_leaves(outputs))

    return jax.grad(total_output)(jax.tree_util.tree_map(jnp.abs, params))

  return jax.jit(synflow_gradients, out_shardings=replicated)


def _all_finite(params: Any) -> jax.Array:
  """Whether every weight of `params` is finite (inside a program)."""
  leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(params)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _init_program(model: nn.Module, example: jax.ShapeDtypeStruct) -> Any:
  """The jitted initialization: key -> flax variables, traced on a batch of one zero example (made
  inside the program: no computation runs before it)."""
  return jax.jit(lambda key: calling.init(model, key, jnp.zeros(example.shape, example.dtype)))

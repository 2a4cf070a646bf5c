"""The TrainState and the pure functions that transform it: the train and eval steps, the loss and
metric sums they accumulate, and the helpers that stack runs into a population along a member axis."""

from __future__ import annotations

import dataclasses
from typing import Any, cast, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lth_jax import tasks
from lth_jax.models import calling

Metrics = dict[str, jax.Array]

# What each member of a population is given for itself at every step besides its state and batch: the
# step it starts training at and its dropout seed. (Its learning rate, warmup and weight decay live in
# its optimizer state: `lth_jax.optim.from_config`.)
MEMBER_SETTINGS = ('start_step', 'dropout_seed')


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training, as one pytree."""

  step: jax.Array  # int32 scalar: absolute training step (drives the learning-rate schedule)
  params: Any  # the 'params' collection
  model_state: Any  # other variable collections, e.g. {'batch_stats': ...}; {} when none
  opt_state: Any
  keep_mask: Any  # bool tree mirroring params


def split_variables(variables: Any) -> tuple[Any, Any]:
  """Splits flax variables into (params, model_state)."""
  variables = dict(variables)
  params = variables.pop('params')
  return params, variables


def loss_and_metric_sums(
    task: tasks.Task | str, outputs: jax.Array, targets: jax.Array, weights: jax.Array | None = None
) -> tuple[jax.Array, Metrics]:
  """The task's loss of the batch and its metric sums for accumulation ('loss', 'count', one per metric).
  The loss is the (weighted) mean of each example's loss; a task with a batch loss alone (no
  `per_example_loss`) trains on its batch loss as it is. A string names a dataset kind's default task."""
  task = tasks.as_task(task)
  sums = task.sums(outputs, targets, weights)
  if weights is None and task.per_example_loss is None:
    return task.loss(outputs, targets), sums
  return sums['loss'] / jnp.maximum(sums['count'], 1.0), sums


def summarize(task: tasks.Task | str, sums: dict[str, Any], prefix: str) -> dict[str, Any]:
  """Turns metric sums into means: {prefix_loss, prefix_<metric>, ...} (`tasks.Task.summary`).

  Sums with a leading member axis (a population) give a list per metric, one value per member.
  """
  return tasks.as_task(task).summary(sums, prefix)


def dropout_key(dropout_seed: jax.Array, step: jax.Array) -> jax.Array:
  """The 'dropout' rng of one train step: a pure function of the run's seed and the absolute step, so a
  resumed or replayed run draws the same dropout masks."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(0), dropout_seed), step)


def apply_model(
    model: nn.Module, params: Any, model_state: Any, inputs: jax.Array, train: bool, rngs: Any = None
) -> tuple[jax.Array, Any]:
  """Runs the model; returns outputs and the updated non-param collections (unchanged in eval).
  Training mode is passed as the module takes it (`lth_jax.models.calling`)."""
  variables = {'params': params, **model_state}
  if train and model_state:
    outputs, new_model_state = calling.apply(model, variables, inputs, True, mutable=list(model_state), rngs=rngs)
    return outputs, new_model_state
  outputs = cast(jax.Array, calling.apply(model, variables, inputs, train, rngs=rngs if train else None))
  return outputs, model_state


def train_step(
    state: TrainState,
    inputs: jax.Array,
    targets: jax.Array,
    member_settings: dict[str, jax.Array] | None = None,
    *,
    model: nn.Module,
    optimizer: optax.GradientTransformationExtraArgs,
    task: tasks.Task | str,
) -> tuple[TrainState, Metrics]:
  """One optimizer step on one batch. Pure; pruned weights stay exactly zero (masked optimizer).

  `member_settings` (a population member's own values, see `MEMBER_SETTINGS`): 'start_step', before
  which the step leaves the weights, model and optimizer state as they are and adds nothing to the
  metric sums (the state's step still advances: it is the population's clock); and 'dropout_seed', the
  run's seed of the 'dropout' rng stream (`dropout_key`; 0 when not given).
  """
  member_settings = dict(member_settings or {})
  start_step = member_settings.pop('start_step', None)
  rngs = {'dropout': dropout_key(member_settings.pop('dropout_seed', jnp.uint32(0)), state.step)}

  def loss_fn(params):
    outputs, new_model_state = apply_model(model, params, state.model_state, inputs, train=True, rngs=rngs)
    loss, sums = loss_and_metric_sums(task, outputs, targets)
    return loss, (new_model_state, sums)

  grads, (new_model_state, sums) = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(
      grads, state.opt_state, state.params, keep_mask=state.keep_mask, step=state.step
  )
  params = optax.apply_updates(state.params, updates)
  new_state = dataclasses.replace(
      state, step=state.step + 1, params=params, model_state=new_model_state, opt_state=opt_state
  )
  if start_step is None:
    return new_state, sums
  started = state.step >= start_step

  def keep(new, old):
    return jnp.where(started, new, old)

  return (
      dataclasses.replace(
          new_state,
          params=jax.tree_util.tree_map(keep, new_state.params, state.params),
          model_state=jax.tree_util.tree_map(keep, new_state.model_state, state.model_state),
          opt_state=jax.tree_util.tree_map(keep, new_state.opt_state, state.opt_state),
      ),
      jax.tree_util.tree_map(lambda value: jnp.where(started, value, jnp.zeros_like(value)), sums),
  )


def eval_step(
    params: Any,
    model_state: Any,
    inputs: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    *,
    model: nn.Module,
    task: tasks.Task | str,
) -> Metrics:
  """Metric sums of one (padded, weighted) evaluation batch. Pure."""
  outputs, _ = apply_model(model, params, model_state, inputs, train=False)
  _, sums = loss_and_metric_sums(task, outputs, targets, weights)
  return sums


def first_step(step: Any) -> int:
  """The (first member's) absolute step of a state's `step`, read from this host's own shard (the
  members of a population may live on other hosts; they are all at the same step)."""
  if isinstance(step, jax.Array) and not step.is_fully_addressable:
    step = step.addressable_shards[0].data
  return int(np.asarray(jax.device_get(step)).reshape(-1)[0])


def stack_members(trees: Sequence[Any]) -> Any:
  """Stacks host trees of the same structure along a new leading member axis."""
  return jax.tree_util.tree_map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *trees)


def member(tree: Any, index: int) -> Any:
  """One member's slice of a population tree."""
  return jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[index], tree)

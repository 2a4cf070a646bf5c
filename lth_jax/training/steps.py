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

Metrics = dict[str, jax.Array]

# What each member of a population may hold for itself besides its weights, mask and batch order: the
# step it starts training at, and the optimizer's scalar hyperparameters (`lth_jax.optim`).
MEMBER_SETTINGS = ('start_step', 'learning_rate', 'warmup_steps', 'weight_decay')


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
    task: str, outputs: jax.Array, targets: jax.Array, weights: jax.Array | None = None
) -> tuple[jax.Array, Metrics]:
  """Mean loss over the (weighted) batch and metric sums for accumulation.

  Classification: softmax cross-entropy; sums of loss and correct predictions.
  Regression: mean squared error; sums of squared error (test RMSE = sqrt(sum / count)).
  """
  if weights is None:
    weights = jnp.ones(outputs.shape[0], jnp.float32)
  count = weights.sum()
  if task == 'classification':
    per_example = optax.softmax_cross_entropy_with_integer_labels(outputs, targets)
    correct = (jnp.argmax(outputs, axis=-1) == targets).astype(jnp.float32)
    sums = {'loss': (per_example * weights).sum(), 'correct': (correct * weights).sum(), 'count': count}
  elif task == 'regression':
    targets = targets.reshape(outputs.shape)
    per_example = jnp.mean(jnp.square(outputs - targets), axis=tuple(range(1, outputs.ndim)))
    sums = {'loss': (per_example * weights).sum(), 'squared_error': (per_example * weights).sum(), 'count': count}
  else:
    raise ValueError(f'unknown task {task!r}')
  return sums['loss'] / jnp.maximum(count, 1.0), sums


def summarize(task: str, sums: dict[str, Any], prefix: str) -> dict[str, Any]:
  """Turns metric sums into means: {prefix_loss, prefix_accuracy | prefix_rmse}.

  Sums with a leading member axis (a population) give a list per metric, one value per member.
  """
  count = np.maximum(np.asarray(sums['count'], np.float64), 1.0)
  summary = {f'{prefix}_loss': np.asarray(sums['loss'], np.float64) / count}
  if task == 'classification':
    summary[f'{prefix}_accuracy'] = np.asarray(sums['correct'], np.float64) / count
  else:
    summary[f'{prefix}_rmse'] = np.sqrt(np.asarray(sums['squared_error'], np.float64) / count)
  return {name: value.tolist() if value.ndim else float(value) for name, value in summary.items()}


def apply_model(
    model: nn.Module, params: Any, model_state: Any, inputs: jax.Array, train: bool
) -> tuple[jax.Array, Any]:
  """Runs the model; returns outputs and the updated non-param collections (unchanged in eval)."""
  variables = {'params': params, **model_state}
  if train and model_state:
    outputs, new_model_state = model.apply(variables, inputs, train=True, mutable=list(model_state))
    return outputs, new_model_state
  outputs = cast(jax.Array, model.apply(variables, inputs, train=train))
  return outputs, model_state


def train_step(
    state: TrainState,
    inputs: jax.Array,
    targets: jax.Array,
    member_settings: dict[str, jax.Array] | None = None,
    *,
    model: nn.Module,
    optimizer: optax.GradientTransformationExtraArgs,
    task: str,
) -> tuple[TrainState, Metrics]:
  """One optimizer step on one batch. Pure; pruned weights stay exactly zero (masked optimizer).

  `member_settings` (a population member's own values, see `MEMBER_SETTINGS`): 'start_step', before
  which the step leaves the weights, model and optimizer state as they are and adds nothing to the
  metric sums (the state's step still advances: it is the population's clock); the optimizer's
  per-member hyperparameters ('learning_rate', 'warmup_steps', 'weight_decay').
  """
  member_settings = dict(member_settings or {})
  start_step = member_settings.pop('start_step', None)

  def loss_fn(params):
    outputs, new_model_state = apply_model(model, params, state.model_state, inputs, train=True)
    loss, sums = loss_and_metric_sums(task, outputs, targets)
    return loss, (new_model_state, sums)

  grads, (new_model_state, sums) = jax.grad(loss_fn, has_aux=True)(state.params)
  extra = {'hyperparameters': member_settings} if member_settings else {}
  updates, opt_state = optimizer.update(
      grads, state.opt_state, state.params, keep_mask=state.keep_mask, step=state.step, **extra
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
    task: str,
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

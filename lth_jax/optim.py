"""Optimizers from the config, wrapped by the masked-update transform that keeps pruned weights at 0.

The learning rate is a function of the *absolute* training step, passed to `update` as the extra
argument `step`: a ticket that is late-reset to step k continues the schedule from step k even though
its optimizer state is fresh. The keep mask is passed the same way (`keep_mask=`), so changing the
mask between levels never recompiles the train step.

The learning rate, warmup and weight decay live in the optimizer state (`optax.inject_hyperparams`), so
the members of one population (a sweep's variants trained side by side) each hold their own
(`with_hyperparameters`); one schedule function computes every member's rate.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from lth_jax import masks as masks_lib

OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adam', 'adamw')
SCHEDULES = ('constant', 'step', 'cosine')
# The scalar hyperparameters each member of one population may set for itself.
MEMBER_HYPERPARAMETERS = ('learning_rate', 'warmup_steps', 'weight_decay')

# How `from_config`'s state is laid out, as checkpoints record it: the hyperparameters held in the state.
STATE_LAYOUT = 'inject_hyperparams'

Schedule = Callable[[jax.Array], jax.Array]


class MaskedUpdateState(NamedTuple):
  """State of `keep_pruned_at_zero`: only the wrapped optimizer's state."""

  inner_state: optax.OptState


def keep_pruned_at_zero(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """Wraps any optax transformation so that pruned weights get exactly zero updates.

  Gradients of pruned weights are zeroed before `inner` sees them (so momentum, Adam moments and
  weight decay accumulate nothing for them) and the final updates are masked again. A pruned weight
  that is 0.0 therefore stays exactly 0.0 after every step.

  `update` takes the extra keyword argument `keep_mask`, a tree of bools mirroring the parameters;
  other extra arguments (such as `step`) are passed on to `inner`.
  """
  inner = optax.with_extra_args_support(inner)

  def init(params: optax.Params) -> MaskedUpdateState:
    return MaskedUpdateState(inner_state=inner.init(params))

  def update(updates, state, params=None, *, keep_mask, **extra_args):
    updates = masks_lib.apply(updates, keep_mask)
    updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
    return masks_lib.apply(updates, keep_mask), MaskedUpdateState(inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init, update)


def scale_by_step_schedule(schedule: Schedule) -> optax.GradientTransformationExtraArgs:
  """Scales updates by -schedule(step), where `step` (the absolute step) is an extra argument of `update`."""

  def init(params: optax.Params) -> optax.EmptyState:
    del params
    return optax.EmptyState()

  def update(updates, state, params=None, *, step, **extra_args):
    del params, extra_args
    learning_rate = schedule(step)
    updates = jax.tree_util.tree_map(lambda update: -learning_rate * update, updates)
    return updates, state

  return optax.GradientTransformationExtraArgs(init, update)


def learning_rate_schedule(
    learning_rate: float | jax.Array,
    total_steps: int,
    schedule: str = 'constant',
    warmup_steps: int | jax.Array = 0,
    decay_boundaries: Sequence[int] = (),
    decay_factor: float = 0.1,
) -> Schedule:
  """The learning rate as a function of the absolute step. `learning_rate` and `warmup_steps` may be
  traced (a population member's own values, held in the optimizer state by `from_config`).

  Args:
    learning_rate: peak learning rate.
    total_steps: length of training (cosine decays to 0 at this step).
    schedule: 'constant', 'step' (multiply by `decay_factor` at each of `decay_boundaries`) or 'cosine'
      (after the warmup, over the remaining steps; optax's cosine decay).
    warmup_steps: linear warmup over these first steps (0: none): the rate at step t < W is
      learning_rate * (t + 1) / W, so the first step already moves and step W - 1 is at the peak.
  """
  if schedule not in SCHEDULES:
    raise ValueError(f'training.schedule must be one of {SCHEDULES}, got {schedule!r}')
  boundaries_and_scales = {int(boundary): decay_factor for boundary in decay_boundaries}

  def rate(step: jax.Array) -> jax.Array:
    step = jnp.asarray(step)
    peak = jnp.asarray(learning_rate, jnp.float32)
    warmup = jnp.asarray(warmup_steps, jnp.int32)
    if schedule == 'constant':
      after = peak
    elif schedule == 'step':
      after = optax.piecewise_constant_schedule(peak, boundaries_and_scales)(step)
    else:
      # optax.cosine_decay_schedule's arithmetic, with a decay length that may be traced.
      decay_steps = jnp.maximum(1, total_steps - warmup).astype(jnp.float32)
      count = jnp.minimum((step - warmup).astype(jnp.float32), decay_steps)
      # Products with pi / length and 1 / warmup (below) rather than quotients: the arithmetic XLA gives a
      # compile-time constant length, so a run's rates are the same whether its lengths are held in the
      # optimizer state or were constants (tests/test_member_settings.py).
      cosine_decay = 0.5 * (1 + jnp.cos(count * (jnp.pi / decay_steps)))
      after = peak * cosine_decay
    warming = peak * jnp.minimum(1.0, (step + 1) * (1.0 / jnp.maximum(warmup, 1)))
    return jnp.where(step < warmup, warming, after).astype(jnp.float32)

  return rate


def outside_batch_norm(params: Any) -> Any:
  """A tree of bools mirroring `params`: False for the parameters of batch-norm modules (those whose
  module name contains 'norm', as every normalization layer of lth_jax's models is named), else True."""

  def decayed(path, _):
    modules = masks_lib.path_to_names(path)[:-1]
    return not any('norm' in module.lower() for module in modules)

  return jax.tree_util.tree_map_with_path(decayed, params)


def direction(
    optimizer: str,
    momentum: float = 0.9,
    weight_decay: float | jax.Array = 0.0,
    decay_batch_norm: bool = True,
    decays: bool | None = None,
) -> optax.GradientTransformation:
  """The optimizer without its learning rate: weight decay, then the update direction.

  'sgd', 'momentum', 'nesterov' and 'adam' use coupled L2 weight decay (added to the gradient, as
  in the papers' SGD); 'adamw' uses decoupled weight decay. `decay_batch_norm=False` leaves the
  batch-norm scales and offsets undecayed (see `outside_batch_norm`). `decays`: whether the weight decay
  is there at all (None: where `weight_decay` is nonzero; True for a traced rate that may be 0).
  """
  parts = []
  decay_mask = None if decay_batch_norm else outside_batch_norm
  decays = bool(weight_decay) if decays is None else decays
  if decays and optimizer != 'adamw':
    parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
  if optimizer == 'sgd':
    pass
  elif optimizer == 'momentum':
    parts.append(optax.trace(decay=momentum, nesterov=False))
  elif optimizer == 'nesterov':
    parts.append(optax.trace(decay=momentum, nesterov=True))
  elif optimizer == 'adam':
    parts.append(optax.scale_by_adam())
  elif optimizer == 'adamw':
    parts.append(optax.scale_by_adam())
    if decays:
      parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
  else:
    raise ValueError(f'training.optimizer must be one of {OPTIMIZERS}, got {optimizer!r}')
  return optax.chain(*parts) if parts else optax.identity()


def from_config(
    training: Any, total_steps: int, member_hyperparameters: Sequence[str] = ()
) -> optax.GradientTransformationExtraArgs:
  """The masked optimizer of a resolved `training` section (`lth_jax.config.TrainingSpec`, or any object
  with its fields); `update` takes `keep_mask=` and `step=`.

  The learning rate, warmup and weight decay (`MEMBER_HYPERPARAMETERS`) live in the optimizer state
  (`optax.inject_hyperparams`), so under `jax.vmap` each member of a population holds its own
  (`with_hyperparameters`); a fresh state holds the section's values. `member_hyperparameters`: the names
  the members may set for themselves; the weight decay is kept even at rate 0 when it is among them."""
  unknown = sorted(set(member_hyperparameters) - set(MEMBER_HYPERPARAMETERS))
  if unknown:
    raise ValueError(f'member hyperparameters must be among {MEMBER_HYPERPARAMETERS}, got {unknown}')
  decays = bool(training.weight_decay) or 'weight_decay' in member_hyperparameters

  def inner(learning_rate: jax.Array, warmup_steps: jax.Array, weight_decay: jax.Array) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(
        learning_rate,
        total_steps,
        training.schedule,
        warmup_steps,
        tuple(training.decay_boundaries),
        training.decay_factor,
    )
    return optax.chain(
        direction(training.optimizer, training.momentum, weight_decay, training.weight_decay_batch_norm, decays),
        scale_by_step_schedule(schedule),
    )

  learning_rate_schedule(training.learning_rate, total_steps, training.schedule)  # a bad schedule name fails here
  direction(training.optimizer)  # ... and a bad optimizer name
  injected = optax.inject_hyperparams(inner, hyperparam_dtype=jnp.float32)(
      learning_rate=float(training.learning_rate),
      warmup_steps=int(training.warmup_steps),
      weight_decay=float(training.weight_decay),
  )
  return keep_pruned_at_zero(injected)


def hyperparameters(opt_state: MaskedUpdateState) -> dict[str, Any]:
  """The learning rate, warmup and weight decay held in an optimizer state of `from_config`."""
  return dict(opt_state.inner_state.hyperparams)


def with_hyperparameters(opt_state: MaskedUpdateState, values: Mapping[str, Any]) -> MaskedUpdateState:
  """`opt_state` (of `from_config`) holding `values` ({name: value, or one value per member}) in place of
  its hyperparameters of those names."""
  unknown = sorted(set(values) - set(MEMBER_HYPERPARAMETERS))
  if unknown:
    raise ValueError(f'hyperparameters must be among {MEMBER_HYPERPARAMETERS}, got {unknown}')
  injected = opt_state.inner_state
  held = dict(injected.hyperparams)
  for name, value in values.items():
    held[name] = jnp.asarray(value, held[name].dtype)
  return opt_state._replace(inner_state=injected._replace(hyperparams=held))


def without_hyperparameters(opt_state: MaskedUpdateState) -> MaskedUpdateState:
  """`opt_state` of `from_config` in the layout of checkpoints written before the hyperparameters lived in
  the optimizer state: the masked transform's state around the inner chain's."""
  return MaskedUpdateState(inner_state=opt_state.inner_state.inner_state)


def restore_hyperparameters(earlier: MaskedUpdateState, like: MaskedUpdateState) -> MaskedUpdateState:
  """An optimizer state of the earlier layout (`without_hyperparameters`) in the current one, holding the
  count and hyperparameters of `like` (the same run's fresh state)."""
  return like._replace(inner_state=like.inner_state._replace(inner_state=earlier.inner_state))

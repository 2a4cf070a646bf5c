"""Optimizers from the config, wrapped by the masked-update transform that keeps pruned weights at 0.

The learning rate is a function of the *absolute* training step, passed to `update` as the extra
argument `step`: a ticket that is late-reset to step k continues the schedule from step k even though
its optimizer state is fresh. The keep mask is passed the same way (`keep_mask=`), so changing the
mask between levels never recompiles the train step.

Members of one population (a sweep's variants trained side by side) may carry their own learning rate,
warmup and weight decay: `update` then takes the extra argument `hyperparameters`, a dict of traced
scalars named in `MEMBER_HYPERPARAMETERS` (see `from_config`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from lth_jax import masks as masks_lib

OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adam', 'adamw')
SCHEDULES = ('constant', 'step', 'cosine')
# The scalar hyperparameters each member of one population may set for itself.
MEMBER_HYPERPARAMETERS = ('learning_rate', 'warmup_steps', 'weight_decay')

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


def scale_by_step_schedule(
    schedule: Schedule, member_schedule: Callable[..., jax.Array] | None = None
) -> optax.GradientTransformationExtraArgs:
  """Scales updates by -schedule(step), where `step` is an extra argument of `update`.

  With the extra argument `hyperparameters` (a member's own values), the rate is instead
  `member_schedule(step, hyperparameters)`."""

  def init(params: optax.Params) -> optax.EmptyState:
    del params
    return optax.EmptyState()

  def update(updates, state, params=None, *, step, hyperparameters=None, **extra_args):
    del params, extra_args
    if hyperparameters and member_schedule is not None:
      learning_rate = member_schedule(step, hyperparameters)
    else:
      learning_rate = schedule(step)
    updates = jax.tree_util.tree_map(lambda update: -learning_rate * update, updates)
    return updates, state

  return optax.GradientTransformationExtraArgs(init, update)


def learning_rate_schedule(
    learning_rate: float,
    total_steps: int,
    schedule: str = 'constant',
    warmup_steps: int = 0,
    decay_boundaries: Sequence[int] = (),
    decay_factor: float = 0.1,
) -> Schedule:
  """The learning rate as a function of the absolute step.

  Args:
    learning_rate: peak learning rate.
    total_steps: length of training (cosine decays to 0 at this step).
    schedule: 'constant', 'step' (multiply by `decay_factor` at each of `decay_boundaries`) or 'cosine'.
    warmup_steps: linear warmup over these first steps (0: none): the rate at step t < W is
      learning_rate * (t + 1) / W, so the first step already moves and step W - 1 is at the peak.
  """
  if schedule == 'constant':
    main = optax.constant_schedule(learning_rate)
  elif schedule == 'step':
    main = optax.piecewise_constant_schedule(
        learning_rate, {int(boundary): decay_factor for boundary in decay_boundaries}
    )
  elif schedule == 'cosine':
    main = optax.cosine_decay_schedule(learning_rate, max(1, total_steps - warmup_steps))
  else:
    raise ValueError(f'training.schedule must be one of {SCHEDULES}, got {schedule!r}')
  if warmup_steps <= 0:
    return lambda step: jnp.asarray(main(step), jnp.float32)

  def warmed_up(step):
    step = jnp.asarray(step)
    warmup = learning_rate * jnp.minimum(1.0, (step + 1) / warmup_steps)
    after = main(step - warmup_steps) if schedule == 'cosine' else main(step)
    return jnp.where(step < warmup_steps, warmup, after).astype(jnp.float32)

  return warmed_up


def member_learning_rate_schedule(training: Any, total_steps: int) -> Callable[..., jax.Array]:
  """The schedule of `training` (a resolved training section) as a function of (step, hyperparameters),
  where `hyperparameters` may hold a member's own traced 'learning_rate' and 'warmup_steps'; the
  same rates as `learning_rate_schedule` (to rounding), computed from traced values."""
  decay = optax.piecewise_constant_schedule(
      1.0, {int(boundary): training.decay_factor for boundary in training.decay_boundaries}
  )

  def schedule(step: jax.Array, hyperparameters: dict[str, jax.Array]) -> jax.Array:
    step = jnp.asarray(step)
    learning_rate = jnp.asarray(hyperparameters.get('learning_rate', training.learning_rate), jnp.float32)
    warmup_steps = jnp.asarray(hyperparameters.get('warmup_steps', training.warmup_steps), jnp.int32)
    if training.schedule == 'constant':
      shape = jnp.float32(1.0)
    elif training.schedule == 'step':
      shape = decay(step)
    elif training.schedule == 'cosine':
      decay_steps = jnp.maximum(1, total_steps - warmup_steps)
      progress = jnp.clip(step - warmup_steps, 0, decay_steps) / decay_steps
      shape = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    else:
      raise ValueError(f'training.schedule must be one of {SCHEDULES}, got {training.schedule!r}')
    warmup = jnp.minimum(1.0, (step + 1) / jnp.maximum(warmup_steps, 1))
    return (learning_rate * jnp.where(step < warmup_steps, warmup, shape)).astype(jnp.float32)

  return schedule


def member_decayed_weights(weight_decay: float, mask: Any = None) -> optax.GradientTransformationExtraArgs:
  """`optax.add_decayed_weights` whose rate is a member's own 'weight_decay' when `update` gets the extra
  argument `hyperparameters` holding one (else `weight_decay`)."""

  def update(updates, state, params=None, *, hyperparameters=None, **extra_args):
    del extra_args
    rate = (hyperparameters or {}).get('weight_decay', weight_decay)
    return optax.add_decayed_weights(rate, mask=mask).update(updates, state, params)

  return optax.GradientTransformationExtraArgs(optax.add_decayed_weights(weight_decay, mask=mask).init, update)


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
    weight_decay: float = 0.0,
    decay_batch_norm: bool = True,
    member_weight_decay: bool = False,
) -> optax.GradientTransformation:
  """The optimizer without its learning rate: weight decay, then the update direction.

  'sgd', 'momentum', 'nesterov' and 'adam' use coupled L2 weight decay (added to the gradient, as
  in the papers' SGD); 'adamw' uses decoupled weight decay. `decay_batch_norm=False` leaves the
  batch-norm scales and offsets undecayed (see `outside_batch_norm`). `member_weight_decay`: the decay
  is there even at rate 0, and takes each member's own rate (`member_decayed_weights`).
  """
  parts = []
  decay_mask = None if decay_batch_norm else outside_batch_norm
  decays = bool(weight_decay) or member_weight_decay
  decayed_weights = member_decayed_weights if member_weight_decay else optax.add_decayed_weights
  if decays and optimizer != 'adamw':
    parts.append(decayed_weights(weight_decay, mask=decay_mask))
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
      parts.append(decayed_weights(weight_decay, mask=decay_mask))
  else:
    raise ValueError(f'training.optimizer must be one of {OPTIMIZERS}, got {optimizer!r}')
  return optax.chain(*parts) if parts else optax.identity()


def from_config(
    training: Any, total_steps: int, member_hyperparameters: Sequence[str] = ()
) -> optax.GradientTransformationExtraArgs:
  """The masked optimizer of a resolved `training` section (`lth_jax.config.TrainingSpec`, or any object
  with its fields); `update` takes `keep_mask=` and `step=`.

  `member_hyperparameters`: names from `MEMBER_HYPERPARAMETERS` that the members of a population set for
  themselves; `update` then also takes `hyperparameters={name: traced scalar}` (without it, or with an
  empty dict, every member uses the section's values)."""
  unknown = sorted(set(member_hyperparameters) - set(MEMBER_HYPERPARAMETERS))
  if unknown:
    raise ValueError(f'member hyperparameters must be among {MEMBER_HYPERPARAMETERS}, got {unknown}')
  schedule = learning_rate_schedule(
      learning_rate=training.learning_rate,
      total_steps=total_steps,
      schedule=training.schedule,
      warmup_steps=training.warmup_steps,
      decay_boundaries=tuple(training.decay_boundaries),
      decay_factor=training.decay_factor,
  )
  inner = optax.chain(
      direction(
          training.optimizer,
          training.momentum,
          training.weight_decay,
          training.weight_decay_batch_norm,
          member_weight_decay='weight_decay' in member_hyperparameters,
      ),
      scale_by_step_schedule(schedule, member_learning_rate_schedule(training, total_steps)),
  )
  return keep_pruned_at_zero(inner)

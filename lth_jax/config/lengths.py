"""Lengths of training given in epochs or per device, resolved to steps and a global batch before
anything runs (steps_per_epoch = num_train // batch), and the checks of points in training that name
the field (steps or epochs) the config set."""

from __future__ import annotations

import copy
from typing import Any

import ml_collections

from lth_jax.config.errors import ConfigError
from lth_jax.config.errors import is_number as _is_number
from lth_jax.config.errors import require as _require


def total_steps(training: ml_collections.ConfigDict, num_train: int) -> int:
  """Training length in steps: training.num_steps, or training.num_epochs epochs (rounded to a step)."""
  if training.get('num_steps'):
    return int(training.num_steps)
  return int(round(training.num_epochs * (num_train // int(training.batch_size))))


# (section, field in steps, twin field in epochs): set at most one of each pair.
EPOCH_TWINS = (
    ('training', 'warmup_steps', 'warmup_epochs'),
    ('training', 'eval_every', 'eval_every_epochs'),
    ('training', 'decay_boundaries', 'decay_epochs'),
    ('pruning', 'rewind_step', 'rewind_epoch'),
    ('pruning', 'turnaround_step', 'turnaround_epoch'),
)


def require_point(
    condition: bool, config: ml_collections.ConfigDict, section: str, step_field: str, message: str
) -> None:
  """`require` for a point in training given in steps or (through its epochs twin) in epochs: the
  error names the field the config set, with the step it resolved to."""
  if condition:
    return
  epoch_field = next((epochs for sec, steps, epochs in EPOCH_TWINS if (sec, steps) == (section, step_field)), None)
  epochs = config[section].get(epoch_field) if epoch_field else None
  steps = config[section].get(step_field)
  if epochs:
    raise ConfigError(f'{section}.{epoch_field}={epochs!r} (step {steps}): {message}')
  raise ConfigError(f'{section}.{step_field}={steps!r}: {message}')


def check_epoch_twins(config: ml_collections.ConfigDict) -> None:
  """Each epochs field is a valid number of epochs, and at most one of each steps/epochs pair is set."""
  for section, step_field, epoch_field in EPOCH_TWINS:
    name = f'{section}.{epoch_field}'
    if step_field == 'decay_boundaries':
      epochs = config[section].get(epoch_field, ()) or ()
      _require(
          isinstance(epochs, (tuple, list)) and all(_is_number(value) and value > 0 for value in epochs),
          name,
          'must be a sequence of positive numbers of epochs',
          epochs,
      )
      given = bool(epochs)
    else:
      epochs = config[section].get(epoch_field, 0) or 0
      _require(_is_number(epochs) and epochs >= 0, name, 'must be a non-negative number of epochs', epochs)
      given = epochs > 0
    _require(
        not (given and config[section].get(step_field)),
        name,
        f'set either {section}.{step_field} (steps) or {name} (epochs), not both',
        epochs,
    )


def resolve_batch_size(config: ml_collections.ConfigDict, num_devices: int) -> ml_collections.ConfigDict:
  """A copy of `config` whose training.batch_size is the global batch: parallel.batch_per_device x
  `num_devices` when batch_per_device is set (training.batch_size must then be 0 or that product)."""
  per_device = config.get('parallel', {}).get('batch_per_device', 0) or 0
  if not per_device:
    return config
  global_batch = per_device * num_devices
  _require(
      config.training.get('batch_size', 0) in (0, global_batch),
      'training.batch_size',
      f'disagrees with parallel.batch_per_device={per_device} x {num_devices} devices = {global_batch}; '
      'set training.batch_size=0 (or to that product)',
      config.training.get('batch_size'),
  )
  resolved = copy.deepcopy(config)
  with resolved.unlocked():
    resolved.training.batch_size = global_batch
  return resolved


def resolve_epochs(config: ml_collections.ConfigDict, num_train: int) -> ml_collections.ConfigDict:
  """A copy of `config` with every length given in epochs converted to steps (steps_per_epoch =
  num_train // training.batch_size, rounded to the nearest step): training.num_steps,
  warmup_steps, eval_every, decay_boundaries, pruning.rewind_step and turnaround_step."""
  training = config.training
  steps_per_epoch = num_train // int(training.batch_size)
  _require(
      steps_per_epoch >= 1,
      'training.batch_size',
      f'is larger than the training set ({num_train} examples)',
      training.batch_size,
  )
  resolved = copy.deepcopy(config)
  with resolved.unlocked():
    if not training.get('num_steps'):
      resolved.training.num_steps = int(round((training.get('num_epochs', 0) or 0) * steps_per_epoch))
    for section, step_field, epoch_field in EPOCH_TWINS:
      epochs: Any = config[section].get(epoch_field, 0) or 0  # a number, or a tuple of decay epochs
      if not epochs:
        continue
      name = f'{section}.{epoch_field}'
      if step_field == 'decay_boundaries':
        resolved[section][step_field] = tuple(int(round(value * steps_per_epoch)) for value in epochs)
        continue
      steps = int(round(epochs * steps_per_epoch))
      _require(steps >= 1, name, f'is less than one step ({steps_per_epoch} steps per epoch)', epochs)
      resolved[section][step_field] = steps
  return resolved

"""Static checks of a lottery config (names, ranges and types of every field the run reads) that run
before any data is read or anything trains, with errors that name the field.

The checks that need the data and the model are in `lth_jax.config.data_checks`, the resolution of
epochs to steps in `lth_jax.config.lengths`, and the comparison of a workdir's config with a new one in
`lth_jax.config.compatibility`.
"""

from __future__ import annotations


import ml_collections

from lth_jax.config import pruning_checks
from lth_jax.config import schema
from lth_jax import data as data_lib
from lth_jax import importing
from lth_jax import models as models_lib
from lth_jax.models import convolution
from lth_jax import optim
from lth_jax.config.compatibility import config_to_json
from lth_jax.config.compatibility import flatten as _flatten
from lth_jax.config.errors import ConfigError
from lth_jax.config.errors import is_int as _is_int
from lth_jax.config.errors import is_number as _is_number
from lth_jax.config.errors import require as _require
from lth_jax.config.lengths import check_epoch_twins as _check_epoch_twins

__all__ = [
    'FREE_FIELDS',
    'check_checkpointing',
    'check_config',
    'check_known_fields',
]


# Fields whose keys are free (layer names).
FREE_FIELDS = ('pruning.layer_fractions', 'sweep', 'model.arguments')


def check_known_fields(config: ml_collections.ConfigDict) -> None:
  """Every field of `config` is one of lth_jax/config/schema.py (a misspelt field would be ignored)."""
  known = _flatten(config_to_json(schema.base_config()))
  for field in _flatten(config_to_json(config)):
    if field in known or any(field == free or field.startswith(free + '.') for free in FREE_FIELDS):
      continue
    section = field.rsplit('.', 1)[0] if '.' in field else ''
    siblings = sorted(
        name.rsplit('.', 1)[-1]
        for name in known
        if name.startswith(section + '.') and name.count('.') == field.count('.')
    )
    raise ConfigError(
        f'{field}: unknown field'
        + (f'; {section} has: {", ".join(siblings)}' if siblings else '')
        + ' (see lth_jax/config/schema.py)'
    )


def check_config(config: ml_collections.ConfigDict) -> None:
  """Static checks (no data, no model): names, ranges and types of every field the run reads."""
  for section in ('dataset', 'model', 'training', 'pruning'):
    _require(section in config, section, 'the config has no such section', None)
  check_known_fields(config)
  _check_names_and_model(config)
  _check_optimizer(config.training)
  num_steps = _check_batch_and_length(config)
  pruning_checks.check_pruning(config, num_steps)
  _check_transfer(config)
  _check_parallel(config)
  _require(
      isinstance(config.dataset.get('streaming', False), bool),
      'dataset.streaming',
      'must be True or False',
      config.dataset.get('streaming'),
  )
  for field in ('train_split', 'test_split', 'input_key', 'target_key'):
    value = config.dataset.get(field, 'default')
    _require(isinstance(value, str) and bool(value), f'dataset.{field}', 'must be a non-empty string', value)
  _check_epoch_twins(config)
  check_checkpointing(config)


def _check_names_and_model(config: ml_collections.ConfigDict) -> None:
  """Dataset and model names, the model's fields, the seed and the number of trials, in that order."""
  _require(
      data_lib.is_dataset_name(config.dataset.get('name'))
      or str(config.dataset.get('name')).startswith(importing.PYTHON_PREFIX),  # passed from Python: see prepare
      'dataset.name',
      f'unknown dataset; known datasets: {", ".join(data_lib.dataset_names())}, '
      f'or {data_lib.TFDS_PREFIX}NAME for any tfds dataset',
      config.dataset.get('name'),
  )
  _require(
      models_lib.is_known_name(config.model.get('name'))
      or str(config.model.get('name')).startswith(importing.PYTHON_PREFIX),
      'model.name',
      f"unknown model; known models: {', '.join(models_lib.REGISTRY)}, or an import path 'package.module:Name'",
      config.model.get('name'),
  )
  _require(
      config.model.get('dtype', 'float32') in models_lib.DTYPES,
      'model.dtype',
      f'unknown computation dtype; known: {", ".join(models_lib.DTYPES)}',
      config.model.get('dtype'),
  )
  _require(
      config.model.get('conv_kernel_gradient', 'auto') in convolution.KERNEL_GRADIENTS,
      'model.conv_kernel_gradient',
      f'must be one of {", ".join(convolution.KERNEL_GRADIENTS)}',
      config.model.get('conv_kernel_gradient'),
  )
  _require(
      _is_int(config.get('seed', 0)) and config.get('seed', 0) >= 0,
      'seed',
      'must be a non-negative integer',
      config.get('seed'),
  )
  for field in ('hidden_sizes', 'dense_sizes'):
    widths = config.model.get(field, ())
    _require(
        isinstance(widths, (tuple, list)) and all(_is_int(width) and width >= 1 for width in widths),
        f'model.{field}',
        'must be a sequence of positive integers',
        widths,
    )
  _require(
      _is_int(config.model.get('hidden_size', 1)) and config.model.get('hidden_size', 1) >= 1,
      'model.hidden_size',
      'must be a positive integer',
      config.model.get('hidden_size'),
  )
  _require(
      _is_int(config.get('trials', 1)) and config.get('trials', 1) >= 1,
      'trials',
      'must be a positive integer',
      config.get('trials'),
  )


def _check_optimizer(training: ml_collections.ConfigDict) -> None:
  """The optimizer, its schedule and rates, and the evaluation batch of the `training` section."""
  _require(
      training.get('optimizer') in optim.OPTIMIZERS,
      'training.optimizer',
      f'unknown optimizer; known: {", ".join(optim.OPTIMIZERS)}',
      training.get('optimizer'),
  )
  _require(
      training.get('schedule', 'constant') in optim.SCHEDULES,
      'training.schedule',
      f'unknown schedule; known: {", ".join(optim.SCHEDULES)}',
      training.get('schedule'),
  )
  _require(
      _is_number(training.get('learning_rate')) and training.learning_rate > 0,
      'training.learning_rate',
      'must be a positive finite number',
      training.get('learning_rate'),
  )
  momentum = training.get('momentum', 0.9)
  _require(_is_number(momentum) and 0 <= momentum < 1, 'training.momentum', 'must be in [0, 1)', momentum)
  decay_factor = training.get('decay_factor', 0.1)
  _require(
      _is_number(decay_factor) and decay_factor > 0,
      'training.decay_factor',
      'must be a positive finite number (the step schedule multiplies the rate by it)',
      decay_factor,
  )
  eval_batch_size = training.get('eval_batch_size', 1000)
  _require(
      _is_int(eval_batch_size) and eval_batch_size >= 1,
      'training.eval_batch_size',
      'must be a positive integer',
      eval_batch_size,
  )


def _check_batch_and_length(config: ml_collections.ConfigDict) -> int:
  """The batch (global or per device), the length of training, its periods and weight decay; returns
  training.num_steps (0 when the length is given in epochs)."""
  training = config.training
  per_device = config.get('parallel', {}).get('batch_per_device', 0) or 0
  _require(
      _is_int(per_device) and per_device >= 0,
      'parallel.batch_per_device',
      'must be a non-negative integer (0: use training.batch_size)',
      per_device,
  )
  _require(
      _is_int(training.get('batch_size'))
      and (training.batch_size > 0 or (per_device > 0 and training.batch_size == 0)),
      'training.batch_size',
      'must be a positive integer (or 0 with parallel.batch_per_device set)',
      training.get('batch_size'),
  )
  num_steps, num_epochs = training.get('num_steps', 0) or 0, training.get('num_epochs', 0) or 0
  _require(_is_int(num_steps) and num_steps >= 0, 'training.num_steps', 'must be a non-negative integer', num_steps)
  _require(
      _is_number(num_epochs) and num_epochs >= 0,
      'training.num_epochs',
      'must be a non-negative number of epochs',
      num_epochs,
  )
  _require(
      (num_steps > 0) != (num_epochs > 0),
      'training.num_steps',
      'set exactly one of training.num_steps and training.num_epochs to a positive value',
      num_steps,
  )
  for field in ('warmup_steps', 'eval_every'):
    value = training.get(field, 0)
    _require(_is_int(value) and value >= 0, f'training.{field}', 'must be a non-negative integer', value)
  dispatch = training.get('steps_per_dispatch', 64)
  _require(_is_int(dispatch) and dispatch >= 1, 'training.steps_per_dispatch', 'must be a positive integer', dispatch)
  _require(
      _is_number(training.get('weight_decay', 0.0)) and training.get('weight_decay', 0.0) >= 0,
      'training.weight_decay',
      'must be a non-negative finite number',
      training.get('weight_decay'),
  )
  _require(
      isinstance(training.get('weight_decay_batch_norm', True), bool),
      'training.weight_decay_batch_norm',
      'must be True or False',
      training.get('weight_decay_batch_norm'),
  )
  return num_steps


def _check_transfer(config: ml_collections.ConfigDict) -> None:
  """The `transfer` section's start and output layer (optional: absent means the defaults)."""
  transfer = config.get('transfer', {})
  _require(
      transfer.get('start', 'ticket') in ('ticket', 'reinit'),
      'transfer.start',
      "must be 'ticket' (the ticket's own starting weights) or 'reinit' (fresh weights, same mask)",
      transfer.get('start'),
  )
  _require(
      transfer.get('output_layer', 'dense') in ('dense', 'ticket_density'),
      'transfer.output_layer',
      "must be 'dense' or 'ticket_density'",
      transfer.get('output_layer'),
  )


def _check_parallel(config: ml_collections.ConfigDict) -> None:
  """The `parallel` section's members per program and number of devices (its batch is checked with training's)."""
  members = config.get('parallel', {}).get('members_per_program', 0)
  _require(
      _is_int(members) and members >= 0,
      'parallel.members_per_program',
      'must be a non-negative integer (1: one run at a time; 0: as many as fit in memory)',
      members,
  )
  _require(
      _is_int(config.get('parallel', {}).get('num_devices', 0)),
      'parallel.num_devices',
      'must be an integer (0: all devices)',
      config.get('parallel', {}).get('num_devices'),
  )


def check_checkpointing(config: ml_collections.ConfigDict) -> None:
  """Checks the `checkpointing` section (optional: absent means the defaults) and the progress period."""
  progress_every = config.get('report', {}).get('progress_every_seconds', 60.0)
  _require(
      _is_number(progress_every) and progress_every >= 0,
      'report.progress_every_seconds',
      'must be a non-negative number of seconds',
      progress_every,
  )
  checkpointing = config.get('checkpointing', {})
  every = checkpointing.get('every_steps', 0)
  _require(
      _is_int(every) and every >= 0,
      'checkpointing.every_steps',
      'must be a non-negative integer (0: no periodic checkpoints)',
      every,
  )
  keep = checkpointing.get('max_to_keep', 2)
  _require(_is_int(keep) and keep >= 1, 'checkpointing.max_to_keep', 'must be a positive integer', keep)
  tensorboard = checkpointing.get('tensorboard', True)
  _require(isinstance(tensorboard, bool), 'checkpointing.tensorboard', 'must be True or False', tensorboard)

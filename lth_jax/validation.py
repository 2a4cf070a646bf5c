"""Checks of a lottery config that run before any training, with errors that name the field."""

from __future__ import annotations

import copy
import json
import math
import numbers
from typing import Any, Mapping, Sequence

import ml_collections

from lth_jax import branches as branches_lib
from lth_jax import config_schema
from lth_jax import data as data_lib
from lth_jax import masks as masks_lib
from lth_jax import models as models_lib
from lth_jax import optim
from lth_jax import pruning
from lth_jax.models import convolution

PRUNING_MODES = ('iterative', 'one_shot')
# Rounding to whole weights per layer and level leaves densities slightly off the geometric schedule.
DENSITY_TOLERANCE = 0.01


class ConfigError(ValueError):
  """A config field holds a value the run cannot use."""


def _require(condition: bool, field: str, message: str, value: Any) -> None:
  if not condition:
    raise ConfigError(f'{field}={value!r}: {message}')


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  """A finite real number (not a bool)."""
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_fraction(field: str, value: Any) -> None:
  _require(
      isinstance(value, (int, float)) and 0.0 < value < 1.0,
      field,
      'a prune fraction must be strictly between 0 and 1',
      value,
  )


def fraction_per_level(config: ml_collections.ConfigDict) -> float:
  """The default fraction pruned per level: pruning.fraction, or derived from target_density."""
  pruning_config = config.pruning
  if pruning_config.get('fraction') is not None:
    return float(pruning_config.fraction)
  return pruning.per_level_fraction(pruning_config.target_density, pruning_config.levels)


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


def _require_point(
    condition: bool, config: ml_collections.ConfigDict, section: str, step_field: str, message: str
) -> None:
  """`_require` for a point in training given in steps or (through its epochs twin) in epochs: the
  error names the field the config set, with the step it resolved to."""
  if condition:
    return
  epoch_field = next((epochs for sec, steps, epochs in EPOCH_TWINS if (sec, steps) == (section, step_field)), None)
  epochs = config[section].get(epoch_field) if epoch_field else None
  steps = config[section].get(step_field)
  if epochs:
    raise ConfigError(f'{section}.{epoch_field}={epochs!r} (step {steps}): {message}')
  raise ConfigError(f'{section}.{step_field}={steps!r}: {message}')


def _check_epoch_twins(config: ml_collections.ConfigDict) -> None:
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
      epochs = config[section].get(epoch_field, 0) or 0
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


# Fields whose keys are free (layer names).
FREE_FIELDS = ('pruning.layer_fractions',)


def check_known_fields(config: ml_collections.ConfigDict) -> None:
  """Every field of `config` is one of lth_jax/config_schema.py (a misspelt field would be ignored)."""
  known = _flatten(config_to_json(config_schema.base_config()))
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
        + ' (see lth_jax/config_schema.py)'
    )


def check_config(config: ml_collections.ConfigDict) -> None:
  """Static checks (no data, no model): names, ranges and types of every field the run reads."""
  for section in ('dataset', 'model', 'training', 'pruning'):
    _require(section in config, section, 'the config has no such section', None)
  check_known_fields(config)
  _require(
      config.dataset.get('name') in data_lib.DATASET_NAMES,
      'dataset.name',
      f'unknown dataset; known datasets: {", ".join(data_lib.DATASET_NAMES)}',
      config.dataset.get('name'),
  )
  _require(
      config.model.get('name') in models_lib.MODEL_NAMES,
      'model.name',
      f'unknown model; known models: {", ".join(models_lib.MODEL_NAMES)}',
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

  training = config.training
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

  pruning_config = config.pruning
  _require(
      pruning_config.get('scope', 'local') in pruning.SCOPES,
      'pruning.scope',
      f'must be one of {pruning.SCOPES}',
      pruning_config.get('scope'),
  )
  _require(
      pruning_config.get('mode', 'iterative') in PRUNING_MODES,
      'pruning.mode',
      f'must be one of {PRUNING_MODES}',
      pruning_config.get('mode'),
  )
  levels = pruning_config.get('levels')
  _require(_is_int(levels) and levels >= 0, 'pruning.levels', 'must be a non-negative integer', levels)
  target = pruning_config.get('target_density')
  if target is not None:
    _require(
        isinstance(target, (int, float)) and 0.0 < target <= 1.0,
        'pruning.target_density',
        'must be in (0, 1] (a fraction of weights remaining), or None',
        target,
    )
  if pruning_config.get('fraction') is None:
    _require(
        target is not None and levels >= 1,
        'pruning.fraction',
        'set pruning.fraction, or pruning.target_density with pruning.levels >= 1',
        None,
    )
  else:
    _check_fraction('pruning.fraction', pruning_config.fraction)
  layer_fractions = pruning_config.get('layer_fractions') or {}
  for layer, value in dict(layer_fractions).items():
    _check_fraction(f'pruning.layer_fractions.{layer}', value)
  minimum = pruning_config.get('min_weights_per_layer', 0)
  _require(
      _is_int(minimum) and minimum >= 0, 'pruning.min_weights_per_layer', 'must be a non-negative integer', minimum
  )
  _require(
      minimum == 0 or pruning_config.get('scope', 'local') == 'local',
      'pruning.min_weights_per_layer',
      'applies to local pruning only (pruning.scope="local")',
      minimum,
  )
  rewind = pruning_config.get('rewind_step', 0)
  _require(_is_int(rewind) and rewind >= 0, 'pruning.rewind_step', 'must be a non-negative integer', rewind)
  snip_batches = pruning_config.get('snip_batches', 1)
  _require(
      _is_int(snip_batches) and snip_batches >= 1, 'pruning.snip_batches', 'must be a positive integer', snip_batches
  )
  turnaround = pruning_config.get('turnaround_step', 0) or 0
  _require(
      _is_int(turnaround) and turnaround >= 0,
      'pruning.turnaround_step',
      'must be a non-negative integer (0: prune from the end of training)',
      turnaround,
  )
  _require(
      turnaround == 0 or turnaround > rewind,
      'pruning.turnaround_step',
      f'must come after the rewind step (pruning.rewind_step={rewind})',
      turnaround,
  )
  if num_steps:
    _require(
        rewind < num_steps,
        'pruning.rewind_step',
        f'must be before the end of training (training.num_steps={num_steps})',
        rewind,
    )

  for name in config.get('branches', ()):
    _require(
        name in branches_lib.REGISTRY,
        'branches',  # (branches registered since import count too)
        f'unknown branch {name!r}; known branches: {", ".join(branches_lib.REGISTRY)}',
        tuple(config.branches),
    )
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
  _require(
      isinstance(config.dataset.get('streaming', False), bool),
      'dataset.streaming',
      'must be True or False',
      config.dataset.get('streaming'),
  )
  _check_epoch_twins(config)
  check_checkpointing(config)


def _layer_list(layers: Sequence[str], limit: int = 12) -> str:
  shown = ', '.join(list(layers)[:limit])
  return shown + (f', ... ({len(layers)} in all)' if len(layers) > limit else '')


def check_layer_selectors(
    pruning_config: ml_collections.ConfigDict, layers: Sequence[str], layer_sizes: Mapping[str, int]
) -> None:
  """Every `pruning.excluded_layers` entry must select a layer of the model (`layers`: the module
  paths of all its parameters) and every `pruning.layer_fractions` key a prunable one (`layer_sizes`);
  and a run that prunes needs prunable weights."""
  _require(
      sum(layer_sizes.values()) > 0 or not pruning_config.get('levels', 0),
      'pruning.levels',
      'there is nothing to prune: pruning.prunable_parameters and pruning.excluded_layers leave no ' 'prunable weight',
      pruning_config.get('levels'),
  )
  for selector in pruning_config.get('excluded_layers', ()) or ():
    _require(
        any(masks_lib.selects_layer(selector, layer) for layer in layers),
        'pruning.excluded_layers',
        f'{selector!r} names no layer of the model (layers: {_layer_list(layers)})',
        tuple(pruning_config.excluded_layers),
    )
  for selector in dict(pruning_config.get('layer_fractions') or {}):
    _require(
        any(masks_lib.selects_layer(selector, layer) for layer in layer_sizes),
        f'pruning.layer_fractions.{selector}',
        'names no prunable layer of the model (prunable layers: ' f'{_layer_list(list(layer_sizes))})',
        pruning_config.layer_fractions[selector],
    )


def check_against_data(
    config: ml_collections.ConfigDict,
    num_train: int,
    layer_sizes: Mapping[str, int],
    layers: Sequence[str] | None = None,
) -> None:
  """Checks that need the dataset size and the model's prunable layer sizes (still before training),
  on a config whose epochs are resolved to steps (`resolve_epochs`). With `layers` (the module paths
  of every parameter), the layer selectors are checked as well (`check_layer_selectors`)."""
  training, pruning_config = config.training, config.pruning
  if layers is not None:
    check_layer_selectors(pruning_config, layers, layer_sizes)
  _require(
      training.batch_size <= num_train,
      'training.batch_size',
      f'is larger than the training set ({num_train} examples)',
      training.batch_size,
  )
  steps = total_steps(training, num_train)
  rewind = pruning_config.get('rewind_step', 0)
  _require_point(rewind < steps, config, 'pruning', 'rewind_step', f'is past the end of training ({steps} steps)')
  turnaround = pruning_config.get('turnaround_step', 0) or 0
  _require_point(
      turnaround <= steps, config, 'pruning', 'turnaround_step', f'is past the end of training ({steps} steps)'
  )
  _require_point(
      turnaround == 0 or turnaround > rewind,
      config,
      'pruning',
      'turnaround_step',
      f'must come after the rewind step (pruning.rewind_step={rewind})',
  )
  warmup = training.get('warmup_steps', 0) or 0
  _require_point(warmup <= steps, config, 'training', 'warmup_steps', f'is longer than training ({steps} steps)')
  _require(steps > 0, 'training.num_epochs', 'gives no training steps', training.get('num_epochs'))
  for boundary in training.get('decay_boundaries', ()) or ():
    _require(
        _is_int(boundary) and 0 < boundary < steps,
        'training.decay_boundaries',
        f'each boundary must be a step inside training (1..{steps - 1})',
        tuple(training.decay_boundaries),
    )
  target = pruning_config.get('target_density')
  if target is None or pruning_config.get('mode', 'iterative') != 'iterative':
    return
  fraction = fraction_per_level(config)
  counts = pruning.planned_counts(
      layer_sizes,
      fraction,
      pruning_config.levels,
      pruning_config.get('scope', 'local'),
      dict(pruning_config.get('layer_fractions') or {}),
      pruning_config.get('min_weights_per_layer', 0),
  )
  reached = counts[-1] / counts[0]
  _require(
      reached <= target * (1 + DENSITY_TOLERANCE),
      'pruning.target_density',
      f'is unreachable: {pruning_config.levels} levels pruning {fraction:.3g} per level keep at least '
      f'{reached:.4g} of the weights; raise pruning.levels or pruning.fraction',
      target,
  )


class WorkdirError(ConfigError):
  """The workdir cannot hold the run (a file, not writable)."""


# Fields that never change a recorded number of the (level, branch, trial) runs already in a workdir,
# so a re-run may change them freely: where checkpoints go and how often, what is printed, how many
# trials there are (trial t's seeds depend only on `seed` and t), and where the dataset files are read
# from. `pruning.levels` and `pruning.target_density` only say where to stop while `pruning.fraction`
# is set (and unchanged); they are exempt then. Every other field (also `training.eval_every`, which
# sets the recorded curve, and `training.steps_per_dispatch`, `training.eval_batch_size` and
# `parallel.num_devices`, which change the last bits of the floating-point results) must match.
RESULT_NEUTRAL_FIELDS = ('checkpointing', 'report', 'trials', 'dataset.data_dir')
STOPPING_FIELDS = ('pruning.levels', 'pruning.target_density')
_ABSENT = '(absent)'


def config_to_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as plain JSON values (tuples become lists; anything else unusual becomes its repr)."""
  return json.loads(json.dumps(config.to_dict(), sort_keys=True, default=repr))


def _flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  fields = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, Mapping) and value:
      fields.update(_flatten(value, f'{name}.'))
    else:
      fields[name] = value
  return fields


def _neutral(field: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
  if any(field == name or field.startswith(f'{name}.') for name in RESULT_NEUTRAL_FIELDS):
    return True
  return (
      field in STOPPING_FIELDS
      and old.get('pruning.fraction') is not None
      and old.get('pruning.fraction') == new.get('pruning.fraction')
  )


def config_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> tuple[list[str], list[str]]:
  """Compares two configs given as JSON dicts (see `config_to_json`).

  Returns (differences that change results, other differences), each as 'field: old -> new' lines.
  A field missing from `old` whose new value is its default in `defaults` (a field added to the schema
  after `old` was written, at the value that keeps the old behaviour) is no difference; nor is a
  'resolved.*' value (derived from the config, the devices and the data) that `old` did not record.
  """
  old_fields, new_fields = _flatten(old), _flatten(new)
  default_fields = _flatten(defaults) if defaults is not None else {}
  changing, neutral = [], []
  for field in sorted(set(old_fields) | set(new_fields)):
    old_value, new_value = old_fields.get(field, _ABSENT), new_fields.get(field, _ABSENT)
    if old_value == new_value:
      continue
    if field not in old_fields and field in default_fields and default_fields[field] == new_value:
      continue
    if field.startswith('resolved.') and (field not in old_fields or field not in new_fields):
      continue
    line = (
        f'{field}: {json.dumps(old_value) if old_value is not _ABSENT else _ABSENT} -> '
        f'{json.dumps(new_value) if new_value is not _ABSENT else _ABSENT}'
    )
    (neutral if _neutral(field, old_fields, new_fields) else changing).append(line)
  return changing, neutral


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

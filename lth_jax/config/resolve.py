"""The one place a ConfigDict becomes typed values: `resolve(config, num_devices, num_train)` fills every
field the config leaves out from the schema, resolves the global batch and every length given in
epochs to steps, decides the pruning fraction per level, and returns a frozen `RunSpec`. The dataset
and model sections need no dataset size: `data_spec` and `model_spec` resolve them alone."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import ml_collections

from lth_jax import masks as masks_lib
from lth_jax import structured
from lth_jax.config import data_checks
from lth_jax.config import errors
from lth_jax.config import lengths
from lth_jax.config import schema
from lth_jax.config import spec as spec_lib
from lth_jax.config.checks import FREE_FIELDS


def complete(config: ml_collections.ConfigDict | Mapping[str, Any]) -> ml_collections.ConfigDict:
  """The schema's full config with `config`'s values over it: a field `config` leaves out (an older
  workdir's config.json, a hand-made partial config) gets its one default from `schema.base_config`."""
  full = schema.base_config()
  _overlay(full, config, '')
  return full


def _overlay(target: ml_collections.ConfigDict, source: Mapping[str, Any], prefix: str) -> None:
  """Writes `source`'s values into `target`, section by section; free fields (layer names) are replaced whole."""
  for key, value in source.items():
    name = prefix + key
    if (
        isinstance(value, (Mapping, ml_collections.ConfigDict))
        and name not in FREE_FIELDS
        and isinstance(target.get(key), ml_collections.ConfigDict)
    ):
      _overlay(target[key], value, name + '.')
    else:
      with target.unlocked():
        target[key] = value


def data_spec(config: ml_collections.ConfigDict | Mapping[str, Any]) -> spec_lib.DataSpec:
  """The dataset section of `config` (a whole config, or just its `dataset` section as a mapping), the
  schema's defaults under it. Its values are not checked here: the dataset builders check them."""
  return spec_lib.DataSpec(**_section(config, 'dataset', spec_lib.DataSpec))


def model_spec(config: ml_collections.ConfigDict | Mapping[str, Any]) -> spec_lib.ModelSpec:
  """The model section of `config` (a whole config, or just its `model` section as a mapping), the
  schema's defaults under it."""
  fields = _section(config, 'model', spec_lib.ModelSpec)
  arguments = fields['arguments']
  fields['arguments'] = arguments.to_dict() if isinstance(arguments, ml_collections.ConfigDict) else dict(arguments)
  return spec_lib.ModelSpec(**fields)


def task_spec(config: ml_collections.ConfigDict | Mapping[str, Any]) -> spec_lib.TaskSpec:
  """The task section of a whole config, the schema's defaults under it."""
  fields = _section(config, 'task', spec_lib.TaskSpec)
  return spec_lib.TaskSpec(loss=str(fields['loss']), metrics=tuple(fields['metrics']))


def training_spec(config: ml_collections.ConfigDict | Mapping[str, Any]) -> spec_lib.TrainingSpec:
  """The training section of `config` (a whole config, or just its `training` section as a mapping),
  the schema's defaults under it, its lengths in steps as given (`resolve` converts epochs first)."""
  fields = _section(config, 'training', spec_lib.TrainingSpec)
  return spec_lib.TrainingSpec(**{**fields, 'decay_boundaries': tuple(fields['decay_boundaries'])})


def _section(config: ml_collections.ConfigDict | Mapping[str, Any], name: str, spec_type: type) -> dict[str, Any]:
  """The fields of `spec_type` in section `name` of a whole config (or of the section itself), over the
  schema's defaults."""
  given = config[name] if name in config else config
  values = {**schema.base_config()[name].to_dict(), **dict(given)}
  return {field.name: values[field.name] for field in dataclasses.fields(spec_type)}


def pruning_plan(config: ml_collections.ConfigDict) -> spec_lib.PruningPlan:
  """The pruning section of a whole config whose points are given in steps (`resolve` converts epochs)."""
  config = complete(config)
  pruning = config.pruning
  return spec_lib.PruningPlan(
      mode=pruning.mode,
      scope=pruning.scope,
      fraction=data_checks.fraction_per_level(config),
      layer_fractions=dict(pruning.layer_fractions or {}),
      levels=int(pruning.levels),
      target_density=pruning.target_density,
      min_weights_per_layer=int(pruning.min_weights_per_layer),
      rewind_step=int(pruning.rewind_step),
      turnaround_step=int(pruning.turnaround_step or 0),
      turnaround=str(pruning.turnaround),
      early_bird_threshold=float(pruning.early_bird_threshold),
      early_bird_window=int(pruning.early_bird_window),
      prunable_parameters=tuple(pruning.prunable_parameters),
      prunable_patterns=tuple(pruning.prunable_patterns),
      excluded_layers=tuple(pruning.excluded_layers),
      snip_batches=int(pruning.snip_batches),
      at_init_scope=str(pruning.at_init_scope),
      synflow_rounds=int(pruning.synflow_rounds),
      criterion=str(pruning.criterion),
      structure=str(pruning.structure),
  )


def parallel_spec(config: ml_collections.ConfigDict) -> spec_lib.ParallelSpec:
  """The parallel section of a whole config."""
  return spec_lib.ParallelSpec(**_section(config, 'parallel', spec_lib.ParallelSpec))


def resolve(
    config: ml_collections.ConfigDict,
    num_devices: int,
    num_train: int,
    param_shapes: Any = None,
    prunable_rule: masks_lib.PrunableRule | None = None,
) -> spec_lib.RunSpec:
  """`config` (already checked by `check_config`) as a `RunSpec` for a run on `num_devices` devices
  over a training set of `num_train` examples: defaults filled in, `training.batch_size` the global
  batch, every length in steps (steps_per_epoch = num_train // batch), the pruning fraction per level
  decided. With the model's `param_shapes`, the checks that need the model run too (layer selectors
  that name real layers, points inside training, a reachable target density). A ConfigError names a
  field these make impossible. `prunable_rule`: a rule given from Python (`PruningPlan.prunable_rule`)."""
  full = lengths.resolve_epochs(lengths.resolve_batch_size(complete(config), num_devices), num_train)
  spec = _run_spec(full)
  if prunable_rule is None and any(pattern.startswith('python:') for pattern in spec.pruning.prunable_patterns):
    raise errors.ConfigError(
        f'pruning.prunable_patterns={spec.pruning.prunable_patterns}: this rule was passed from Python; pass it '
        'again, lth_jax.run(..., prunable=rule)'
    )
  if prunable_rule is not None:
    spec = dataclasses.replace(spec, pruning=dataclasses.replace(spec.pruning, prunable_rule=prunable_rule))
  if param_shapes is not None:
    data_checks.check_excluded_layers(full.pruning, masks_lib.layer_paths(param_shapes))  # before it is used
    prunable = spec.pruning.prunable(param_shapes)
    if spec.pruning.prunable_rule is not None or spec.pruning.prunable_patterns:
      try:
        masks_lib.check_prunable(param_shapes, prunable, spec.pruning.rule_name)
      except ValueError as error:
        raise errors.ConfigError(str(error)) from None
    data_checks.check_against_data(
        full, num_train, masks_lib.layer_sizes(param_shapes, prunable), masks_lib.layer_paths(param_shapes)
    )
    pattern = structured.parse(spec.pruning.structure)
    if pattern is not None:
      try:
        leaves = structured.structured_leaves(prunable, spec.pruning.layer_fractions)
        structured.check_divisible(param_shapes, leaves, pattern[1])
      except ValueError as error:
        raise errors.ConfigError(f'pruning.structure={spec.pruning.structure!r}: {error}') from None
  return spec


def _run_spec(full: ml_collections.ConfigDict) -> spec_lib.RunSpec:
  """A complete config, its lengths in steps, as a RunSpec."""
  return spec_lib.RunSpec(
      seed=int(full.seed),
      trials=int(full.trials),
      branches=tuple(full.branches),
      dataset=data_spec(full),
      model=model_spec(full),
      training=training_spec(full),
      pruning=pruning_plan(full),
      task=task_spec(full),
      parallel=parallel_spec(full),
      transfer=spec_lib.TransferSpec(**_section(full, 'transfer', spec_lib.TransferSpec)),
      report=spec_lib.ReportSpec(**_section(full, 'report', spec_lib.ReportSpec)),
      checkpointing=spec_lib.CheckpointingSpec(**_section(full, 'checkpointing', spec_lib.CheckpointingSpec)),
  )

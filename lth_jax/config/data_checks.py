"""Checks of a config that need the dataset size and the model's layers, still before any training:
layer selectors that name real layers, points in training inside it, a reachable target density."""

from __future__ import annotations

from typing import Mapping, Sequence

import ml_collections

from lth_jax import masks as masks_lib
from lth_jax import pruning
from lth_jax.config.errors import is_int as _is_int
from lth_jax.config.errors import require as _require
from lth_jax.config.lengths import require_point as _require_point
from lth_jax.config.lengths import total_steps

PRUNING_MODES = pruning.MODES  # iterative | one_shot
# Rounding to whole weights per layer and level leaves densities slightly off the geometric schedule.
DENSITY_TOLERANCE = 0.01


def fraction_per_level(config: ml_collections.ConfigDict) -> float:
  """The default fraction pruned per level: pruning.fraction, or derived from target_density."""
  pruning_config = config.pruning
  if pruning_config.get('fraction') is not None:
    return float(pruning_config.fraction)
  return pruning.per_level_fraction(pruning_config.target_density, pruning_config.levels)


def _layer_list(layers: Sequence[str], limit: int = 12) -> str:
  shown = ', '.join(list(layers)[:limit])
  return shown + (f', ... ({len(layers)} in all)' if len(layers) > limit else '')


def check_excluded_layers(pruning_config: ml_collections.ConfigDict, layers: Sequence[str]) -> None:
  """Every `pruning.excluded_layers` entry must select a layer of the model (`layers`: the module paths
  of all its parameters)."""
  for selector in pruning_config.get('excluded_layers', ()) or ():
    _require(
        any(masks_lib.selects_layer(selector, layer) for layer in layers),
        'pruning.excluded_layers',
        f'{selector!r} names no layer of the model (layers: {_layer_list(layers)})',
        tuple(pruning_config.excluded_layers),
    )


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
  check_excluded_layers(pruning_config, layers)
  for selector in dict(pruning_config.get('layer_fractions') or {}):
    _require(
        any(masks_lib.selects_layer(selector, layer) for layer in layer_sizes),
        f'pruning.layer_fractions.{selector}',
        'names no prunable layer of the model (prunable layers: '
        f'{_layer_list(list(layer_sizes))})'
        + (
            "; the default {'output': 0.1} is for a final layer named 'output': name yours so, or set "
            'pruning.layer_fractions = {}'
            if selector == 'output'
            else ''
        ),
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
  _check_points_in_training(config, total_steps(training, num_train))
  _check_target_reachable(config, layer_sizes)


def _check_points_in_training(config: ml_collections.ConfigDict, steps: int) -> None:
  """Rewind, turnaround, warmup and decay boundaries fall inside the `steps` of training, and there are some."""
  training, pruning_config = config.training, config.pruning
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
  if pruning_config.get('turnaround', 'step') == 'early_bird':
    _check_early_bird_points(config, steps)
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


def _check_target_reachable(config: ml_collections.ConfigDict, layer_sizes: Mapping[str, int]) -> None:
  """Iterative pruning's levels and fractions reach `pruning.target_density` (when set) on these layers."""
  pruning_config = config.pruning
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


def _check_early_bird_points(config: ml_collections.ConfigDict, steps: int) -> None:
  """Early-bird turnaround compares the masks of consecutive evaluations: a ticket run (from the rewind
  step to the end) has at least early_bird_window + 1 of them."""
  training, pruning_config = config.training, config.pruning
  rewind, eval_every = pruning_config.get('rewind_step', 0), training.get('eval_every', 0)
  window = pruning_config.get('early_bird_window', 5)
  evaluations = 1 + (len(range(rewind - rewind % eval_every + eval_every, steps, eval_every)) if eval_every else 0)
  _require(
      evaluations >= window + 1,
      'training.eval_every',
      f'gives {evaluations} evaluation(s) from the rewind step ({rewind}) to the end ({steps} steps); '
      f"pruning.turnaround='early_bird' with pruning.early_bird_window={window} compares the masks of "
      f'{window + 1} consecutive evaluations: set training.eval_every to at most {max(1, (steps - rewind) // (window + 1))}',
      eval_every,
  )

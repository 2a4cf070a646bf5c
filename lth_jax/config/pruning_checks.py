"""Static checks of a config's `pruning` section and its `branches` (names, ranges and types), run by
`lth_jax.config.checks.check_config` before any data is read, with errors that name the field."""

from __future__ import annotations

from typing import Any

import ml_collections

from lth_jax import branches as branches_lib
from lth_jax import init_pruning
from lth_jax import pruning
from lth_jax import structured
from lth_jax.config.data_checks import PRUNING_MODES
from lth_jax.config.errors import ConfigError
from lth_jax.config.errors import is_int as _is_int
from lth_jax.config.errors import is_number as _is_number
from lth_jax.config.errors import require as _require


def check_pruning(config: ml_collections.ConfigDict, num_steps: int) -> None:
  """The `pruning` section (its points inside `num_steps` when that is set) and the branches."""
  _check_amount(config.pruning)
  _check_steps(config.pruning, num_steps)
  _check_at_init(config.pruning)
  _check_early_bird(config.pruning)
  _check_branches(config)
  _check_structure(config)


def _check_fraction(field: str, value: Any) -> None:
  _require(
      isinstance(value, (int, float)) and 0.0 < value < 1.0,
      field,
      'a prune fraction must be strictly between 0 and 1',
      value,
  )


def _check_amount(pruning_config: ml_collections.ConfigDict) -> None:
  """How much the `pruning` section prunes: scope, mode, criterion, levels, target density, fractions, minimum."""
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
  criterion = pruning_config.get('criterion', 'magnitude')
  _require(  # (criteria registered since import count too)
      isinstance(criterion, str) and criterion in pruning.CRITERIA,
      'pruning.criterion',
      f'unknown pruning criterion; known criteria: {", ".join(pruning.CRITERIA)} (add one with lth_jax.pruning.register)',
      criterion,
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


def _check_steps(pruning_config: ml_collections.ConfigDict, num_steps: int) -> None:
  """When the `pruning` section resets and prunes (inside `num_steps` when that is set), and SNIP's batches."""
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


def _check_branches(config: ml_collections.ConfigDict) -> None:
  """Every name in `branches` is a registered branch."""
  for name in config.get('branches', ()):
    _require(
        name in branches_lib.REGISTRY,
        'branches',  # (branches registered since import count too)
        f'unknown branch {name!r}; known branches: {", ".join(branches_lib.REGISTRY)}',
        tuple(config.branches),
    )


def _check_at_init(pruning_config: ml_collections.ConfigDict) -> None:
  """How the pruning-at-initialization branches size their masks, and SynFlow's rounds."""
  scope = pruning_config.get('at_init_scope', 'global')
  _require(
      scope in init_pruning.SCOPES,
      'pruning.at_init_scope',
      f'must be one of {init_pruning.SCOPES} (one pool as large as the ticket, or its count in every layer)',
      scope,
  )
  rounds = pruning_config.get('synflow_rounds', 100)
  _require(
      _is_int(rounds) and rounds >= 1, 'pruning.synflow_rounds', 'must be a positive integer (1: one shot)', rounds
  )


TURNAROUNDS = ('step', 'early_bird')


def _check_early_bird(pruning_config: ml_collections.ConfigDict) -> None:
  """The turnaround rule, and early-bird turnaround's threshold and window (its evaluation points are
  checked once the lengths are steps: `data_checks`)."""
  turnaround = pruning_config.get('turnaround', 'step')
  _require(
      turnaround in TURNAROUNDS,
      'pruning.turnaround',
      f"must be one of {TURNAROUNDS} ('step': at pruning.turnaround_step; 'early_bird': when the mask settles)",
      turnaround,
  )
  threshold = pruning_config.get('early_bird_threshold', 0.1)
  _require(
      _is_number(threshold) and 0.0 < threshold <= 1.0,
      'pruning.early_bird_threshold',
      'must be in (0, 1] (a normalized Hamming distance between masks)',
      threshold,
  )
  window = pruning_config.get('early_bird_window', 5)
  _require(_is_int(window) and window >= 1, 'pruning.early_bird_window', 'must be a positive integer', window)
  if turnaround == 'early_bird':
    for field in ('turnaround_step', 'turnaround_epoch'):
      _require(
          not pruning_config.get(field, 0),
          f'pruning.{field}',
          "is a fixed turnaround point: set it to 0 with pruning.turnaround='early_bird' (which finds its own)",
          pruning_config.get(field),
      )


def _check_structure(config: ml_collections.ConfigDict) -> None:
  """An N:M structure: its form, no target density (its layers stop at N/M), and controls that hold the
  pattern (the built-in ones that choose masks by their own scores, pruning at init, would break it)."""
  structure = config.pruning.get('structure', structured.UNSTRUCTURED)
  try:
    pattern = structured.parse(structure)
  except ValueError as error:
    raise ConfigError(f'pruning.structure={structure!r}: {error}') from None
  if pattern is None:
    return
  _require(
      config.pruning.get('target_density') is None,
      'pruning.target_density',
      f'an N:M structure keeps {pattern[0]}/{pattern[1]} of its layers from level 1 on; set no target density '
      f'with pruning.structure={structure!r}',
      config.pruning.get('target_density'),
  )
  for name in config.get('branches', ()):
    _require(
        name not in branches_lib.UNSTRUCTURED_BRANCHES,
        'branches',
        f'{name!r} chooses a mask by its own scores, which does not hold the {structure} pattern; with '
        f'pruning.structure={structure!r} the built-in controls are: {", ".join(branches_lib.N_M_CONTROLS)}',
        tuple(config.branches),
    )

"""The pruning fields of a config as plain values, and the mask each level prunes to."""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from lth_jax.config import data_checks
from lth_jax import masks as masks_lib
from lth_jax import pruning


@dataclasses.dataclass(frozen=True)
class PruningPlan:
  """The pruning fields of a config as plain values."""

  scope: str
  fraction: float
  layer_fractions: dict[str, float]
  levels: int
  mode: str
  target_density: float | None
  min_weights_per_layer: int
  rewind_step: int
  turnaround_step: int  # prune from the weights at this step (0: at the end of training)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'PruningPlan':
    """Reads config.pruning (already validated)."""
    pruning_config = config.pruning
    return cls(
        scope=pruning_config.get('scope', 'local'),
        fraction=data_checks.fraction_per_level(config),
        layer_fractions=dict(pruning_config.get('layer_fractions') or {}),
        levels=pruning_config.levels,
        mode=pruning_config.get('mode', 'iterative'),
        target_density=pruning_config.get('target_density'),
        min_weights_per_layer=pruning_config.get('min_weights_per_layer', 0),
        rewind_step=pruning_config.get('rewind_step', 0),
        turnaround_step=pruning_config.get('turnaround_step', 0) or 0,
    )

  def pruning_weights(self, snapshots: dict[int, tuple[Any, Any]], final_params: Any) -> Any:
    """The weights a run's mask is pruned from: its snapshot at the turnaround step, or its final weights."""
    if self.turnaround_step:
      return snapshots[self.turnaround_step][0]
    return final_params

  def next_mask(self, level: int, ticket_params: Any, keep_mask: Any, dense_params: Any, prunable: Any) -> Any:
    """The winning-ticket mask of `level` (>= 1)."""
    if self.mode == 'one_shot':
      fraction, layer_fractions = pruning.one_shot_fractions(self.fraction, self.layer_fractions, level)
      return pruning.prune(
          pruning.magnitude_scores(dense_params),
          masks_lib.ones_like(keep_mask),
          prunable,
          fraction,
          self.scope,
          layer_fractions,
          self.min_weights_per_layer,
      )
    return pruning.prune(
        pruning.magnitude_scores(ticket_params),
        keep_mask,
        prunable,
        self.fraction,
        self.scope,
        self.layer_fractions,
        self.min_weights_per_layer,
    )

  def reached_target(self, density: float) -> bool:
    """Whether the target density (if any) is reached."""
    return self.target_density is not None and density <= self.target_density * (1 + data_checks.DENSITY_TOLERANCE)

"""A run's config resolved into frozen, typed values: every default filled in from the schema, every
length in steps, the global batch decided, the pruning fraction per level worked out. Everything below
the config layer reads these values, never a ConfigDict; `lth_jax.config.resolve` builds them."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from lth_jax import masks as masks_lib
from lth_jax.config.data_checks import DENSITY_TOLERANCE


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """The `dataset` section: which dataset, where its files are, and how much of it."""

  name: str
  streaming: bool
  data_dir: str | None
  seed: int
  num_train: int | None
  num_test: int | None
  train_range: tuple[float, float]
  test_range: tuple[float, float]
  test_fraction: float
  train_split: str  # tfds:NAME datasets: the training split, the test split, the input and target features
  test_split: str
  input_key: str
  target_key: str


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """The `model` section: the architecture by name, its widths, dtype and convolution."""

  name: str
  hidden_sizes: tuple[int, ...]
  hidden_size: int
  dense_sizes: tuple[int, ...]
  dtype: str
  conv_kernel_gradient: str
  arguments: dict[str, Any] = dataclasses.field(default_factory=dict)  # of an imported module class


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """The `task` section: the loss and metrics by name or import path ('' and (): the dataset's)."""

  loss: str
  metrics: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TrainingSpec:
  """The `training` section with every length in steps and `batch_size` the global batch."""

  optimizer: str
  learning_rate: float
  momentum: float
  weight_decay: float
  weight_decay_batch_norm: bool
  schedule: str
  warmup_steps: int
  decay_boundaries: tuple[int, ...]
  decay_factor: float
  batch_size: int
  num_steps: int
  eval_every: int
  eval_batch_size: int
  steps_per_dispatch: int


@dataclasses.dataclass(frozen=True)
class PruningPlan:
  """The `pruning` section with points in steps and the fraction pruned per level decided (plain values:
  `pruning.next_mask` prunes a level's mask by them, scored by the criterion named here)."""

  mode: str
  scope: str
  fraction: float  # of the remaining weights per level (from pruning.fraction or the target density)
  layer_fractions: dict[str, float]
  levels: int
  target_density: float | None
  min_weights_per_layer: int
  rewind_step: int
  turnaround_step: int  # prune from the weights at this step (0: at the end of training)
  turnaround: str  # 'step' (at turnaround_step) | 'early_bird' (when the mask settles)
  early_bird_threshold: float
  early_bird_window: int
  prunable_parameters: tuple[str, ...]
  excluded_layers: tuple[str, ...]
  snip_batches: int
  at_init_scope: str  # how the pruning-at-init branches size their masks (`lth_jax.init_pruning.SCOPES`)
  synflow_rounds: int
  criterion: str  # what ranks the weights a level prunes: a name registered in lth_jax.pruning
  structure: str  # 'unstructured' | 'N:M' (`lth_jax.structured`)
  prunable_patterns: tuple[str, ...] = ()
  # A rule given from Python (`lth_jax.run(..., prunable=rule)`): rule(path, leaf) -> bool. It decides
  # instead of the patterns and the names.
  prunable_rule: Callable[[str, Any], bool] | None = None

  @property
  def rule_name(self) -> str:
    """Where the prunable rule comes from, as an error names it."""
    if self.prunable_rule is not None:
      return f'the prunable rule {getattr(self.prunable_rule, "__qualname__", repr(self.prunable_rule))}'
    if self.prunable_patterns:
      return f'pruning.prunable_patterns={self.prunable_patterns}'
    return f'pruning.prunable_parameters={self.prunable_parameters}'

  def prunable(self, params: Any) -> Any:
    """The prunable-leaf tree of `params` (booleans) under these fields."""
    rule = self.prunable_rule
    if rule is None and self.prunable_patterns:
      rule = masks_lib.PatternRule(self.prunable_patterns)
    return masks_lib.prunable_tree(params, self.prunable_parameters, self.excluded_layers, rule)

  @property
  def keeps_turnaround_weights(self) -> bool:
    """Whether a level keeps the weights it is pruned from beside its final weights (early turnaround)."""
    return bool(self.turnaround_step) or self.turnaround == 'early_bird'

  def pruning_weights(self, snapshots: dict[int, tuple[Any, Any]], final_params: Any) -> Any:
    """The weights a run's mask is pruned from: its snapshot at the turnaround step, or its final weights."""
    if self.turnaround_step:
      return snapshots[self.turnaround_step][0]
    return final_params

  def reached_target(self, density: float) -> bool:
    """Whether the target density (if any) is reached."""
    return self.target_density is not None and density <= self.target_density * (1 + DENSITY_TOLERANCE)


@dataclasses.dataclass(frozen=True)
class ParallelSpec:
  """The `parallel` section: devices used, runs per program (0: chosen by memory), batch per device."""

  num_devices: int
  members_per_program: int
  batch_per_device: int


@dataclasses.dataclass(frozen=True)
class TransferSpec:
  """The `transfer` section: an exported ticket to train under this config (None: off)."""

  ticket: str | None
  start: str
  output_layer: str


@dataclasses.dataclass(frozen=True)
class ReportSpec:
  """The `report` section: what a run prints."""

  print_surviving_weights: bool
  progress_every_seconds: float


@dataclasses.dataclass(frozen=True)
class CheckpointingSpec:
  """The `checkpointing` section: periodic checkpoints and TensorBoard files (never change results)."""

  every_steps: int
  max_to_keep: int
  tensorboard: bool


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """A whole run's config, resolved."""

  seed: int
  trials: int
  branches: tuple[str, ...]  # the control branches, as the config lists them
  dataset: DataSpec
  model: ModelSpec
  training: TrainingSpec
  pruning: PruningPlan
  task: TaskSpec
  parallel: ParallelSpec
  transfer: TransferSpec
  report: ReportSpec
  checkpointing: CheckpointingSpec

  @property
  def branch_names(self) -> list[str]:
    """Every branch a pruned level trains: the ticket first, then the controls."""
    return ['ticket', *[name for name in self.branches if name != 'ticket']]

  def resolved_fields(self) -> dict[str, dict[str, Any]]:
    """The values worked out before a run (global batch, lengths in steps), as config.json records them
    under 'resolved'."""
    return {
        section: {field: getattr(getattr(self, section), field) for field in fields}
        for section, fields in RESOLVED_FIELDS.items()
    }


# Config values worked out before a run (global batch, lengths in steps), recorded in config.json.
RESOLVED_FIELDS = {
    'training': ('batch_size', 'num_steps', 'warmup_steps', 'eval_every', 'decay_boundaries'),
    'pruning': ('rewind_step', 'turnaround_step'),
}

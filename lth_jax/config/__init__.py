"""The config of a run: every field with its one default (`base_config`), the checks that refuse a bad
value before any compute is spent, `resolve`, which turns a checked ConfigDict once into frozen typed
values (`RunSpec`: defaults filled, the global batch, every length in steps, the pruning plan), and
whether a workdir's recorded config gives the same results as a new one. Nothing below this layer
reads a ConfigDict."""

from lth_jax.config.checks import check_config
from lth_jax.config.checks import check_known_fields
from lth_jax.config.compatibility import config_differences
from lth_jax.config.compatibility import config_to_json
from lth_jax.config.compatibility import WorkdirError
from lth_jax.config.data_checks import check_against_data
from lth_jax.config.errors import ConfigError
from lth_jax.config.lengths import resolve_batch_size
from lth_jax.config.lengths import resolve_epochs
from lth_jax.config.lengths import total_steps
from lth_jax.config.resolve import complete
from lth_jax.config.resolve import data_spec
from lth_jax.config.resolve import model_spec
from lth_jax.config.resolve import parallel_spec
from lth_jax.config.resolve import pruning_plan
from lth_jax.config.resolve import resolve
from lth_jax.config.resolve import task_spec
from lth_jax.config.resolve import training_spec
from lth_jax.config.schema import base_config
from lth_jax.config.schema import frankle_carbin_conv
from lth_jax.config.schema import frankle_carbin_sgd_cifar
from lth_jax.config.spec import CheckpointingSpec
from lth_jax.config.spec import DataSpec
from lth_jax.config.spec import ModelSpec
from lth_jax.config.spec import ParallelSpec
from lth_jax.config.spec import PruningPlan
from lth_jax.config.spec import ReportSpec
from lth_jax.config.spec import RunSpec
from lth_jax.config.spec import TaskSpec
from lth_jax.config.spec import TrainingSpec
from lth_jax.config.spec import TransferSpec

__all__ = [
    'CheckpointingSpec',
    'ConfigError',
    'DataSpec',
    'ModelSpec',
    'ParallelSpec',
    'PruningPlan',
    'ReportSpec',
    'RunSpec',
    'TaskSpec',
    'TrainingSpec',
    'TransferSpec',
    'WorkdirError',
    'base_config',
    'check_against_data',
    'check_config',
    'check_known_fields',
    'complete',
    'config_differences',
    'config_to_json',
    'data_spec',
    'frankle_carbin_conv',
    'frankle_carbin_sgd_cifar',
    'model_spec',
    'parallel_spec',
    'pruning_plan',
    'resolve',
    'resolve_batch_size',
    'resolve_epochs',
    'task_spec',
    'total_steps',
    'training_spec',
]

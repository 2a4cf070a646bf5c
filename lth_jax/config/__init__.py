"""The config of a run: every field with its one default (`base_config`), the checks that refuse a bad
value before any compute is spent, the epochs-to-steps and batch resolution, and whether a workdir's
recorded config gives the same results as a new one."""

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
from lth_jax.config.schema import base_config
from lth_jax.config.schema import frankle_carbin_conv
from lth_jax.config.schema import frankle_carbin_sgd_cifar

__all__ = [
    'ConfigError',
    'WorkdirError',
    'base_config',
    'check_against_data',
    'check_config',
    'check_known_fields',
    'config_differences',
    'config_to_json',
    'frankle_carbin_conv',
    'frankle_carbin_sgd_cifar',
    'resolve_batch_size',
    'resolve_epochs',
    'total_steps',
]

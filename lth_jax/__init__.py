"""lth_jax: lottery-ticket search in JAX/Flax.

    import lth_jax
    from lth_jax import config_schema
    config = config_schema.base_config()   # every field with its default; edit what you need
    results = lth_jax.run(config, '/tmp/lth_default')
    print(results.sparsity_table())

The pieces are usable on their own: `lth_jax.masks` (mask pytrees), `lth_jax.pruning` (magnitude,
SNIP, global/local, permuted masks), `lth_jax.optim.keep_pruned_at_zero` (masked optax transform),
`lth_jax.train` (TrainState, train_step, Trainer), `lth_jax.tickets` (load, export and transfer winning tickets), `lth_jax.data` (datasets by name, the streaming
pipeline), `lth_jax.feeds` (in-memory or streamed batches for the Trainer), `lth_jax.stability` (lockstep population, stability
metrics, linear mode connectivity), `lth_jax.report` (tables and plots).
"""

import importlib
from typing import Any

from lth_jax import (
    branches,
    checkpoints,
    cohorts,
    config_schema,
    data,
    feeds,
    masks,
    models,
    optim,
    parallel,
    pruning,
    results,
    stability,
    tickets,
    train,
    validation,
)
from lth_jax.lottery import LotteryResults, run
from lth_jax.validation import ConfigError

__all__ = [
    'ConfigError',
    'LotteryResults',
    'branches',
    'checkpoints',
    'cohorts',
    'config_schema',
    'data',
    'feeds',
    'masks',
    'models',
    'optim',
    'parallel',
    'pruning',
    'report',
    'results',
    'run',
    'stability',
    'tickets',
    'train',
    'validation',
]
__version__ = '0.1.0'


def __getattr__(name: str) -> Any:
  """`lth_jax.report` on first use: imported eagerly, it would be imported twice by
  `python -m lth_jax.report` (and runpy warns about that)."""
  if name == 'report':
    return importlib.import_module('lth_jax.report')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')

"""lth_jax: lottery-ticket search in JAX/Flax.

    import lth_jax
    config = lth_jax.config.base_config()   # every field with its default; edit what you need
    results = lth_jax.run(config, '/tmp/lth_default')
    print(results.sparsity_table())
    sweep = lth_jax.sweep(config, {'pruning.rewind_step': (0, 100, 500)}, '/tmp/lth_sweep')

The library is layered; each layer imports only the ones before it:

    data, models                  datasets by name or from arrays; flax modules by name or import path
    masks, pruning, optim,        the tensor core: mask pytrees, pruning rules, the masked optax
    tasks, branches, results      transform, losses and metrics, the control branches, the results file
    config                        every field and its default, the checks, workdir compatibility
    training                      TrainState, compiled programs, the Trainer, feeds, mesh, checkpoints
    tickets                       a ticket out of a workdir, exported, transferred
    search                        the lottery runner: the level loop, trials, populations, the workdir
    analysis                      stability to pruning, linear mode connectivity, mask overlap
    reporting                     summaries, plots, stability tables
    report, main                  the commands `python -m lth_jax.report` and `python -m lth_jax.main`
"""

import importlib
from typing import TYPE_CHECKING, Any

from lth_jax.version import __version__

if TYPE_CHECKING:  # what the names below are, for type checkers; at run time they load on first use
  from lth_jax import analysis
  from lth_jax import branches
  from lth_jax import config
  from lth_jax import data
  from lth_jax import masks
  from lth_jax import models
  from lth_jax import optim
  from lth_jax import pruning
  from lth_jax import report
  from lth_jax import reporting
  from lth_jax import results
  from lth_jax import search
  from lth_jax import tasks
  from lth_jax import tickets
  from lth_jax import training
  from lth_jax.config import ConfigError
  from lth_jax.search import LotteryResults
  from lth_jax.search import run
  from lth_jax.search import sweep
  from lth_jax.search import SweepResults

__all__ = [
    'ConfigError',
    '__version__',
    'LotteryResults',
    'SweepResults',
    'analysis',
    'branches',
    'config',
    'data',
    'masks',
    'models',
    'optim',
    'pruning',
    'report',
    'reporting',
    'results',
    'run',
    'search',
    'sweep',
    'tasks',
    'tickets',
    'training',
]

# The names the package hands on from its submodules, by the module that defines them.
_DEFINED_IN = {
    'ConfigError': 'lth_jax.config',
    'LotteryResults': 'lth_jax.search',
    'SweepResults': 'lth_jax.search',
    'run': 'lth_jax.search',
    'sweep': 'lth_jax.search',
}


def __getattr__(name: str) -> Any:
  """Each submodule (`lth_jax.tickets`, `lth_jax.report`, ...) and each name above on first use.
  `import lth_jax` imports none of them, so `python -m lth_jax.tickets` (or `.report`, `.main`) runs
  its module once, as __main__, instead of after an import of it by the package (which runpy warns
  about)."""
  if name in _DEFINED_IN:
    value = getattr(importlib.import_module(_DEFINED_IN[name]), name)
    globals()[name] = value
    return value
  if name in __all__:
    return importlib.import_module(f'lth_jax.{name}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(__all__))

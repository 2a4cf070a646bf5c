"""lth_jax: lottery-ticket search in JAX/Flax.

    import lth_jax
    from configs import default          # or build an ml_collections.ConfigDict yourself
    results = lth_jax.run(default.get_config(), '/tmp/lth_default')
    print(results.table())

The pieces are usable on their own: `lth_jax.masks` (mask pytrees), `lth_jax.pruning` (magnitude,
global/local, permuted masks), `lth_jax.optim.keep_pruned_at_zero` (masked optax transform),
`lth_jax.train` (TrainState, train_step, Trainer).
"""

from lth_jax import branches, checkpoints, masks, models, optim, parallel, pruning, results, train, validation
from lth_jax.lottery import LotteryResults, run
from lth_jax.validation import ConfigError

__all__ = ['ConfigError', 'LotteryResults', 'branches', 'checkpoints', 'masks', 'models', 'optim', 'parallel',
           'pruning', 'results', 'run', 'train', 'validation']
__version__ = '0.1.0'

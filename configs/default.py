"""The embedded default: LeNet-300-100 on MNIST-1D (generated locally, no download).

Twelve levels of iterative magnitude pruning (20% per level, output layer at half rate, as Frankle &
Carbin do for LeNet), winning tickets against random reinitialization. A few minutes on 2 CPU cores.

    python -m lth_jax.main --config=configs/default.py --workdir=/tmp/lth_default
"""

import ml_collections

from lth_jax.config import schema


def get_config() -> ml_collections.ConfigDict:
  """The default lottery config."""
  config = schema.base_config()
  config.dataset.name = 'mnist1d'
  config.model.name = 'lenet'
  config.model.hidden_sizes = (300, 100)
  config.training.optimizer = 'adam'
  config.training.learning_rate = 2e-3
  config.training.batch_size = 64
  config.training.num_steps = 3000
  config.training.eval_every = 500
  config.pruning.fraction = 0.2
  config.pruning.layer_fractions = {'output': 0.1}
  config.pruning.levels = 12
  config.pruning.rewind_step = 0
  config.branches = ('reinit',)
  return config

"""The blog's sum-of-two-inputs experiment.

A two-layer linear network without bias (2 -> 200 -> 1) learns y = x1 + x2 on pairs from [-1, 1] and
is tested on pairs from [1, 2] (outside the training range) by RMSE. Iterative magnitude pruning of
25% per level, local (per layer), until 2 weights are left in each layer; 10 epochs per level; late
resetting to the weights after the first iteration. The controls are the blog's: the same mask with
a fresh initialization ('reinit') and a mask permuted within each layer with a fresh initialization
('permuted_reinit'). The run prints the surviving weights of the last level, as the blog does.

    python -m lth_jax.main --config=configs/sum_of_two.py --workdir=/tmp/lth_sum_of_two
"""

import ml_collections

from lth_jax.config import schema


def get_config() -> ml_collections.ConfigDict:
  """The sum-of-two config."""
  config = schema.base_config()
  config.dataset.name = 'sum_of_two'
  config.dataset.num_train = 2000
  config.dataset.num_test = 1000
  config.dataset.train_range = (-1.0, 1.0)
  config.dataset.test_range = (1.0, 2.0)

  config.model.name = 'linear'
  config.model.hidden_size = 200

  config.training.optimizer = 'adam'
  config.training.learning_rate = 1e-2
  config.training.batch_size = 32
  config.training.num_steps = 0
  config.training.num_epochs = 10
  config.training.eval_every = 0

  config.pruning.fraction = 0.25
  config.pruning.layer_fractions = {}
  config.pruning.levels = 40
  config.pruning.min_weights_per_layer = 2
  config.pruning.rewind_step = 1

  config.branches = ('reinit', 'permuted_reinit')
  config.report.print_surviving_weights = True
  return config

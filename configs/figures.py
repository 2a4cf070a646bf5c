"""The one setting of the README's quick figures: LeNet-300-100 on MNIST-1D (generated locally).

SGD with momentum 0.9 at learning rate 0.1 with cosine decay and weight decay 5e-3 (the papers' optimizer
for their deep networks; with this much weight decay the distance between two full networks is largest
at their initializations and shrinks in training, so the two normalizations of the stability figures
differ), batch 64, 1000 steps evaluated every 250; six levels
of iterative magnitude pruning of 40% (local), down to 4.7% of the weights; 3 trials; the random
reinitialization control. Late-reset and turnaround points are given by the figure commands
(`experiments.regenerate_figures`), reset points within the first 5% of training as in the paper.

    python -m experiments.regenerate_figures      # every quick figure from this setting
"""

import ml_collections

from lth_jax.config import schema


def get_config() -> ml_collections.ConfigDict:
  """The quick figures' config."""
  config = schema.base_config()
  config.dataset.name = 'mnist1d'
  config.model.name = 'lenet'
  config.model.hidden_sizes = (300, 100)
  config.training.optimizer = 'momentum'
  config.training.momentum = 0.9
  config.training.learning_rate = 0.1
  config.training.weight_decay = 5e-3
  config.training.schedule = 'cosine'
  config.training.batch_size = 64
  config.training.num_steps = 1000
  config.training.eval_every = 250
  config.pruning.fraction = 0.4
  config.pruning.layer_fractions = {}
  config.pruning.levels = 6
  config.pruning.rewind_step = 0
  config.trials = 3
  config.branches = ('reinit',)
  return config

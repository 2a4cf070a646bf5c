"""The embedded default: LeNet-style MLP on MNIST-1D (generated locally, no download).

Five levels of iterative magnitude pruning (20% per level, output layer at half rate, as Frankle &
Carbin do for LeNet), winning tickets against random reinitialization. A few minutes on 2 CPU cores.

    python -m lth_jax.main --config=configs/default.py --workdir=/tmp/lth_default
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """The default lottery config."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.trials = 1

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'mnist1d'
  config.dataset.data_dir = None
  config.dataset.seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.name = 'lenet'
  config.model.hidden_sizes = (300, 100)

  config.training = ml_collections.ConfigDict()
  config.training.optimizer = 'adam'
  config.training.learning_rate = 2e-3
  config.training.momentum = 0.9
  config.training.weight_decay = 0.0
  config.training.schedule = 'constant'
  config.training.warmup_steps = 0
  config.training.decay_boundaries = ()
  config.training.decay_factor = 0.1
  config.training.batch_size = 64
  config.training.num_steps = 3000
  config.training.num_epochs = 0
  config.training.eval_every = 500
  config.training.eval_batch_size = 1000
  config.training.steps_per_dispatch = 64

  config.pruning = ml_collections.ConfigDict()
  config.pruning.mode = 'iterative'
  config.pruning.scope = 'local'
  config.pruning.fraction = 0.2
  config.pruning.layer_fractions = {'output': 0.1}
  config.pruning.levels = 8
  config.pruning.target_density = None
  config.pruning.min_weights_per_layer = 0
  config.pruning.rewind_step = 0
  config.pruning.prunable_parameters = ('kernel',)
  config.pruning.excluded_layers = ()

  config.branches = ('reinit',)

  config.parallel = ml_collections.ConfigDict()
  config.parallel.num_devices = 0

  config.report = ml_collections.ConfigDict()
  config.report.print_surviving_weights = False
  return config

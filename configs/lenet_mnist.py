"""LeNet-300-100 on MNIST with Frankle & Carbin's (2019) hyperparameters (their Figure 2).

Adam 1.2e-3, batch 60, 50K iterations, Gaussian Glorot initialization; iterative magnitude pruning
of 20% per level for the hidden layers and 10% for the output layer (local), reset to iteration 0.
Frankle & Carbin hold out 5K training images for validation; here the full 60K train split is used
and test accuracy is reported.

Prepare MNIST once:  tfds build mnist --file_format=array_record --data_dir=DIR
    python -m lth_jax.main --config=configs/lenet_mnist.py --workdir=... --config.dataset.data_dir=DIR
Batch 60 does not divide over 8 devices: on 8 cores the runs of a level train as a population laid
out so that each run's batch divides (e.g. 4 trials x 2 branches: one run per core, 8 x 1); a run
alone takes 2 x 4 with one padding member. With --config.parallel.members_per_program=1 (one run at a
time over every core) set --config.parallel.num_devices=6 or --config.training.batch_size=64.
"""

import ml_collections

from lth_jax.config import schema


def get_config() -> ml_collections.ConfigDict:
  """The LeNet/MNIST config."""
  config = schema.base_config()
  config.dataset.name = 'mnist'
  config.model.name = 'lenet'
  config.model.hidden_sizes = (300, 100)
  config.training.optimizer = 'adam'
  config.training.learning_rate = 1.2e-3
  config.training.batch_size = 60
  config.training.num_steps = 50_000
  config.training.eval_every = 1000
  config.pruning.scope = 'local'
  config.pruning.fraction = 0.2
  config.pruning.layer_fractions = {'output': 0.1}
  config.pruning.levels = 20
  config.pruning.rewind_step = 0
  config.branches = ('reinit',)
  return config

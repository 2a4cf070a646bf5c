"""VGG-19 (batch norm) on CIFAR-10 as in "The Lottery Ticket Hypothesis at Scale" (Frankle et al.):
Frankle & Carbin's standard hyperparameters — SGD with momentum 0.9, learning rate 0.1 dropped 10x at
iterations 56K and 84K, batch 64, weight decay 1e-4, 112K iterations — iterative global magnitude
pruning of 20% of the convolution weights per level (Frankle & Carbin prune the convolutional layers
globally; the output layer is not pruned), and late resetting to iteration 1,000 ("1.4 epochs").

    --config=configs/vgg19_cifar10.py            late resetting to iteration 1000 (the paper's fix)
    --config=configs/vgg19_cifar10.py:warmup     Frankle & Carbin's alternative: reset to iteration 0
                                                 with linear warmup over the first 10K iterations

Prepare CIFAR-10 once:  tfds build cifar10 --file_format=array_record --data_dir=DIR
    python -m lth_jax.main --config=configs/vgg19_cifar10.py --workdir=... --config.dataset.data_dir=DIR
Batch 64 divides over 1, 2, 4 or 8 devices.
"""

import ml_collections

from lth_jax.config import schema


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  """The VGG-19/CIFAR-10 config; `variant` 'warmup' resets to 0 with learning-rate warmup."""
  config = schema.frankle_carbin_sgd_cifar(
      'vgg19', batch_size=64, num_steps=112_000, decay_boundaries=(56_000, 84_000), rewind_step=1000, eval_every=4000
  )
  if variant == 'warmup':
    config.pruning.rewind_step = 0
    config.training.warmup_steps = 10_000
  elif variant:
    raise ValueError(f'unknown variant {variant!r} of vgg19_cifar10.py (known: warmup)')
  return config

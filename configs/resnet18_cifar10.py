"""ResNet-18 on CIFAR-10 as in "The Lottery Ticket Hypothesis at Scale" (Frankle et al.).

The network is Frankle & Carbin's "Resnet-18", which has "75x fewer parameters" than VGG-19: He et
al.'s CIFAR ResNet with three stages of three basic blocks of 16, 32 and 64 filters (271K weights),
model 'resnet20' here ('resnet18' is the 11M-weight ImageNet-width network with a CIFAR stem).
Frankle & Carbin's standard hyperparameters: SGD with momentum 0.9, learning rate 0.1 dropped 10x at
iterations 20K and 25K, batch 128, weight decay 1e-4, 30K iterations; iterative global magnitude
pruning of 20% of the convolution weights per level (Frankle & Carbin prune the convolutional layers
globally; the output layer is not pruned), and late resetting to iteration 500 ("1.4 epochs").

    --config=configs/resnet18_cifar10.py          late resetting to iteration 500
    --config=configs/resnet18_cifar10.py:warmup   reset to iteration 0 with linear warmup over 20K
                                                  iterations to a peak of 0.03 (Frankle & Carbin)

Prepare CIFAR-10 once:  tfds build cifar10 --file_format=array_record --data_dir=DIR
    python -m lth_jax.main --config=configs/resnet18_cifar10.py --workdir=... --config.dataset.data_dir=DIR
"""

import ml_collections

from lth_jax.config import schema


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  """The ResNet-18/CIFAR-10 config; `variant` 'warmup' resets to 0 with learning-rate warmup."""
  config = schema.frankle_carbin_sgd_cifar(
      'resnet20', batch_size=128, num_steps=30_000, decay_boundaries=(20_000, 25_000), rewind_step=500, eval_every=2000
  )
  if variant == 'warmup':
    config.pruning.rewind_step = 0
    config.training.learning_rate = 0.03
    config.training.warmup_steps = 20_000
  elif variant:
    raise ValueError(f'unknown variant {variant!r} of resnet18_cifar10.py (known: warmup)')
  return config

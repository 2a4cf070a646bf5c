"""Conv-6 on CIFAR-10 (Frankle & Carbin 2019, Figure 2): Adam 3e-4, batch 60, 30_000 iterations,
convolutions pruned 15% per level, fully connected 20%, output 10%.

Prepare CIFAR-10 once:  tfds build cifar10 --file_format=array_record --data_dir=DIR
    python -m lth_jax.main --config=configs/conv6_cifar10.py --workdir=... --config.dataset.data_dir=DIR
"""

import ml_collections

from lth_jax.config import schema


def get_config() -> ml_collections.ConfigDict:
  """The Conv-6/CIFAR-10 config."""
  return schema.frankle_carbin_conv('conv6', learning_rate=3e-4, num_steps=30_000, conv_rate=0.15, levels=20)

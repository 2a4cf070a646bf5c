"""Conv-2, Conv-4 and Conv-6: the VGG-like CIFAR-10 networks of Frankle & Carbin (2019).

Pairs of 3x3 convolutions (64, 128, 256 filters) each followed by 2x2 max pooling, then fully connected
layers of 256, 256 and the output layer.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
from jax import lax

from lth_jax.models.dense import glorot_normal

CONV_WIDTHS = {2: (64, 64), 4: (64, 64, 128, 128), 6: (64, 64, 128, 128, 256, 256)}


class ConvNet(nn.Module):
  """Conv-N: `conv_widths` 3x3 convolutions, max-pooled after every second one, then dense layers."""

  num_outputs: int = 10
  conv_widths: Sequence[int] = CONV_WIDTHS[2]
  dense_sizes: Sequence[int] = (256, 256)
  conv_general_dilated: Callable[..., jax.Array] = lax.conv_general_dilated  # see models.convolution

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> jax.Array:
    del train
    hidden = inputs
    for index, width in enumerate(self.conv_widths):
      hidden = nn.relu(
          nn.Conv(
              width,
              (3, 3),
              padding='SAME',
              kernel_init=glorot_normal,
              conv_general_dilated=self.conv_general_dilated,
              name=f'conv_{index}',
          )(hidden)
      )
      if index % 2 == 1:
        hidden = nn.max_pool(hidden, (2, 2), strides=(2, 2))
    hidden = hidden.reshape((hidden.shape[0], -1))
    for index, size in enumerate(self.dense_sizes):
      hidden = nn.relu(nn.Dense(size, kernel_init=glorot_normal, name=f'dense_{index}')(hidden))
    return nn.Dense(self.num_outputs, kernel_init=glorot_normal, name='output')(hidden)

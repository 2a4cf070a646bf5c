"""VGG-11/16/19 for CIFAR-10 with batch normalization (the variant of Liu et al. and "The Lottery
Ticket Hypothesis at Scale"): 3x3 convolutions with batch norm and ReLU, 2x2 max pooling between
stages, global average pooling, one dense output layer."""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

POOL = 'M'
VGG_PLANS: dict[int, tuple[Any, ...]] = {
    11: (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512),
    16: (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512),
    19: (64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL, 512, 512, 512, 512),
}


class VGG(nn.Module):
  """VGG-N for 32x32 inputs: `plan` lists conv widths and 'M' for max pooling."""

  num_outputs: int = 10
  plan: Sequence[Any] = VGG_PLANS[19]
  dtype: Any = jnp.float32
  conv_general_dilated: Callable[..., jax.Array] = lax.conv_general_dilated  # see models.convolution

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(
        nn.Conv,
        kernel_size=(3, 3),
        padding='SAME',
        use_bias=False,
        dtype=self.dtype,
        kernel_init=nn.initializers.kaiming_normal(),
        conv_general_dilated=self.conv_general_dilated,
    )
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    hidden = inputs.astype(self.dtype)
    conv_index = 0
    for entry in self.plan:
      if entry == POOL:
        hidden = nn.max_pool(hidden, (2, 2), strides=(2, 2))
        continue
      hidden = conv(entry, name=f'conv_{conv_index}')(hidden)
      hidden = nn.relu(norm(name=f'norm_{conv_index}')(hidden))
      conv_index += 1
    hidden = jnp.mean(hidden, axis=(1, 2))
    outputs = nn.Dense(self.num_outputs, dtype=self.dtype, name='output')(hidden)
    return outputs.astype(jnp.float32)

"""Fully connected models: the blog's two-layer linear network and LeNet-300-100."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Frankle & Carbin initialize with Gaussian Glorot initialization.
glorot_normal = nn.initializers.glorot_normal()


def uniform_fan_in(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): the default initialization of a PyTorch linear layer."""
  bound = 1.0 / jnp.sqrt(shape[0])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


class LinearNet(nn.Module):
  """Two linear layers without bias or nonlinearity: the sum-of-two-inputs toy (x -> hidden -> out)."""

  num_outputs: int = 1
  hidden_size: int = 200

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> jax.Array:
    del train
    hidden = nn.Dense(self.hidden_size, use_bias=False, kernel_init=uniform_fan_in, name='dense_0')(inputs)
    return nn.Dense(self.num_outputs, use_bias=False, kernel_init=uniform_fan_in, name='output')(hidden)


class LeNet(nn.Module):
  """LeNet-300-100: a ReLU multilayer perceptron (hidden sizes configurable) on flattened inputs."""

  num_outputs: int = 10
  hidden_sizes: Sequence[int] = (300, 100)

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> jax.Array:
    del train
    hidden = inputs.reshape((inputs.shape[0], -1))
    for index, size in enumerate(self.hidden_sizes):
      hidden = nn.relu(nn.Dense(size, kernel_init=glorot_normal, name=f'dense_{index}')(hidden))
    return nn.Dense(self.num_outputs, kernel_init=glorot_normal, name='output')(hidden)

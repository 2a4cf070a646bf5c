"""Models registered by name: `build(config.model, num_outputs)` returns a flax module."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import ml_collections

from lth_jax.models.conv import CONV_WIDTHS, ConvNet
from lth_jax.models.dense import LeNet, LinearNet

ModelBuilder = Callable[[ml_collections.ConfigDict, int], nn.Module]


def _linear(config: ml_collections.ConfigDict, num_outputs: int) -> nn.Module:
  return LinearNet(num_outputs=num_outputs, hidden_size=config.get('hidden_size', 200))


def _lenet(config: ml_collections.ConfigDict, num_outputs: int) -> nn.Module:
  return LeNet(num_outputs=num_outputs, hidden_sizes=tuple(config.get('hidden_sizes', (300, 100))))


def _conv(depth: int) -> ModelBuilder:
  def build_conv(config: ml_collections.ConfigDict, num_outputs: int) -> nn.Module:
    return ConvNet(num_outputs=num_outputs, conv_widths=CONV_WIDTHS[depth],
                   dense_sizes=tuple(config.get('dense_sizes', (256, 256))))
  return build_conv


REGISTRY: dict[str, ModelBuilder] = {
    'linear': _linear,
    'lenet': _lenet,
    'conv2': _conv(2),
    'conv4': _conv(4),
    'conv6': _conv(6),
}
MODEL_NAMES = tuple(REGISTRY)


def register(name: str, builder: ModelBuilder) -> None:
  """Adds a model builder `builder(model_config, num_outputs) -> nn.Module` under `name`."""
  REGISTRY[name] = builder


def build(config: ml_collections.ConfigDict, num_outputs: int) -> nn.Module:
  """The flax module named by `config.name`, with `num_outputs` outputs."""
  if config.name not in REGISTRY:
    raise ValueError(f'model.name: unknown model {config.name!r}; known models: {", ".join(REGISTRY)}')
  return REGISTRY[config.name](config, num_outputs)

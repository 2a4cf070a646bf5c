"""Models by name: `build(model, num_outputs)` returns a flax module, where `model` is a resolved model
section (`lth_jax.config.ModelSpec`: name, widths, dtype, convolution, arguments). A name is one of the
registry's (`register` adds one) or an import path 'package.module:Name' of a flax module class, built
as `Name(**model.arguments)`, or of a builder function `builder(model, num_outputs) -> nn.Module`.
How a module is called (training mode, batch statistics, dropout) is in `lth_jax.models.calling`."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from lth_jax import importing
from lth_jax.importing import PYTHON_PREFIX
from lth_jax.models import convolution
from lth_jax.models.conv import CONV_WIDTHS
from lth_jax.models.conv import ConvNet
from lth_jax.models.dense import LeNet
from lth_jax.models.dense import LinearNet
from lth_jax.models.resnet import cifar_resnet
from lth_jax.models.resnet import resnet18_cifar
from lth_jax.models.resnet import resnet50
from lth_jax.models.vgg import VGG
from lth_jax.models.vgg import VGG_PLANS

ModelBuilder = Callable[[Any, int], nn.Module]


def _linear(config: Any, num_outputs: int) -> nn.Module:
  return LinearNet(num_outputs=num_outputs, hidden_size=config.hidden_size)


def _lenet(config: Any, num_outputs: int) -> nn.Module:
  return LeNet(num_outputs=num_outputs, hidden_sizes=tuple(config.hidden_sizes))


def _conv(depth: int) -> ModelBuilder:
  def build_conv(config: Any, num_outputs: int) -> nn.Module:
    return ConvNet(
        num_outputs=num_outputs,
        conv_widths=CONV_WIDTHS[depth],
        dense_sizes=tuple(config.dense_sizes),
        conv_general_dilated=conv_function(config),
    )

  return build_conv


DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def compute_dtype(config: Any):
  """The computation dtype of `config.dtype` ('float32' or 'bfloat16'; parameters stay float32)."""
  name = config.dtype
  if name not in DTYPES:
    raise ValueError(f'model.dtype must be one of {tuple(DTYPES)}, got {name!r}')
  return DTYPES[name]


def conv_function(config: Any) -> convolution.ConvFunction:
  """The convolution of `config.conv_kernel_gradient` ('auto', 'lax' or 'patches'; see
  `lth_jax.models.convolution`)."""
  return convolution.conv_general_dilated(config.conv_kernel_gradient)


def _vgg(depth: int) -> ModelBuilder:
  def build_vgg(config: Any, num_outputs: int) -> nn.Module:
    return VGG(
        num_outputs=num_outputs,
        plan=VGG_PLANS[depth],
        dtype=compute_dtype(config),
        conv_general_dilated=conv_function(config),
    )

  return build_vgg


def _cifar_resnet(depth: int) -> ModelBuilder:
  def build_resnet(config: Any, num_outputs: int) -> nn.Module:
    return cifar_resnet(depth, num_outputs, compute_dtype(config), conv_function(config))

  return build_resnet


REGISTRY: dict[str, ModelBuilder] = {
    'linear': _linear,
    'lenet': _lenet,
    'conv2': _conv(2),
    'conv4': _conv(4),
    'conv6': _conv(6),
    'vgg11': _vgg(11),
    'vgg16': _vgg(16),
    'vgg19': _vgg(19),
    'resnet20': _cifar_resnet(20),
    'resnet56': _cifar_resnet(56),
    'resnet18': lambda config, num_outputs: resnet18_cifar(num_outputs, compute_dtype(config), conv_function(config)),
    'resnet50': lambda config, num_outputs: resnet50(num_outputs, compute_dtype(config), conv_function(config)),
}
MODEL_NAMES = tuple(REGISTRY)


def register(name: str, builder: ModelBuilder) -> None:
  """Adds a model builder `builder(model, num_outputs) -> nn.Module` under `name` (`model`: the
  resolved model section)."""
  REGISTRY[name] = builder


def is_known_name(name: Any) -> bool:
  """Whether `name` can name a model: a registered name or an import path 'package.module:Name'."""
  return isinstance(name, str) and (name in REGISTRY or importing.is_import_path(name))


def build(config: Any, num_outputs: int) -> nn.Module:
  """The flax module named by `config.name` (a resolved model section, `lth_jax.config.ModelSpec`),
  with `num_outputs` outputs (an imported module class sets its own, in `model.arguments`)."""
  name = config.name
  if isinstance(name, str) and name.startswith(PYTHON_PREFIX):
    raise ValueError(
        f'model.name={name!r}: this module was passed from Python; pass it again, '
        'lth_jax.run(config, workdir, model=...)'
    )
  if importing.is_import_path(name):
    value = importing.import_object(name, 'model.name')
    arguments = dict(config.arguments)
    if isinstance(value, type) and issubclass(value, nn.Module):
      try:
        return value(**arguments)
      except TypeError as error:
        raise ValueError(f'model.arguments={arguments!r} do not fit {name}: {error}') from None
    if callable(value):
      module = value(config, num_outputs)
      if not isinstance(module, nn.Module):
        raise ValueError(f'model.name={name!r}: the builder returned {type(module).__name__}, not a flax module')
      return module
    raise ValueError(f'model.name={name!r} is neither a flax module class nor a builder function')
  if name not in REGISTRY:
    raise ValueError(
        f'model.name: unknown model {name!r}; known models: {", ".join(REGISTRY)}, '
        "or an import path 'package.module:Name'"
    )
  return REGISTRY[name](config, num_outputs)

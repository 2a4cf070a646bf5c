"""Residual networks: CIFAR ResNet-20/56 (He et al. 2016, 16-32-64 filters), ResNet-18 for CIFAR
(64-128-256-512 filters, 3x3 stem without max pooling) and ImageNet ResNet-50 v1.5 (stride on the
3x3 convolution of each bottleneck).

Frankle & Carbin's "Resnet-18" (271K weights, "75x fewer parameters" than VGG-19) is He et al.'s
CIFAR ResNet-20 here ('resnet20'); 'resnet18' is the 11M-weight ImageNet-width network with a CIFAR stem.
The CIFAR networks start every batch-norm scale at 1 (He et al.); ResNet-50 starts each block's last
one at 0, as its TPU reference does. Batch-norm statistics live in the 'batch_stats' collection and
are never pruned (only kernels are prunable by default)."""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

ModuleDef = Any


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a residual connection (projection when the shape changes)."""

  filters: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  last_norm_scale_init: Callable[..., jax.Array] = nn.initializers.ones

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    residual = inputs
    hidden = self.conv(self.filters, (3, 3), (self.strides, self.strides), name='conv_0')(inputs)
    hidden = nn.relu(self.norm(name='norm_0')(hidden))
    hidden = self.conv(self.filters, (3, 3), name='conv_1')(hidden)
    hidden = self.norm(name='norm_1', scale_init=self.last_norm_scale_init)(hidden)
    if residual.shape != hidden.shape:
      residual = self.conv(self.filters, (1, 1), (self.strides, self.strides), name='shortcut_conv')(residual)
      residual = self.norm(name='shortcut_norm')(residual)
    return nn.relu(residual + hidden)


class BottleneckBlock(nn.Module):
  """1x1 -> 3x3 (strided, v1.5) -> 1x1 convolutions with 4x expansion and a residual connection."""

  filters: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  last_norm_scale_init: Callable[..., jax.Array] = nn.initializers.ones

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    residual = inputs
    hidden = nn.relu(self.norm(name='norm_0')(self.conv(self.filters, (1, 1), name='conv_0')(inputs)))
    hidden = self.conv(self.filters, (3, 3), (self.strides, self.strides), name='conv_1')(hidden)
    hidden = nn.relu(self.norm(name='norm_1')(hidden))
    hidden = self.conv(self.filters * 4, (1, 1), name='conv_2')(hidden)
    hidden = self.norm(name='norm_2', scale_init=self.last_norm_scale_init)(hidden)
    if residual.shape != hidden.shape:
      residual = self.conv(self.filters * 4, (1, 1), (self.strides, self.strides), name='shortcut_conv')(residual)
      residual = self.norm(name='shortcut_norm')(residual)
    return nn.relu(residual + hidden)


class ResNet(nn.Module):
  """A ResNet: stem, stages of blocks (the first block of each later stage halves the resolution),
  global average pooling and a dense output layer named 'output' (the stem conv is 'stem_conv')."""

  stage_sizes: Sequence[int]
  stage_filters: Sequence[int]
  block: Callable[..., nn.Module]
  num_outputs: int = 10
  imagenet_stem: bool = False  # 7x7/2 convolution + 3x3/2 max pooling instead of one 3x3 convolution
  zero_init_residual: bool = False  # each block's last batch-norm scale starts at 0 (Goyal et al.)
  dtype: Any = jnp.float32
  conv_general_dilated: Callable[..., jax.Array] = lax.conv_general_dilated  # see models.convolution

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(
        nn.Conv,
        use_bias=False,
        padding='SAME',
        dtype=self.dtype,
        kernel_init=nn.initializers.kaiming_normal(),
        conv_general_dilated=self.conv_general_dilated,
    )
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    last_norm_scale_init = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
    hidden = inputs.astype(self.dtype)
    if self.imagenet_stem:
      hidden = conv(self.stage_filters[0], (7, 7), (2, 2), name='stem_conv')(hidden)
      hidden = nn.relu(norm(name='stem_norm')(hidden))
      hidden = nn.max_pool(hidden, (3, 3), strides=(2, 2), padding='SAME')
    else:
      hidden = conv(self.stage_filters[0], (3, 3), name='stem_conv')(hidden)
      hidden = nn.relu(norm(name='stem_norm')(hidden))
    for stage, (size, filters) in enumerate(zip(self.stage_sizes, self.stage_filters)):
      for index in range(size):
        strides = 2 if stage > 0 and index == 0 else 1
        hidden = self.block(
            filters=filters,
            strides=strides,
            conv=conv,
            norm=norm,
            last_norm_scale_init=last_norm_scale_init,
            name=f'stage_{stage}_block_{index}',
        )(hidden)
    hidden = jnp.mean(hidden, axis=(1, 2))
    outputs = nn.Dense(self.num_outputs, dtype=self.dtype, name='output')(hidden)
    return outputs.astype(jnp.float32)


def cifar_resnet(
    depth: int,
    num_outputs: int,
    dtype: Any = jnp.float32,
    conv_general_dilated: Callable[..., jax.Array] = lax.conv_general_dilated,
) -> ResNet:
  """ResNet-20, -32, -44, -56, -110 for CIFAR: depth = 6n + 2, stages of n basic blocks (16, 32, 64)."""
  if (depth - 2) % 6:
    raise ValueError(f'model.name: a CIFAR ResNet depth must be 6n + 2, got {depth}')
  blocks = (depth - 2) // 6
  return ResNet(
      stage_sizes=(blocks,) * 3,
      stage_filters=(16, 32, 64),
      block=BasicBlock,
      num_outputs=num_outputs,
      dtype=dtype,
      conv_general_dilated=conv_general_dilated,
  )


def resnet18_cifar(
    num_outputs: int,
    dtype: Any = jnp.float32,
    conv_general_dilated: Callable[..., jax.Array] = lax.conv_general_dilated,
) -> ResNet:
  """ResNet-18 for 32x32 inputs: 3x3 stem, stages of 2 basic blocks (64, 128, 256, 512)."""
  return ResNet(
      stage_sizes=(2, 2, 2, 2),
      stage_filters=(64, 128, 256, 512),
      block=BasicBlock,
      num_outputs=num_outputs,
      dtype=dtype,
      conv_general_dilated=conv_general_dilated,
  )


def resnet50(
    num_outputs: int,
    dtype: Any = jnp.float32,
    conv_general_dilated: Callable[..., jax.Array] = lax.conv_general_dilated,
) -> ResNet:
  """ImageNet ResNet-50 v1.5: 7x7 stem, bottleneck stages of 3, 4, 6, 3 blocks; the last batch norm of
  each block starts with scale 0, as in Google's TPU reference (Goyal et al. 2017)."""
  return ResNet(
      stage_sizes=(3, 4, 6, 3),
      stage_filters=(64, 128, 256, 512),
      block=BottleneckBlock,
      num_outputs=num_outputs,
      imagenet_stem=True,
      zero_init_residual=True,
      dtype=dtype,
      conv_general_dilated=conv_general_dilated,
  )

"""Tests for lth_jax.models.convolution: the patch-matmul kernel gradient equals XLA's, in every layout
the models use, and the models pick it by backend."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax import lax

from lth_jax import config as config_lib
from lth_jax import models
from lth_jax.models import conv as conv_lib
from lth_jax.models import convolution
from lth_jax.models import resnet
from lth_jax.training import steps

CHANNELS_LAST = ('NHWC', 'HWIO', 'NHWC')


def random_array(shape, seed, dtype=jnp.float32):
  """Standard normal values from numpy (jax.random would compile a program for every shape)."""
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def loss_of(conv, **conv_arguments):
  """A non-linear scalar function of a convolution's output, so every output gradient differs."""

  def loss(inputs, kernel):
    return jnp.sin(conv(inputs, kernel, dimension_numbers=CHANNELS_LAST, **conv_arguments)).sum()

  return loss


@pytest.mark.parametrize(
    'input_shape, kernel_size, strides, padding, rhs_dilation',
    [
        ((4, 9, 9, 3), (3, 3), (1, 1), 'SAME', (1, 1)),  # Conv-N, VGG
        ((4, 10, 10, 5), (3, 3), (2, 2), 'SAME', (1, 1)),  # strided ResNet convolutions
        ((2, 15, 15, 3), (7, 7), (2, 2), 'SAME', (1, 1)),  # ResNet-50's stem
        ((3, 8, 8, 6), (1, 1), (2, 2), 'SAME', (1, 1)),  # projection shortcuts
        ((3, 8, 8, 6), (3, 3), (1, 1), 'VALID', (1, 1)),
        ((3, 8, 9, 6), (3, 2), (1, 2), ((2, 1), (0, 3)), (2, 2)),  # explicit, uneven padding; kernel dilation
        ((3, 8, 9, 6), (3, 3), (1, 1), ((2, 1), (0, 3)), (2, 2)),  # the same at stride 1
        ((2, 7, 7, 3), (3, 3), (1, 1), ((3, 0), (1, 1)), (1, 1)),  # padding wider than the kernel
    ],
)
def test_values_and_gradients_match_lax(input_shape, kernel_size, strides, padding, rhs_dilation):
  inputs = random_array(input_shape, seed=0)
  kernel = random_array((*kernel_size, input_shape[-1], 7), seed=1)
  arguments = dict(window_strides=strides, padding=padding, rhs_dilation=rhs_dilation)
  expected = jax.jit(jax.value_and_grad(loss_of(lax.conv_general_dilated, **arguments), (0, 1)))(inputs, kernel)
  actual = jax.jit(jax.value_and_grad(loss_of(convolution.patch_gradient_conv, **arguments), (0, 1)))(inputs, kernel)
  chex.assert_trees_all_close(actual, expected, rtol=2e-5, atol=2e-5)


def test_patches_are_the_windows_under_each_output():
  inputs = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
  patches = convolution.input_patches(inputs, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), (4, 4))
  assert patches.shape == (2, 4, 4, 27)
  # Output (1, 2)'s window is input rows 0..2, columns 1..3, flattened as (row, column, channel).
  np.testing.assert_array_equal(patches[1, 1, 2], inputs[1, 0:3, 1:4].reshape(-1))
  # The top-left corner's window starts in the zero padding.
  np.testing.assert_array_equal(patches[0, 0, 0, : 3 * 3 + 3], np.zeros(12))


def test_unsupported_layouts_fall_back_to_lax():
  inputs = random_array((2, 6, 6, 4), seed=0)
  kernel = random_array((3, 3, 2, 4), seed=1)
  padding = ((1, 1), (1, 1))
  for arguments in (dict(feature_group_count=2), dict(feature_group_count=2, lhs_dilation=(2, 2))):
    expected = jax.jit(
        jax.grad(loss_of(lax.conv_general_dilated, window_strides=(1, 1), padding=padding, **arguments), (0, 1))
    )(inputs, kernel)
    actual = jax.jit(
        jax.grad(loss_of(convolution.patch_gradient_conv, window_strides=(1, 1), padding=padding, **arguments), (0, 1))
    )(inputs, kernel)
    chex.assert_trees_all_close(actual, expected, rtol=1e-6)


def test_bfloat16_gradients_keep_their_dtype():
  inputs = random_array((2, 6, 6, 3), seed=0, dtype=jnp.bfloat16)
  kernel = random_array((3, 3, 3, 5), seed=1, dtype=jnp.bfloat16)
  arguments = dict(window_strides=(1, 1), padding='SAME')
  actual = jax.jit(jax.grad(loss_of(convolution.patch_gradient_conv, **arguments), (0, 1)))(inputs, kernel)
  expected = jax.jit(jax.grad(loss_of(lax.conv_general_dilated, **arguments), (0, 1)))(inputs, kernel)
  chex.assert_trees_all_equal_dtypes(actual, (inputs, kernel))
  chex.assert_trees_all_close(
      jax.tree_util.tree_map(lambda leaf: leaf.astype(jnp.float32), actual),
      jax.tree_util.tree_map(lambda leaf: leaf.astype(jnp.float32), expected),
      rtol=0.05,
      atol=0.2,
  )


def test_vmapped_gradients_of_a_population_match_lax():
  inputs = random_array((3, 2, 6, 6, 4), seed=0)  # 3 members
  kernels = random_array((3, 3, 3, 4, 5), seed=1)
  arguments = dict(window_strides=(1, 1), padding='SAME')
  expected = jax.jit(jax.vmap(jax.grad(loss_of(lax.conv_general_dilated, **arguments), (0, 1))))(inputs, kernels)
  actual = jax.jit(jax.vmap(jax.grad(loss_of(convolution.patch_gradient_conv, **arguments), (0, 1))))(inputs, kernels)
  chex.assert_trees_all_close(actual, expected, rtol=2e-5, atol=2e-5)


def test_auto_picks_patches_on_cpu_only():
  assert convolution.conv_general_dilated('auto', backend='cpu') is convolution.patch_gradient_conv
  assert convolution.conv_general_dilated('auto', backend='gpu') is lax.conv_general_dilated
  assert convolution.conv_general_dilated('auto', backend='tpu') is lax.conv_general_dilated
  assert convolution.conv_general_dilated('lax', backend='cpu') is lax.conv_general_dilated
  assert convolution.conv_general_dilated('patches', backend='tpu') is convolution.patch_gradient_conv
  with pytest.raises(ValueError, match='model.conv_kernel_gradient must be one of'):
    convolution.conv_general_dilated('fft')


def model_gradients(build_model, input_shape):
  """Loss gradients of the models `build_model(conv_general_dilated)` gives, with patch and with lax kernel
  gradients, from the same parameters and batch."""
  inputs = random_array((4, *input_shape), seed=1)
  params, model_state = steps.split_variables(
      jax.jit(build_model(lax.conv_general_dilated).init)(jax.random.PRNGKey(0), inputs)
  )

  def gradients(conv):
    model = build_model(conv)

    def loss(params):
      outputs, _ = steps.apply_model(model, params, model_state, inputs, train=True)
      return jnp.mean(outputs**2)

    return jax.jit(jax.grad(loss))(params)

  return gradients(convolution.patch_gradient_conv), gradients(lax.conv_general_dilated)


def test_conv_net_trains_alike_with_either_kernel_gradient():
  patches, native = model_gradients(
      lambda conv: conv_lib.ConvNet(num_outputs=10, conv_widths=(8, 8), dense_sizes=(16,), conv_general_dilated=conv),
      (8, 8, 3),
  )
  chex.assert_trees_all_close(patches, native, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_resnet_trains_alike_with_either_kernel_gradient():
  """ResNet-8: strided 3x3 convolutions, 1x1 projection shortcuts and batch norm."""
  patches, native = model_gradients(lambda conv: resnet.cifar_resnet(8, 10, conv_general_dilated=conv), (8, 8, 3))
  chex.assert_trees_all_close(patches, native, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('name', ['conv4', 'vgg19', 'resnet18', 'resnet50'])
def test_registry_passes_the_configured_kernel_gradient(name):
  for kernel_gradient in convolution.KERNEL_GRADIENTS:
    model = models.build(
        config_lib.model_spec(ml_collections.ConfigDict({'name': name, 'conv_kernel_gradient': kernel_gradient})), 10
    )
    assert model.conv_general_dilated is convolution.conv_general_dilated(kernel_gradient)
  assert models.build(config_lib.model_spec(ml_collections.ConfigDict({'name': name})), 10).conv_general_dilated is (
      convolution.conv_general_dilated('auto')
  )

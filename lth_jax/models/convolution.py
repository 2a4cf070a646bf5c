"""Convolutions whose kernel gradient is one matrix product of input patches with output gradients.

XLA:CPU computes a convolution's kernel gradient 2-5x slower than the convolution itself (9% of the
matmul peak for Conv-4's 32x32x64->64 layer). Gathering the k x k input patches (one cheap copy) and
multiplying them with the output gradients runs the same arithmetic as a plain matmul, 3.4x faster on
that layer. The forward pass is `lax.conv_general_dilated`'s own; the input gradient of a stride-1
convolution is written as a plain convolution of the output gradient with the flipped kernel (XLA:CPU
runs its own input-gradient convolution 1.5x slower inside a compiled loop, its kernel gradient ~40x
slower; these run as fast in a loop as alone). The parameters, their layout and the results are those
of `flax.linen.Conv` (to float rounding).

`conv_general_dilated(kernel_gradient)` picks the implementation for a model: 'lax' (XLA's own),
'patches', or 'auto' (patches on CPU, where it pays; XLA's own on GPU and TPU, whose convolution
libraries compute kernel gradients well).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

KERNEL_GRADIENTS = ('auto', 'lax', 'patches')
ConvFunction = Callable[..., jax.Array]

# (batch, feature, spatial...) positions of NHWC inputs and outputs and of HWIO kernels.
_CHANNELS_LAST = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))


def resolve_kernel_gradient(kernel_gradient: str = 'auto', backend: str | None = None) -> str:
  """'lax' or 'patches': `kernel_gradient` with 'auto' decided by `backend` (default: JAX's)."""
  if kernel_gradient not in KERNEL_GRADIENTS:
    raise ValueError(f'model.conv_kernel_gradient must be one of {KERNEL_GRADIENTS}, got {kernel_gradient!r}')
  if kernel_gradient == 'auto':
    return 'patches' if (backend or jax.default_backend()) == 'cpu' else 'lax'
  return kernel_gradient


def conv_general_dilated(kernel_gradient: str = 'auto', backend: str | None = None) -> ConvFunction:
  """The `conv_general_dilated` function for flax's `nn.Conv` that computes kernel gradients the
  `kernel_gradient` way ('auto', 'lax' or 'patches'); 'auto' decides by `backend` (default: JAX's)."""
  if resolve_kernel_gradient(kernel_gradient, backend) == 'patches':
    return patch_gradient_conv
  return lax.conv_general_dilated


def patch_gradient_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
  """`lax.conv_general_dilated` (same arguments and result) with the kernel gradient computed as a
  matmul of input patches. Handles 2-D NHWC/HWIO convolutions with any strides, padding and kernel
  dilation; anything else (grouped or input-dilated convolutions, other layouts) is passed to
  `lax.conv_general_dilated` unchanged."""
  spatial_rank = lhs.ndim - 2
  lhs_dilation = tuple(lhs_dilation or (1,) * spatial_rank)
  rhs_dilation = tuple(rhs_dilation or (1,) * spatial_rank)
  native = functools.partial(
      lax.conv_general_dilated,
      lhs,
      rhs,
      window_strides,
      padding,
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count,
      precision=precision,
      preferred_element_type=preferred_element_type,
  )
  if (
      spatial_rank != 2
      or feature_group_count != 1
      or batch_group_count != 1
      or preferred_element_type is not None
      or any(dilation != 1 for dilation in lhs_dilation)
      or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != _CHANNELS_LAST
  ):
    return native()
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], _dilated_size(rhs.shape[:2], rhs_dilation), window_strides, padding)
  padding = tuple((int(low), int(high)) for low, high in padding)
  if any(low < 0 or high < 0 for low, high in padding):
    return native()
  return _conv(lhs, rhs, tuple(window_strides), padding, rhs_dilation, precision)


def _dilated_size(kernel_size: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
  return tuple((size - 1) * step + 1 for size, step in zip(kernel_size, dilation))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv(lhs, rhs, strides, padding, rhs_dilation, precision):
  return _lax_conv(lhs, rhs, strides, padding, rhs_dilation, precision)


def _lax_conv(lhs, rhs, strides, padding, rhs_dilation, precision):
  return lax.conv_general_dilated(
      lhs, rhs, strides, padding, rhs_dilation=rhs_dilation, dimension_numbers=_CHANNELS_LAST, precision=precision
  )


def _conv_forward(lhs, rhs, strides, padding, rhs_dilation, precision):
  return _lax_conv(lhs, rhs, strides, padding, rhs_dilation, precision), (lhs, rhs)


def _conv_backward(strides, padding, rhs_dilation, precision, residuals, output_gradient):
  lhs, rhs = residuals
  input_gradient = _input_gradient(lhs, rhs, strides, padding, rhs_dilation, precision, output_gradient)
  patches = input_patches(lhs, rhs.shape[:2], strides, padding, rhs_dilation, output_gradient.shape[1:3])
  kernel_gradient = jnp.matmul(
      patches.reshape(-1, patches.shape[-1]).T,
      output_gradient.reshape(-1, output_gradient.shape[-1]),
      precision=precision,
      preferred_element_type=jnp.float32,
  )
  return input_gradient, kernel_gradient.reshape(rhs.shape).astype(rhs.dtype)


_conv.defvjp(_conv_forward, _conv_backward)


def _input_gradient(lhs, rhs, strides, padding, rhs_dilation, precision, output_gradient):
  """The gradient with respect to `lhs`. For stride 1 it is written as a plain convolution of the output
  gradient with the flipped, transposed kernel: XLA:CPU runs that as fast as the forward pass, also inside a
  compiled loop, where its own input-gradient convolution is 1.5x slower. Otherwise, XLA's own."""
  dilated = _dilated_size(rhs.shape[:2], rhs_dilation)
  transposed_padding = tuple((size - 1 - low, size - 1 - high) for size, (low, high) in zip(dilated, padding))
  if any(stride != 1 for stride in strides) or any(low < 0 or high < 0 for low, high in transposed_padding):
    _, input_vjp = jax.vjp(lambda lhs: _lax_conv(lhs, rhs, strides, padding, rhs_dilation, precision), lhs)
    return input_vjp(output_gradient)[0]
  flipped = jnp.flip(rhs, (0, 1)).swapaxes(2, 3)
  return _lax_conv(output_gradient, flipped, strides, transposed_padding, rhs_dilation, precision)


def input_patches(
    inputs: jax.Array,
    kernel_size: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[tuple[int, int]],
    rhs_dilation: Sequence[int],
    output_size: Sequence[int],
) -> jax.Array:
  """For NHWC `inputs`, the (N, out_h, out_w, kh * kw * C) array of the input window under every
  output position, ordered like a flattened HWIO kernel's (kh, kw, C) rows."""
  padded = jnp.pad(inputs, ((0, 0), *padding, (0, 0)))
  slices = []
  for row in range(kernel_size[0]):
    for column in range(kernel_size[1]):
      start = (0, row * rhs_dilation[0], column * rhs_dilation[1], 0)
      limit = (
          inputs.shape[0],
          start[1] + (output_size[0] - 1) * strides[0] + 1,
          start[2] + (output_size[1] - 1) * strides[1] + 1,
          inputs.shape[3],
      )
      slices.append(lax.slice(padded, start, limit, (1, strides[0], strides[1], 1)))
  return slices[0] if len(slices) == 1 else jnp.concatenate(slices, axis=-1)

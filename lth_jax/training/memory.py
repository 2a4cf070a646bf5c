"""How many training runs fit on a device at once: rough per-member memory estimates.

A population program holds, on each device, its share of the members' state (weights, optimizer
state, mask: replicated along the 'data' axis) and the activations of each member's slice of the
batch. The estimates here are deliberately simple (shapes only, no compilation) and err on the large
side; they choose `parallel.members_per_program` when it is 0 (auto) and flag an explicit value that
would clearly not fit.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import jax
import numpy as np

from lth_jax.models import calling

# Share of a device's memory a program may plan for (the rest: XLA's buffers, fragmentation).
USABLE_FRACTION = 0.5
# Activations are kept for the backward pass and met again by their gradients.
ACTIVATION_FACTOR = 3


def tree_bytes(tree: Any) -> int:
  """Bytes of every leaf of a tree of arrays or shape structs."""
  return int(sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree_util.tree_leaves(tree)))


@dataclasses.dataclass(frozen=True)
class MemberFootprint:
  """One member's memory: its state, and activations per training example."""

  state_bytes: int
  activation_bytes_per_example: int

  def device_bytes(self, members_on_device: int, examples_on_device: int) -> int:
    """What `members_on_device` members, each training on `examples_on_device` examples, take."""
    return members_on_device * (self.state_bytes + examples_on_device * self.activation_bytes_per_example)


def footprint(model: Any, example: jax.ShapeDtypeStruct, optimizer: Any) -> MemberFootprint:
  """Estimates a member's state (params, optimizer state, mask, model state) and activations from shapes
  (`example`: a batch of one input)."""
  variables = calling.variable_shapes(model, example)
  params = variables['params']
  optimizer_state = jax.eval_shape(optimizer.init, params)
  mask_bytes = sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))
  state = tree_bytes(variables) + tree_bytes(optimizer_state) + mask_bytes

  def intermediates(variables, x):
    _, captured = model.apply(
        variables, x, **calling.mode_arguments(model, False), capture_intermediates=True, mutable=['intermediates']
    )
    return captured

  activations = tree_bytes(jax.eval_shape(intermediates, variables, example)) + tree_bytes(example)
  return MemberFootprint(state_bytes=state, activation_bytes_per_example=ACTIVATION_FACTOR * activations)


def device_memory_bytes() -> int | None:
  """Memory of one local device: the accelerator's limit, or on a CPU the host's memory shared by
  its (simulated) devices; None when unknown."""
  device = jax.local_devices()[0]
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except  (not every backend implements it)
    stats = None
  if stats and stats.get('bytes_limit'):
    return int(stats['bytes_limit'])
  if device.platform == 'cpu':
    try:
      total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (ValueError, OSError, AttributeError):
      return None
    return int(total // max(1, jax.local_device_count()))
  return None


def format_bytes(count: float) -> str:
  """'1.5 GiB', '320 MiB'."""
  for unit, size in (('GiB', 2**30), ('MiB', 2**20), ('KiB', 2**10)):
    if count >= size:
      return f'{count / size:.3g} {unit}'
  return f'{int(count)} B'

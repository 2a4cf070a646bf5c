"""N:M structured sparsity: at most N of every M consecutive weights along a kernel's input dimension are
kept (2:4 is the pattern sparse tensor cores run fast), chosen by score among the survivors.

The input dimension is a kernel's second-to-last axis: (in, out) for a dense kernel, (height, width, in,
out) for a convolution. Pure functions of host (numpy) arrays, like `lth_jax.pruning`. The masked
training itself stays dense arithmetic (pruned weights are zeros in dense kernels); the pattern is what
hardware with N:M support would need to run the ticket sparsely.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import numpy as np

from lth_jax import masks as masks_lib

UNSTRUCTURED = 'unstructured'


def parse(structure: str) -> tuple[int, int] | None:
  """(N, M) of 'N:M' (0 < N < M), None for 'unstructured'; a ValueError for anything else."""
  if structure == UNSTRUCTURED:
    return None
  match = re.fullmatch(r'(\d+):(\d+)', str(structure))
  if not match or not 0 < int(match.group(1)) < int(match.group(2)):
    raise ValueError(f"a pruning structure is 'unstructured' or 'N:M' with 0 < N < M (e.g. '2:4'), got {structure!r}")
  return int(match.group(1)), int(match.group(2))


def _groups(array: np.ndarray, group_size: int) -> np.ndarray:
  """`array` with its input axis (second-to-last; the only one of a vector) last, cut into groups of
  `group_size`: shape (..., in / group_size, group_size)."""
  moved = np.moveaxis(array, -2, -1) if array.ndim >= 2 else array
  return moved.reshape(*moved.shape[:-1], moved.shape[-1] // group_size, group_size)


def _ungroup(groups: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """The inverse of `_groups` for an array of `shape`."""
  moved = groups.reshape(*groups.shape[:-2], -1)
  return np.moveaxis(moved, -1, -2) if len(shape) >= 2 else moved


def keep_n_of_m(scores: np.ndarray, keep: np.ndarray, n: int, m: int) -> np.ndarray:
  """The keep mask of one kernel holding, in every group of `m` along its input axis, the `n`
  highest-scoring survivors of `keep` (fewer where fewer survive; never a revived weight). Ties keep the
  later position, as `pruning` does."""
  keep = np.asarray(keep, bool)
  ranked = np.where(keep, np.asarray(scores, np.float32), -np.inf)
  order = np.argsort(_groups(ranked, m), axis=-1, kind='stable')  # lowest first
  position = np.empty_like(order)
  np.put_along_axis(position, order, np.arange(m), axis=-1)
  return _ungroup(position >= m - n, keep.shape) & keep


def holds_pattern(keep: np.ndarray, n: int, m: int) -> bool:
  """Whether no group of `m` along the input axis of `keep` holds more than `n` kept weights."""
  return bool(np.all(_groups(np.asarray(keep, bool), m).sum(-1) <= n))


def check_divisible(params: Any, structured: Any, m: int) -> None:
  """A ValueError naming the first leaf `structured` marks whose input dimension `m` does not divide
  (with its shape); `params` may hold shapes (`jax.ShapeDtypeStruct`) or arrays."""
  for (path, leaf), flag in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree_util.tree_leaves(structured)):
    shape = tuple(np.shape(leaf))
    if flag and (not shape or shape[-2 if len(shape) >= 2 else -1] % m):
      name = '/'.join(masks_lib.path_to_names(path))
      raise ValueError(
          f'{name} of shape {shape}: its input dimension ({shape[-2] if len(shape) >= 2 else shape[-1:]}) '
          f'is not a multiple of M={m}, so it cannot hold an N:{m} pattern; exclude it '
          '(pruning.excluded_layers) or give it a fraction of its own (pruning.layer_fractions)'
      )


def structured_leaves(prunable: Any, layer_fractions: Mapping[str, float]) -> Any:
  """A bool tree like `prunable`: the leaves an N:M structure applies to, every prunable leaf but those of
  layers with a fraction of their own (`layer_fractions` keys, as `pruning.fraction_for_layer` matches
  them), which are pruned unstructured at it."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(prunable)
  own = [
      any(
          masks_lib.selects_layer(name, masks_lib.module_path(masks_lib.path_to_names(path)))
          for name in layer_fractions
      )
      for path, _ in flat
  ]
  return jax.tree_util.tree_unflatten(treedef, [bool(flag) and not mine for (_, flag), mine in zip(flat, own)])


def apply_pattern(scores: Any, start: Any, unstructured: Any, pattern_leaves: Any, pattern: tuple[int, int]) -> Any:
  """The mask with every `pattern_leaves` leaf cut to N of each M of its `start` survivors by `scores`
  (`keep_n_of_m`, checked to hold the pattern), the others from `unstructured`."""
  n, m = pattern

  def leaf_mask(score: Any, start_keep: Any, unstructured_keep: Any, in_pattern: bool) -> Any:
    if not in_pattern:
      return unstructured_keep
    keep = keep_n_of_m(score, start_keep, n, m)
    if not holds_pattern(keep, n, m):  # a guard: keep_n_of_m holds the pattern by construction
      raise AssertionError(f'an N:M mask breaks its {n}:{m} pattern')
    return keep

  return jax.tree_util.tree_map(leaf_mask, scores, start, unstructured, pattern_leaves)


def check_mask(keep_mask: Any, prunable: Any, structure: str, layer_fractions: Mapping[str, float], what: str) -> None:
  """A ValueError naming `what` when `keep_mask` breaks the N:M pattern of `structure` in a leaf it
  applies to (`structured_leaves`); nothing for 'unstructured'. A branch registered from Python may draw
  any mask (the built-in ones that do are refused by the config check)."""
  pattern = parse(structure)
  if pattern is None:
    return
  leaves = structured_leaves(prunable, layer_fractions)
  for keep, in_pattern in zip(jax.tree_util.tree_leaves(keep_mask), jax.tree_util.tree_leaves(leaves)):
    if in_pattern and not holds_pattern(keep, *pattern):
      raise ValueError(
          f'{what}: its mask does not hold the {structure} pattern of pruning.structure; train it without an '
          "N:M structure, or let it keep the ticket's mask"
      )


def shuffle_within_groups(keep_mask: Any, pattern_leaves: Any, m: int, seed: int) -> Any:
  """`keep_mask` with the kept positions of every `pattern_leaves` leaf shuffled at random within each
  group of `m` along its input axis (the same count in every group, so the pattern holds); the other
  leaves as they are. A random ticket of an N:M ticket."""
  rng = np.random.default_rng(seed)

  def shuffled(keep: Any, in_pattern: bool) -> Any:
    keep = np.asarray(keep, bool)
    if not in_pattern:
      return keep
    groups = _groups(keep, m)
    order = np.argsort(rng.random(groups.shape), axis=-1)
    return _ungroup(np.take_along_axis(groups, order, axis=-1), keep.shape)

  return jax.tree_util.tree_map(shuffled, keep_mask, pattern_leaves)

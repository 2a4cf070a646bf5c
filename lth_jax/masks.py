"""Mask pytrees: which parameters are prunable, all-ones masks, applying masks, density.

A *keep mask* mirrors a parameter tree leaf for leaf: a boolean array of the leaf's shape, True where
the weight survives. Leaves that are not prunable (biases, normalization parameters, or layers the
config excludes) always carry an all-True mask, so every tree operation can treat leaves alike.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Params = Any
Mask = Any
PathTuple = tuple[str, ...]


def path_to_names(path: Sequence[Any]) -> PathTuple:
  """Turns a `jax.tree_util` key path into a tuple of plain strings."""
  names = []
  for key in path:
    if isinstance(key, jax.tree_util.DictKey):
      names.append(str(key.key))
    elif isinstance(key, jax.tree_util.GetAttrKey):
      names.append(str(key.name))
    elif isinstance(key, jax.tree_util.SequenceKey):
      names.append(str(key.idx))
    else:
      names.append(str(key))
  return tuple(names)


def leaf_name(path: PathTuple) -> str:
  """The '/'-joined name of a leaf, e.g. 'hidden_0/kernel'."""
  return '/'.join(path)


def layer_name(path: PathTuple) -> str:
  """The name of the module owning a leaf: the path element before the parameter name."""
  return path[-2] if len(path) >= 2 else path[-1]


def module_path(path: PathTuple) -> str:
  """The '/'-joined path of the module owning a leaf, e.g. 'stage_0_block_1/conv_0' ('hidden_0' in
  a flat model)."""
  return '/'.join(path[:-1]) if len(path) >= 2 else path[-1]


def selects_layer(selector: str, module: str) -> bool:
  """Whether a layer selector (of `pruning.excluded_layers` or `pruning.layer_fractions`) names the
  module at '/'-joined path `module`.

  A selector names a module by its own name ('conv_0', in every block that has one), by that name's
  numbered family ('conv' matches 'conv_0', 'conv_1', ...), or by a leading part of its path
  ('stage_0_block_1' for every layer of that block, 'stage_0_block_1/conv_0' for one layer).
  """
  modules = module.split('/')
  if modules[-1] == selector or modules[-1].startswith(selector + '_'):
    return True
  parts = selector.split('/')
  return modules[: len(parts)] == parts


PrunableRule = Callable[[str, Any], bool]


@dataclasses.dataclass(frozen=True)
class PatternRule:
  """A prunable rule from patterns over '/'-joined leaf paths (fnmatch: '*/kernel', 'Embed_0/embedding';
  '*' also matches across '/'): a leaf is prunable when any pattern matches its path."""

  patterns: tuple[str, ...]

  def __call__(self, path: str, leaf: Any) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.patterns)


def prunable_tree(
    params: Params,
    prunable_parameter_names: Iterable[str] = ('kernel',),
    excluded_layers: Iterable[str] = (),
    rule: PrunableRule | None = None,
) -> Any:
  """A tree of Python bools: True for leaves that pruning may touch.

  Args:
    params: the parameter tree (arrays or shape structs).
    prunable_parameter_names: last path element of prunable leaves ('kernel' for flax Dense/Conv).
    excluded_layers: layer selectors (see `selects_layer`) never pruned, e.g. ('stem_conv', 'output');
      one that selects no layer of `params` is a ValueError naming it and the layers.
    rule: instead of the names, `rule(path, leaf) -> bool` decides each leaf ('/'-joined path such as
      'Encoder_0/attention/query/kernel'; the leaf's array or shape struct). Excluded layers stay out.
  """
  names = tuple(prunable_parameter_names)
  excluded = tuple(excluded_layers)
  layers = list(
      dict.fromkeys(module_path(path_to_names(path)) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0])
  )
  unknown = [name for name in excluded if not any(selects_layer(name, layer) for layer in layers)]
  if unknown:
    raise ValueError(
        f'excluded_layers names no layer of these parameters: {", ".join(unknown)} (their layers: {", ".join(layers)})'
    )

  def is_prunable(path, leaf):
    path = path_to_names(path)
    if not (bool(rule(leaf_name(path), leaf)) if rule is not None else path[-1] in names):
      return False
    module = module_path(path)
    return not any(selects_layer(name, module) for name in excluded)

  return jax.tree_util.tree_map_with_path(is_prunable, params)


def prunable_named(params: Params, leaf_names: Iterable[str]) -> Any:
  """The prunable tree of `params` whose prunable leaves are those named (e.g. the keys of a record's
  'layer_density': the leaves the run that wrote it pruned, under any rule)."""
  names = set(leaf_names)
  return jax.tree_util.tree_map_with_path(lambda path, _: leaf_name(path_to_names(path)) in names, params)


def check_prunable(params: Params, prunable: Any, rule_name: str) -> None:
  """A prunable tree must select at least one leaf, and only floating-point weights: a ValueError in
  one line naming `rule_name` (where the rule came from) and the offending leaf otherwise."""
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  selected = [
      (leaf_name(path_to_names(path)), leaf)
      for (path, leaf), flag in zip(flat, jax.tree_util.tree_leaves(prunable))
      if flag
  ]
  if not selected:
    raise ValueError(
        f'{rule_name} selects no leaf of the parameters (their leaves: '
        + ', '.join(leaf_name(path_to_names(path)) for path, _ in flat[:12])
        + (', ...' if len(flat) > 12 else '')
        + ')'
    )
  for name, leaf in selected:
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
      raise ValueError(f'{rule_name} selects {name}, a {leaf.dtype} leaf: only floating-point weights can be pruned')


def ones_like(params: Params) -> Mask:
  """An all-True keep mask mirroring `params`."""
  return jax.tree_util.tree_map(lambda leaf: jnp.ones(jnp.shape(leaf), dtype=jnp.bool_), params)


def apply(params: Params, keep_mask: Mask) -> Params:
  """Zeroes every weight whose mask entry is False (exactly 0.0, not multiplied).

  Host (numpy) leaves stay numpy — no device round trip or per-shape compilation; device arrays and
  tracers use `jnp.where`.
  """

  def keep_or_zero(weight, keep):
    if isinstance(weight, np.ndarray) and isinstance(keep, np.ndarray):
      return np.where(keep, weight, np.zeros_like(weight))
    return jnp.where(keep, weight, jnp.zeros_like(weight))

  return jax.tree_util.tree_map(keep_or_zero, params, keep_mask)


def _leaf_counts(keep_mask: Mask, prunable: Any) -> list[tuple[str, int, int]]:
  """(name, kept, total) for each prunable leaf, in tree order."""
  counts = []
  flat, _ = jax.tree_util.tree_flatten_with_path(keep_mask)
  prunable_flat = jax.tree_util.tree_leaves(prunable)
  for (path, keep), is_prunable in zip(flat, prunable_flat):
    if not is_prunable:
      continue
    keep = np.asarray(keep)
    counts.append((leaf_name(path_to_names(path)), int(keep.sum()), int(keep.size)))
  return counts


def density_per_layer(keep_mask: Mask, prunable: Any) -> dict[str, float]:
  """Fraction of weights kept in each prunable leaf, keyed by '/'-joined leaf name."""
  return {name: kept / total for name, kept, total in _leaf_counts(keep_mask, prunable)}


def count_per_layer(keep_mask: Mask, prunable: Any) -> dict[str, int]:
  """Number of weights kept in each prunable leaf, keyed by '/'-joined leaf name."""
  return {name: kept for name, kept, _ in _leaf_counts(keep_mask, prunable)}


def density(keep_mask: Mask, prunable: Any) -> float:
  """Fraction of all prunable weights that the mask keeps."""
  counts = _leaf_counts(keep_mask, prunable)
  total = sum(total for _, _, total in counts)
  return sum(kept for _, kept, _ in counts) / total if total else 1.0


def nonzero_count(params: Params, prunable: Any) -> int:
  """Number of nonzero prunable weights in `params`."""
  leaves = jax.tree_util.tree_leaves(params)
  flags = jax.tree_util.tree_leaves(prunable)
  return int(sum(np.count_nonzero(np.asarray(leaf)) for leaf, flag in zip(leaves, flags) if flag))


def to_numpy(keep_mask: Mask) -> Mapping[str, np.ndarray]:
  """Flattens a mask into {leaf name: bool array}, convenient for saving and comparing."""
  flat, _ = jax.tree_util.tree_flatten_with_path(keep_mask)
  return {leaf_name(path_to_names(path)): np.asarray(leaf, dtype=bool) for path, leaf in flat}


def layer_sizes(params: Params, prunable: Any) -> dict[str, int]:
  """Number of prunable weights per layer (module path)."""
  sizes: dict[str, int] = {}
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  for (path, leaf), is_prunable in zip(flat, jax.tree_util.tree_leaves(prunable)):
    if is_prunable:
      layer = module_path(path_to_names(path))
      sizes[layer] = sizes.get(layer, 0) + int(np.prod(leaf.shape))
  return sizes


def layer_paths(params: Params) -> list[str]:
  """The module path of every layer that holds parameters, sorted."""
  return sorted({module_path(path_to_names(path)) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]})

"""Pruning: criteria (registered by name), selection (per layer or one global pool), a level's mask,
random permutation of masks, schedules.

Every function here is a pure function of host (numpy) trees: pruning happens once per level, on
weights fetched from the devices, so it is deterministic and identical on every host.

A criterion is a function `criterion(inputs: CriterionInputs) -> scores`: a tree like the mask, higher
meaning keep. `pruning.criterion` in the config names one: 'magnitude' (|w|, the default) or 'snip'
(|g * w|); `register(name, criterion)` adds one.

Selection rule: pruning a fraction p of a layer removes exactly round(p * remaining) of its surviving
weights, those with the smallest score; ties go to the lower flat index first (a stable sort), and a
weight already pruned is never revived.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol, Sequence

import jax
import numpy as np

from lth_jax import masks as masks_lib
from lth_jax import structured

SCOPES = ('local', 'global')
MODES = ('iterative', 'one_shot')


def magnitude_scores(params: Any) -> Any:
  """|w| for every leaf: the score of magnitude pruning."""
  return jax.tree_util.tree_map(lambda weight: np.abs(np.asarray(weight, dtype=np.float32)), params)


def fraction_for_layer(layer: str, fraction: float, layer_fractions: Mapping[str, float]) -> float:
  """The pruning fraction of one layer (its module path, e.g. 'hidden_0' or 'stage_0_block_1/conv_0'):
  that of the first `layer_fractions` key that selects it (`masks.selects_layer`: its name, e.g.
  'conv_0', its numbered family, e.g. 'conv', or a leading part of its path), else `fraction`."""
  for name, layer_fraction in layer_fractions.items():
    if masks_lib.selects_layer(name, layer):
      return float(layer_fraction)
  return float(fraction)


def has_own_fraction(layer: str, layer_fractions: Mapping[str, float]) -> bool:
  """Whether a `layer_fractions` key selects `layer` (see `fraction_for_layer`)."""
  return any(masks_lib.selects_layer(name, layer) for name in layer_fractions)


def count_to_prune(remaining: int, fraction: float, min_remaining: int = 0) -> int:
  """round(fraction * remaining), but never leaving fewer than `min_remaining` weights."""
  count = int(np.round(fraction * remaining))
  return max(0, min(count, remaining - min_remaining))


def _prune_flat(scores: np.ndarray, keep: np.ndarray, count: int) -> np.ndarray:
  """Drops the `count` surviving entries with the smallest score (stable in index) from `keep`.

  Only survivors are ranked, so non-finite scores (inf, nan: ranked last) never make a pruned entry
  count twice.
  """
  keep = keep.reshape(-1).copy()
  if count <= 0:
    return keep
  survivors = np.flatnonzero(keep)
  order = np.argsort(scores.reshape(-1)[survivors], kind='stable')
  keep[survivors[order[:count]]] = False
  return keep


def prune(
    scores: Any,
    keep_mask: Any,
    prunable: Any,
    fraction: float,
    scope: str = 'local',
    layer_fractions: Mapping[str, float] | None = None,
    min_weights_per_layer: int = 0,
) -> Any:
  """One pruning step: removes the lowest-scoring fraction of the surviving prunable weights.

  Args:
    scores: tree of scores, same structure as the mask (e.g. `magnitude_scores(params)`).
    keep_mask: current keep mask (bool arrays); never revived.
    prunable: tree of bools from `masks.prunable_tree`.
    fraction: fraction of remaining weights to remove (per layer for 'local', of the pool for 'global').
    scope: 'local' ranks within each layer; 'global' ranks all prunable weights together, except
      those of layers named in `layer_fractions`.
    layer_fractions: per-layer fractions (see `fraction_for_layer`). A layer named here is always
      pruned on its own at its fraction; with 'global' it stays out of the pool.
    min_weights_per_layer: 'local' never leaves a layer with fewer surviving weights than this.

  Returns:
    The new keep mask as a tree of numpy bool arrays.
  """
  if scope not in SCOPES:
    raise ValueError(f'pruning scope must be one of {SCOPES}, got {scope!r}')
  layer_fractions = dict(layer_fractions or {})
  flat_keep, treedef = jax.tree_util.tree_flatten_with_path(keep_mask)
  flat_scores = jax.tree_util.tree_leaves(scores)
  flat_prunable = jax.tree_util.tree_leaves(prunable)
  _check_layer_names(layer_fractions, [masks_lib.module_path(masks_lib.path_to_names(path)) for path, _ in flat_keep])
  keeps = [np.asarray(keep, dtype=bool) for _, keep in flat_keep]
  score_arrays = [np.asarray(score, dtype=np.float32) for score in flat_scores]

  new_keeps, in_pool = [], []
  for (path, _), keep, score, is_prunable in zip(flat_keep, keeps, score_arrays, flat_prunable):
    layer = masks_lib.module_path(masks_lib.path_to_names(path))
    pooled = bool(is_prunable) and scope == 'global' and not has_own_fraction(layer, layer_fractions)
    in_pool.append(pooled)
    if not is_prunable or pooled:
      new_keeps.append(keep)
      continue
    layer_fraction = fraction_for_layer(layer, fraction, layer_fractions)
    count = count_to_prune(int(keep.sum()), layer_fraction, min_weights_per_layer)
    new_keeps.append(_prune_flat(score, keep, count).reshape(keep.shape))
  new_mask = jax.tree_util.tree_unflatten(treedef, new_keeps)
  if scope == 'local' or not any(in_pool):
    return new_mask
  remaining = sum(int(keep.sum()) for keep, pooled in zip(keeps, in_pool) if pooled)
  return _prune_global(
      scores, new_mask, jax.tree_util.tree_unflatten(treedef, in_pool), count_to_prune(remaining, fraction)
  )


def _check_layer_names(layer_fractions: Mapping[str, float], layers: Sequence[str]) -> None:
  """A ValueError naming each `layer_fractions` key that selects no layer of the tree (and the layers)."""
  unknown = [name for name in layer_fractions if not any(masks_lib.selects_layer(name, layer) for layer in layers)]
  if unknown:
    raise ValueError(
        f'layer_fractions names no layer of these parameters: {", ".join(unknown)} '
        f'(their layers: {", ".join(dict.fromkeys(layers))})'
    )


def permute_within_layers(keep_mask: Any, prunable: Any, seed: int) -> Any:
  """A random ticket: each prunable layer's mask randomly permuted (same count per layer)."""
  rng = np.random.default_rng(seed)
  flat_keep, treedef = jax.tree_util.tree_flatten(keep_mask)
  flat_prunable = jax.tree_util.tree_leaves(prunable)
  permuted = []
  for keep, is_prunable in zip(flat_keep, flat_prunable):
    keep = np.asarray(keep, dtype=bool)
    if is_prunable:
      keep = rng.permutation(keep.reshape(-1)).reshape(keep.shape)
    permuted.append(keep)
  return jax.tree_util.tree_unflatten(treedef, permuted)


def per_level_fraction(target_density: float, levels: int) -> float:
  """The fraction to prune at each of `levels` levels to reach `target_density`: 1 - d^(1/n)."""
  if not 0.0 < target_density <= 1.0:
    raise ValueError(f'target density must be in (0, 1], got {target_density}')
  if levels < 1:
    raise ValueError(f'levels must be at least 1, got {levels}')
  return 1.0 - target_density ** (1.0 / levels)


def planned_counts(
    layer_sizes: Mapping[str, int],
    fraction: float,
    levels: int,
    scope: str = 'local',
    layer_fractions: Mapping[str, float] | None = None,
    min_weights_per_layer: int = 0,
) -> list[int]:
  """Total surviving prunable weights after each level 0..levels of iterative pruning.

  Counts do not depend on the weights' values, so this plans a run (and checks a target density)
  before any training. `layer_sizes` maps layers (module paths, `masks.module_path`) to their number
  of prunable weights.
  """
  layer_fractions = dict(layer_fractions or {})
  pooled = {layer for layer in layer_sizes if scope == 'global' and not has_own_fraction(layer, layer_fractions)}
  remaining = {layer: count for layer, count in layer_sizes.items() if layer not in pooled}
  pool = sum(layer_sizes[layer] for layer in pooled)
  totals = [pool + sum(remaining.values())]
  for _ in range(levels):
    pool -= count_to_prune(pool, fraction)
    for layer, count in remaining.items():
      layer_fraction = fraction_for_layer(layer, fraction, layer_fractions)
      remaining[layer] = count - count_to_prune(count, layer_fraction, min_weights_per_layer)
    totals.append(pool + sum(remaining.values()))
  return totals


def one_shot_fractions(
    fraction: float, layer_fractions: Mapping[str, float], level: int
) -> tuple[float, dict[str, float]]:
  """Fractions that prune in one step what `level` iterative levels would: 1 - (1 - p)^level."""

  def compound(value: float) -> float:
    return 1.0 - (1.0 - value) ** level

  return compound(fraction), {name: compound(value) for name, value in layer_fractions.items()}


def snip_scores(params: Any, gradients: Any) -> Any:
  """Connection sensitivity |g * w| (Lee et al., SNIP): the loss change from removing each weight."""
  return jax.tree_util.tree_map(
      lambda weight, gradient: np.abs(np.asarray(weight, np.float32) * np.asarray(gradient, np.float32)),
      params,
      gradients,
  )


def keep_top(scores: Any, prunable: Any, keep_count: int) -> Any:
  """A keep mask holding exactly the `keep_count` highest-scoring prunable weights of the whole
  network (one global pool; ties keep the higher index). Non-prunable leaves are all kept."""
  ones = jax.tree_util.tree_map(lambda score: np.ones(np.shape(score), bool), scores)
  total = sum(
      int(np.size(score))
      for score, flag in zip(jax.tree_util.tree_leaves(scores), jax.tree_util.tree_leaves(prunable))
      if flag
  )
  if not 0 <= keep_count <= total:
    raise ValueError(f'cannot keep {keep_count} of {total} prunable weights')
  return _prune_global(scores, ones, prunable, total - keep_count)


def _prune_global(scores: Any, keep_mask: Any, prunable: Any, count: int) -> Any:
  """Removes exactly `count` surviving weights with the smallest scores from one global pool."""
  flat_keep, treedef = jax.tree_util.tree_flatten(keep_mask)
  flat_scores = jax.tree_util.tree_leaves(scores)
  flat_prunable = jax.tree_util.tree_leaves(prunable)
  indices = [i for i, flag in enumerate(flat_prunable) if flag]
  pool_keep = np.concatenate([np.asarray(flat_keep[i], bool).reshape(-1) for i in indices])
  pool_scores = np.concatenate([np.asarray(flat_scores[i], np.float32).reshape(-1) for i in indices])
  pool_keep = _prune_flat(pool_scores, pool_keep, count)
  new_keep = [np.asarray(keep, bool) for keep in flat_keep]
  offset = 0
  for i in indices:
    size = new_keep[i].size
    new_keep[i] = pool_keep[offset : offset + size].reshape(new_keep[i].shape)
    offset += size
  return jax.tree_util.tree_unflatten(treedef, new_keep)


def random_mask_like(keep_mask: Any, prunable: Any, seed: int) -> Any:
  """A random mask keeping, in every prunable layer, as many weights as `keep_mask` does, at
  positions drawn uniformly without replacement (random pruning to the same per-layer density)."""
  rng = np.random.default_rng(seed)
  flat_keep, treedef = jax.tree_util.tree_flatten(keep_mask)
  drawn = []
  for keep, is_prunable in zip(flat_keep, jax.tree_util.tree_leaves(prunable)):
    keep = np.asarray(keep, bool)
    if is_prunable:
      new_keep = np.zeros(keep.size, bool)
      new_keep[rng.choice(keep.size, size=int(keep.sum()), replace=False)] = True
      keep = new_keep.reshape(keep.shape)
    drawn.append(keep)
  return jax.tree_util.tree_unflatten(treedef, drawn)


@dataclasses.dataclass(frozen=True)
class CriterionInputs:
  """What a criterion may score a level's mask from (host trees)."""

  params: Any  # the weights the level prunes from
  keep_mask: Any  # the mask the level prunes further (all ones for one-shot pruning)
  prunable: Any  # bool tree from masks.prunable_tree
  # params -> the mean loss gradient at params over `pruning.snip_batches` training batches; called only
  # by a criterion that needs it (None: none available)
  loss_gradients: Callable[[Any], Any] | None = None


Criterion = Callable[[CriterionInputs], Any]  # inputs -> scores (a tree like the mask; higher: keep)


def magnitude(inputs: CriterionInputs) -> Any:
  """Magnitude pruning: |w| of the weights the level prunes from."""
  return magnitude_scores(inputs.params)


def snip(inputs: CriterionInputs) -> Any:
  """Connection sensitivity |g * w| (Lee et al., SNIP) at the weights the level prunes from."""
  if inputs.loss_gradients is None:
    raise ValueError("the 'snip' criterion needs loss gradients (CriterionInputs.loss_gradients)")
  return snip_scores(inputs.params, inputs.loss_gradients(inputs.params))


CRITERIA: dict[str, Criterion] = {'magnitude': magnitude, 'snip': snip}


def register(name: str, criterion_function: Criterion) -> None:
  """Adds a pruning criterion under `name` (then usable as `pruning.criterion`)."""
  if not isinstance(name, str) or not name:
    raise ValueError(f'a pruning criterion needs a non-empty name, got {name!r}')
  if not callable(criterion_function):
    raise TypeError(f'pruning criterion {name!r} must be callable (inputs -> scores), got {criterion_function!r}')
  if name in CRITERIA:
    raise ValueError(f'a pruning criterion named {name!r} is already registered (known: {", ".join(CRITERIA)})')
  CRITERIA[name] = criterion_function


def criterion(name: str) -> Criterion:
  """The pruning criterion registered under `name`."""
  if name not in CRITERIA:
    raise KeyError(f'unknown pruning criterion {name!r}; known criteria: {", ".join(CRITERIA)}')
  return CRITERIA[name]


class LevelRule(Protocol):
  """The values of a pruning plan that decide a level's mask (`lth_jax.config.PruningPlan` has them)."""

  @property
  def mode(self) -> str:
    ...

  @property
  def scope(self) -> str:
    ...

  @property
  def fraction(self) -> float:
    ...

  @property
  def layer_fractions(self) -> Mapping[str, float]:
    ...

  @property
  def min_weights_per_layer(self) -> int:
    ...

  @property
  def structure(self) -> str:
    ...


def level_inputs(
    mode: str,
    ticket_params: Any,
    keep_mask: Any,
    dense_params: Any,
    prunable: Any,
    loss_gradients: Callable[[Any], Any] | None = None,
) -> CriterionInputs:
  """What a level's criterion scores: one-shot pruning scores the dense network's weights under a full
  mask, iterative pruning the previous ticket's weights under its mask."""
  if mode == 'one_shot':
    full_mask = jax.tree_util.tree_map(lambda keep: np.ones(np.shape(keep), bool), keep_mask)
    return CriterionInputs(dense_params, full_mask, prunable, loss_gradients)
  return CriterionInputs(ticket_params, keep_mask, prunable, loss_gradients)


def next_mask(rule: LevelRule, level: int, scores: Any, keep_mask: Any, prunable: Any) -> Any:
  """The winning-ticket mask of `level` (>= 1) from a criterion's `scores`: iterative pruning removes
  `rule.fraction` of the survivors of `keep_mask`; one-shot pruning prunes a full mask in one step to
  what `level` iterative levels would keep (`keep_mask` gives only the tree's shape then)."""
  if rule.mode not in MODES:
    raise ValueError(f'pruning mode must be one of {MODES}, got {rule.mode!r}')
  pattern = structured.parse(rule.structure)
  if pattern is not None:
    return _n_m_mask(rule, level, scores, keep_mask, prunable, pattern)
  if rule.mode == 'one_shot':
    fraction, layer_fractions = one_shot_fractions(rule.fraction, rule.layer_fractions, level)
    return prune(
        scores,
        masks_lib.ones_like(keep_mask),
        prunable,
        fraction,
        rule.scope,
        layer_fractions,
        rule.min_weights_per_layer,
    )
  return prune(scores, keep_mask, prunable, rule.fraction, rule.scope, rule.layer_fractions, rule.min_weights_per_layer)


def _n_m_mask(rule: LevelRule, level: int, scores: Any, keep_mask: Any, prunable: Any, pattern: tuple[int, int]) -> Any:
  """A level's mask under `rule.structure` N:M: the layers with their own fraction pruned unstructured at
  it (iterative or one-shot as `rule.mode` says), every other prunable leaf to the N best of each M
  (`structured.apply_pattern`; reached at level 1 and kept)."""
  pattern_leaves = structured.structured_leaves(prunable, rule.layer_fractions)
  own = jax.tree_util.tree_map(lambda flag, in_pattern: bool(flag) and not in_pattern, prunable, pattern_leaves)
  start = keep_mask if rule.mode == 'iterative' else masks_lib.ones_like(keep_mask)
  fraction, layer_fractions = rule.fraction, dict(rule.layer_fractions)
  if rule.mode == 'one_shot':
    fraction, layer_fractions = one_shot_fractions(rule.fraction, rule.layer_fractions, level)
  unstructured = prune(scores, start, own, fraction, 'local', layer_fractions, rule.min_weights_per_layer)
  return structured.apply_pattern(scores, start, unstructured, pattern_leaves, pattern)

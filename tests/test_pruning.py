"""Tests for lth_jax.pruning: exact selection, no revival, ties, local vs global, permutation, schedules."""

import dataclasses
import math
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import masks
from lth_jax import pruning


def single_layer(weights, keep=None, name='dense_0'):
  """(params, mask, prunable) for one prunable kernel."""
  weights = np.asarray(weights, np.float32)
  keep = np.ones(weights.shape, bool) if keep is None else np.asarray(keep, bool)
  params = {name: {'kernel': weights}}
  return params, {name: {'kernel': keep}}, masks.prunable_tree(params)


def prune_layer(weights, keep, fraction, **kwargs):
  """Magnitude-prunes one kernel; returns its new keep array."""
  params, mask, prunable = single_layer(weights, keep)
  new_mask = pruning.prune(pruning.magnitude_scores(params), mask, prunable, fraction, **kwargs)
  return np.asarray(new_mask['dense_0']['kernel'])


def random_tree(rng, scales=None):
  """Three dense layers (300, 150, 30 kernel weights) with biases, like a tiny LeNet."""
  scales = scales or {}
  shapes = {'dense_0': (20, 15), 'dense_1': (15, 10), 'output': (10, 3)}
  return {
      name: {
          'kernel': scales.get(name, 1.0) * rng.normal(size=shape).astype(np.float32),
          'bias': rng.normal(size=shape[1:]).astype(np.float32),
      }
      for name, shape in shapes.items()
  }


def kernel_counts(mask):
  return {name: int(np.sum(layer['kernel'])) for name, layer in mask.items()}


# ----------------------------------------------------------------------------------------------
# magnitude_scores


def test_magnitude_scores_are_float32_absolute_values():
  scores = pruning.magnitude_scores({'a': np.array([-2.0, 0.5, -0.0], np.float64)})
  assert scores['a'].dtype == np.float32
  np.testing.assert_array_equal(scores['a'], [2.0, 0.5, 0.0])


# ----------------------------------------------------------------------------------------------
# Exact selection


def test_prune_removes_the_smallest_surviving_weights_by_magnitude():
  """Hand-made: survivors by |w| are 0.05, 0.1, 0.5, 1.0, 2.0, 3.0; already pruned: 0.01 and 9.0."""
  weights = [[0.5, -0.1, 3.0, 0.01], [-2.0, 0.05, 1.0, -9.0]]
  keep = [[True, True, True, False], [True, True, True, False]]
  # round(0.5 * 6) = 3: drop 0.05, -0.1, 0.5 (signs do not matter); the pruned 0.01 stays pruned.
  np.testing.assert_array_equal(
      prune_layer(weights, keep, 0.5), [[False, False, True, False], [True, False, True, False]]
  )
  # round(0.2 * 6) = round(1.2) = 1: only 0.05 goes.
  np.testing.assert_array_equal(
      prune_layer(weights, keep, 0.2), [[True, True, True, False], [True, False, True, False]]
  )
  # round(0.75 * 6) = round(4.5) = 4 (round half to even, like Python's round): keeps 2.0 and 3.0.
  np.testing.assert_array_equal(
      prune_layer(weights, keep, 0.75), [[False, False, True, False], [True, False, False, False]]
  )
  # Fraction 0 keeps everything; fraction 1 removes every survivor.
  np.testing.assert_array_equal(prune_layer(weights, keep, 0.0), keep)
  assert not prune_layer(weights, keep, 1.0).any()


@pytest.mark.parametrize('fraction', [0.05, 0.1, 0.2, 0.25, 0.5, 0.8, 0.9])
def test_prune_count_is_round_of_fraction_times_remaining(fraction):
  """A shuffled layer with distinct magnitudes: exactly round(p * remaining) of the smallest go."""
  rng = np.random.default_rng(int(fraction * 100))
  magnitudes = rng.permutation(np.arange(1, 101)).astype(np.float32)
  weights = (magnitudes * rng.choice([-1.0, 1.0], size=100)).reshape(10, 10)
  keep = (rng.random(100) < 0.7).reshape(10, 10)
  remaining = int(keep.sum())
  new_keep = prune_layer(weights, keep, fraction)
  removed = keep & ~new_keep
  assert removed.sum() == round(fraction * remaining)
  # Every removed survivor is smaller than every kept one.
  if removed.any() and new_keep.any():
    assert np.abs(weights[removed]).max() < np.abs(weights[new_keep]).min()
  assert not (new_keep & ~keep).any()
  assert new_keep.shape == keep.shape and new_keep.dtype == bool


def test_prune_never_revives_across_levels():
  """Already-pruned weights with huge magnitudes stay pruned over several consecutive levels."""
  rng = np.random.default_rng(0)
  weights = rng.normal(size=(8, 8)).astype(np.float32)
  keep = np.ones((8, 8), bool)
  keep.flat[::5] = False
  weights[~keep] = 1e9  # pruned, but with the largest scores of all
  for level in range(5):
    remaining = int(keep.sum())
    new_keep = prune_layer(weights, keep, 0.3)
    assert not (new_keep & ~keep).any(), f'level {level} revived a weight'
    assert int((keep & ~new_keep).sum()) == round(0.3 * remaining)
    keep = new_keep
  assert not keep[weights == 1e9].any()


def test_prune_breaks_ties_by_lower_flat_index_and_is_deterministic():
  weights = np.ones((2, 5), np.float32)
  keep = np.ones((2, 5), bool)
  keep[0, 1] = False
  # 9 remaining, round(0.3 * 9) = 3: the survivors with the lowest flat indices 0, 2, 3 go first.
  first = prune_layer(weights, keep, 0.3)
  expected = np.ones(10, bool)
  expected[[0, 1, 2, 3]] = False
  np.testing.assert_array_equal(first, expected.reshape(2, 5))
  np.testing.assert_array_equal(prune_layer(weights, keep, 0.3), first)


def test_prune_ties_only_among_equal_scores():
  """Ties are broken by index only among equal scores; a smaller score still goes first."""
  weights = np.array([1.0, 1.0, 1.0, 0.5, 1.0, 1.0], np.float32)
  np.testing.assert_array_equal(prune_layer(weights, None, 0.5), [False, False, True, False, True, True])


@pytest.mark.parametrize('bad_value', [np.inf, np.nan])
def test_prune_removes_exact_count_even_with_non_finite_scores(bad_value):
  """Diverged weights (inf or nan) must not make pruning remove fewer than requested."""
  weights = [5.0, bad_value, 1.0, 2.0]
  keep = [False, True, True, True]
  new_keep = prune_layer(weights, keep, 1.0)  # round(1.0 * 3) = 3: every survivor goes
  assert int((np.asarray(keep) & ~new_keep).sum()) == 3


# ----------------------------------------------------------------------------------------------
# Local vs global, per-layer fractions and the floor


def two_scales_tree():
  """'dense_0' has tiny weights (1e-3 .. 0.1), 'dense_1' large ones (1 .. 100); biases are tiny."""
  magnitudes = np.arange(1, 101, dtype=np.float32).reshape(10, 10)
  params = {
      'dense_0': {'kernel': 1e-3 * magnitudes, 'bias': np.full(10, 1e-6, np.float32)},
      'dense_1': {'kernel': magnitudes.copy(), 'bias': np.full(10, 1e-6, np.float32)},
  }
  return params, masks.ones_like(params), masks.prunable_tree(params)


def test_global_pruning_ranks_all_layers_together():
  params, mask, prunable = two_scales_tree()
  scores = pruning.magnitude_scores(params)
  # Half of the 200-weight pool is exactly the small layer.
  new_mask = pruning.prune(scores, mask, prunable, 0.5, scope='global')
  assert not np.asarray(new_mask['dense_0']['kernel']).any()
  assert np.asarray(new_mask['dense_1']['kernel']).all()
  # Non-prunable biases are untouched even though their scores are the smallest of all.
  assert np.asarray(new_mask['dense_0']['bias']).all() and np.asarray(new_mask['dense_1']['bias']).all()
  # A quarter of the pool comes entirely out of the small layer, its 50 smallest.
  quarter = pruning.prune(scores, mask, prunable, 0.25, scope='global')
  assert kernel_counts(quarter) == {'dense_0': 50, 'dense_1': 100}
  np.testing.assert_array_equal(np.asarray(quarter['dense_0']['kernel']).reshape(-1), np.arange(100) >= 50)


def test_global_pruning_prunes_layers_with_their_own_fraction_outside_the_pool():
  params, mask, prunable = two_scales_tree()
  scores = pruning.magnitude_scores(params)
  # dense_0 loses its own 10% (its 10 smallest); the pool is dense_1 alone, which loses half.
  new_mask = pruning.prune(scores, mask, prunable, 0.5, scope='global', layer_fractions={'dense_0': 0.1})
  assert kernel_counts(new_mask) == {'dense_0': 90, 'dense_1': 50}
  np.testing.assert_array_equal(np.asarray(new_mask['dense_0']['kernel']).reshape(-1), np.arange(100) >= 10)
  np.testing.assert_array_equal(np.asarray(new_mask['dense_1']['kernel']).reshape(-1), np.arange(100) >= 50)
  assert pruning.planned_counts(
      {'dense_0': 100, 'dense_1': 100}, 0.5, 1, scope='global', layer_fractions={'dense_0': 0.1}
  ) == [200, 140]


def test_layer_selectors_name_modules_by_name_family_or_path():
  assert masks.selects_layer('conv_0', 'stage_0_block_1/conv_0')
  assert masks.selects_layer('conv', 'stage_0_block_1/conv_0')
  assert masks.selects_layer('stage_0_block_1', 'stage_0_block_1/conv_0')
  assert masks.selects_layer('stage_0_block_1/conv_0', 'stage_0_block_1/conv_0')
  assert not masks.selects_layer('stage_0_block_1/conv_1', 'stage_0_block_1/conv_0')
  assert not masks.selects_layer('stage_0_block_1', 'stage_0_block_10/conv_0')
  assert not masks.selects_layer('stage_0', 'stage_0_block_1/conv_0')
  assert masks.selects_layer('output', 'output') and not masks.selects_layer('out', 'output')
  params = {'block_0': {'conv_0': {'kernel': np.ones((5,))}}, 'block_1': {'conv_0': {'kernel': np.ones((5,))}}}
  prunable = masks.prunable_tree(params, excluded_layers=('block_1/conv_0',))
  assert prunable == {'block_0': {'conv_0': {'kernel': True}}, 'block_1': {'conv_0': {'kernel': False}}}
  overrides = {'block_1': 0.6, 'conv': 0.2}
  assert pruning.fraction_for_layer('block_1/conv_0', 0.5, overrides) == 0.6
  assert pruning.fraction_for_layer('block_0/conv_0', 0.5, overrides) == 0.2


def test_planned_counts_keep_same_named_layers_of_different_blocks_apart():
  """Two 5-weight 'conv_0' layers at 30%: round(1.5) = 2 from each, as pruning does, not 3 from 10."""
  params = {
      'block_0': {'conv_0': {'kernel': np.arange(1.0, 6.0)}},
      'block_1': {'conv_0': {'kernel': np.arange(1.0, 6.0)}},
  }
  prunable = masks.prunable_tree(params)
  mask = pruning.prune(pruning.magnitude_scores(params), masks.ones_like(params), prunable, 0.3)
  assert sum(kernel_counts_nested(mask)) == 6
  sizes = masks.layer_sizes(params, prunable)
  assert sizes == {'block_0/conv_0': 5, 'block_1/conv_0': 5}
  assert pruning.planned_counts(sizes, 0.3, 1) == [10, 6]


def kernel_counts_nested(mask):
  return [int(np.asarray(leaf).sum()) for leaf in jax.tree_util.tree_leaves(mask)]


def test_local_pruning_ranks_within_each_layer():
  params, mask, prunable = two_scales_tree()
  new_mask = pruning.prune(pruning.magnitude_scores(params), mask, prunable, 0.5, scope='local')
  assert kernel_counts(new_mask) == {'dense_0': 50, 'dense_1': 50}
  expected = (np.arange(100) >= 50).reshape(10, 10)  # the 50 smallest of each layer
  np.testing.assert_array_equal(new_mask['dense_0']['kernel'], expected)
  np.testing.assert_array_equal(new_mask['dense_1']['kernel'], expected)
  assert np.asarray(new_mask['dense_0']['bias']).all()


def test_local_is_the_default_scope():
  params, mask, prunable = two_scales_tree()
  scores = pruning.magnitude_scores(params)
  default = pruning.prune(scores, mask, prunable, 0.5)
  local = pruning.prune(scores, mask, prunable, 0.5, scope='local')
  jax.tree_util.tree_map(np.testing.assert_array_equal, default, local)


def test_prune_rejects_unknown_scope():
  params, mask, prunable = two_scales_tree()
  with pytest.raises(ValueError, match='scope'):
    pruning.prune(pruning.magnitude_scores(params), mask, prunable, 0.5, scope='layerwise')


def test_layer_fractions_prune_the_output_layer_at_half_rate():
  rng = np.random.default_rng(3)
  params = random_tree(rng)
  mask, prunable = masks.ones_like(params), masks.prunable_tree(params)
  new_mask = pruning.prune(pruning.magnitude_scores(params), mask, prunable, 0.2, layer_fractions={'output': 0.1})
  # dense_0: 300 - round(60) ; dense_1: 150 - round(30) ; output: 30 - round(3).
  assert kernel_counts(new_mask) == {'dense_0': 240, 'dense_1': 120, 'output': 27}


def test_layer_fractions_prefix_applies_to_every_numbered_layer():
  rng = np.random.default_rng(4)
  params = random_tree(rng)
  mask, prunable = masks.ones_like(params), masks.prunable_tree(params)
  new_mask = pruning.prune(pruning.magnitude_scores(params), mask, prunable, 0.5, layer_fractions={'dense': 0.1})
  assert kernel_counts(new_mask) == {'dense_0': 270, 'dense_1': 135, 'output': 15}


def test_fraction_for_layer_matching_rules():
  overrides = {'output': 0.1, 'conv': 0.3, 'dense_1': 0.4}
  assert pruning.fraction_for_layer('output', 0.2, overrides) == 0.1
  assert pruning.fraction_for_layer('conv_0', 0.2, overrides) == 0.3
  assert pruning.fraction_for_layer('conv_12', 0.2, overrides) == 0.3
  assert pruning.fraction_for_layer('dense_1', 0.2, overrides) == 0.4
  # No partial-name matches: a key must be the name or a prefix followed by '_'.
  assert pruning.fraction_for_layer('dense_10', 0.2, overrides) == 0.2
  assert pruning.fraction_for_layer('convex_0', 0.2, overrides) == 0.2
  assert pruning.fraction_for_layer('outputs', 0.2, overrides) == 0.2
  assert pruning.fraction_for_layer('dense_0', 0.2, {}) == 0.2
  assert isinstance(pruning.fraction_for_layer('output', 1, {'x': 1}), float)


def test_min_weights_per_layer_is_a_floor():
  rng = np.random.default_rng(5)
  params = {
      'small': {'kernel': rng.normal(size=(2, 5)).astype(np.float32)},
      'large': {'kernel': rng.normal(size=(10, 10)).astype(np.float32)},
  }
  mask, prunable = masks.ones_like(params), masks.prunable_tree(params)
  scores = pruning.magnitude_scores(params)
  # 0.9 of 10 would leave 1; the floor keeps 3 (the 3 largest). The large layer is above the floor.
  mask = pruning.prune(scores, mask, prunable, 0.9, min_weights_per_layer=3)
  assert kernel_counts(mask) == {'small': 3, 'large': 10}
  small = np.abs(params['small']['kernel']).reshape(-1)
  np.testing.assert_array_equal(np.sort(np.flatnonzero(mask['small']['kernel'])), np.sort(np.argsort(small)[-3:]))
  # Further levels never go below the floor (and never raise).
  for _ in range(3):
    mask = pruning.prune(scores, mask, prunable, 0.9, min_weights_per_layer=3)
  assert kernel_counts(mask) == {'small': 3, 'large': 3}


def test_count_to_prune():
  assert pruning.count_to_prune(10, 0.25) == 2  # round(2.5) = 2, half to even
  assert pruning.count_to_prune(10, 0.35) == round(0.35 * 10)
  assert pruning.count_to_prune(10, 0.9, min_remaining=3) == 7
  assert pruning.count_to_prune(2, 0.9, min_remaining=3) == 0  # already below the floor: prune nothing
  assert pruning.count_to_prune(0, 0.5) == 0


# ----------------------------------------------------------------------------------------------
# permute_within_layers


def test_permute_within_layers_keeps_counts_and_non_prunable_leaves():
  rng = np.random.default_rng(6)
  params = random_tree(rng)
  prunable = masks.prunable_tree(params)
  mask = pruning.prune(
      pruning.magnitude_scores(params), masks.ones_like(params), prunable, 0.6, layer_fractions={'output': 0.3}
  )
  # A non-prunable mask leaf with a False entry: a permutation would move it.
  bias_mask = np.ones(15, bool)
  bias_mask[0] = False
  mask['dense_0']['bias'] = bias_mask
  permuted = pruning.permute_within_layers(mask, prunable, seed=0)
  assert masks.count_per_layer(permuted, prunable) == masks.count_per_layer(mask, prunable)
  np.testing.assert_array_equal(permuted['dense_0']['bias'], bias_mask)
  for name in ('dense_1', 'output'):
    np.testing.assert_array_equal(permuted[name]['bias'], mask[name]['bias'])
  for name in ('dense_0', 'dense_1', 'output'):
    assert permuted[name]['kernel'].shape == mask[name]['kernel'].shape
    assert permuted[name]['kernel'].dtype == bool
    assert not np.array_equal(permuted[name]['kernel'], mask[name]['kernel']), name


def test_permute_within_layers_is_deterministic_for_a_seed():
  rng = np.random.default_rng(7)
  params = random_tree(rng)
  prunable = masks.prunable_tree(params)
  mask = pruning.prune(pruning.magnitude_scores(params), masks.ones_like(params), prunable, 0.5)
  first = pruning.permute_within_layers(mask, prunable, seed=11)
  jax.tree_util.tree_map(np.testing.assert_array_equal, pruning.permute_within_layers(mask, prunable, seed=11), first)
  other = pruning.permute_within_layers(mask, prunable, seed=12)
  assert not np.array_equal(other['dense_0']['kernel'], first['dense_0']['kernel'])


# ----------------------------------------------------------------------------------------------
# Schedules


@pytest.mark.parametrize('target, levels', [(0.5, 1), (0.2, 5), (0.01, 10), (0.035, 7), (1.0, 3)])
def test_per_level_fraction_compounds_to_the_target(target, levels):
  fraction = pruning.per_level_fraction(target, levels)
  assert 0.0 <= fraction < 1.0
  assert (1.0 - fraction) ** levels == pytest.approx(target, rel=1e-12)


@pytest.mark.parametrize('target, levels', [(0.0, 3), (-0.1, 3), (1.5, 3), (0.5, 0), (0.5, -1)])
def test_per_level_fraction_rejects_bad_arguments(target, levels):
  with pytest.raises(ValueError):
    pruning.per_level_fraction(target, levels)


@pytest.mark.parametrize('scope', ['local', 'global'])
def test_planned_counts_match_repeated_pruning(scope):
  """The plan, made without weights, equals the surviving count of real pruning at every level."""
  fraction, levels, layer_fractions, floor = 0.3, 8, {'output': 0.15}, 20
  rng = np.random.default_rng(8)
  params = random_tree(rng)
  prunable = masks.prunable_tree(params)
  sizes = {name: layer['kernel'].size for name, layer in params.items()}
  plan = pruning.planned_counts(
      sizes, fraction, levels, scope=scope, layer_fractions=layer_fractions, min_weights_per_layer=floor
  )
  assert len(plan) == levels + 1 and plan[0] == 480
  mask = masks.ones_like(params)
  actual = [480]
  for _ in range(levels):
    params = random_tree(rng, scales={'output': 0.01})  # new weights each level, as after training
    mask = pruning.prune(
        pruning.magnitude_scores(params),
        mask,
        prunable,
        fraction,
        scope=scope,
        layer_fractions=layer_fractions,
        min_weights_per_layer=floor,
    )
    actual.append(sum(kernel_counts(mask).values()))
  assert plan == actual
  assert all(later < earlier for earlier, later in zip(actual, actual[1:]))


def test_planned_counts_by_hand():
  # local: dense_0 100 -> 80 -> 64; output (at 0.1) 10 -> 9 (round(1.0)) -> 8 (round(0.9) = 1).
  assert pruning.planned_counts({'dense_0': 100, 'output': 10}, 0.2, 2, layer_fractions={'output': 0.1}) == [
      110,
      89,
      72,
  ]
  # global: 110 -> 88 -> 70 (round(17.6) = 18).
  assert pruning.planned_counts({'dense_0': 100, 'output': 10}, 0.2, 2, scope='global') == [110, 88, 70]
  assert pruning.planned_counts({'dense_0': 100}, 0.2, 0) == [100]


def test_one_shot_fractions_compound_the_iterative_fractions():
  fraction, overrides = pruning.one_shot_fractions(0.2, {'output': 0.1}, 3)
  assert fraction == pytest.approx(1 - 0.8**3)
  assert overrides == {'output': pytest.approx(1 - 0.9**3)}
  assert pruning.one_shot_fractions(0.2, {'output': 0.1}, 1) == (pytest.approx(0.2), {'output': pytest.approx(0.1)})
  assert pruning.one_shot_fractions(0.2, {}, 0) == (0.0, {})


def test_one_shot_reaches_the_density_of_the_iterative_schedule():
  """Pruning once with the compounded fraction leaves (1 - p)^n of the weights, like n levels would."""
  sizes = {'dense_0': 10000, 'output': 1000}
  levels = 5
  fraction, overrides = pruning.one_shot_fractions(0.2, {'output': 0.1}, levels)
  one_shot = pruning.planned_counts(sizes, fraction, 1, layer_fractions=overrides)[-1]
  expected = 10000 * 0.8**levels + 1000 * 0.9**levels
  assert abs(one_shot - expected) <= 1
  iterative = pruning.planned_counts(sizes, 0.2, levels, layer_fractions={'output': 0.1})[-1]
  assert abs(one_shot - iterative) <= levels  # only per-level rounding separates them
  assert math.isclose(one_shot, iterative, rel_tol=1e-3)


# ----------------------------------------------------------------------------------------------
# Criteria: the registry, magnitude and snip, a level's mask


def _two_layer_net(rng):
  """A 3-4-2 tanh net (kernels and biases) and a batch of 5 examples for a squared-error loss."""
  params = {
      'dense_0': {'kernel': rng.normal(size=(3, 4)).astype(np.float32), 'bias': rng.normal(size=4).astype(np.float32)},
      'output': {'kernel': rng.normal(size=(4, 2)).astype(np.float32), 'bias': rng.normal(size=2).astype(np.float32)},
  }
  inputs, targets = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(5, 2)).astype(np.float32)
  return params, inputs, targets


def _numpy_kernel_gradients(params, inputs, targets):
  """Backpropagation by hand of mean((tanh(x W0 + b0) W1 + b1 - y)^2) / 2 to both kernels."""
  hidden = np.tanh(inputs @ params['dense_0']['kernel'] + params['dense_0']['bias'])
  residual = (hidden @ params['output']['kernel'] + params['output']['bias'] - targets) / targets.size
  hidden_gradient = (residual @ params['output']['kernel'].T) * (1.0 - hidden**2)
  return inputs.T @ hidden_gradient, hidden.T @ residual


def test_built_in_criteria_are_registered_and_looked_up_by_name():
  assert {'magnitude', 'snip'} <= set(pruning.CRITERIA)
  assert pruning.criterion('magnitude') is pruning.magnitude
  assert pruning.criterion('snip') is pruning.snip
  with pytest.raises(KeyError, match="unknown pruning criterion 'grasp'; known criteria: magnitude, snip"):
    pruning.criterion('grasp')


def test_register_adds_a_criterion_and_refuses_duplicates_and_non_callables(monkeypatch):
  monkeypatch.setattr(pruning, 'CRITERIA', dict(pruning.CRITERIA))

  def negative_magnitude(inputs):
    return jax.tree_util.tree_map(lambda weight: -np.abs(weight), inputs.params)

  pruning.register('negative_magnitude', negative_magnitude)
  assert pruning.criterion('negative_magnitude') is negative_magnitude
  with pytest.raises(ValueError, match="'negative_magnitude' is already registered"):
    pruning.register('negative_magnitude', pruning.magnitude)
  with pytest.raises(ValueError, match="'magnitude' is already registered"):
    pruning.register('magnitude', negative_magnitude)
  with pytest.raises(TypeError, match="'scores' must be callable"):
    pruning.register('scores', {'dense_0': 1.0})
  assert pruning.criterion('magnitude') is pruning.magnitude  # the built-in is untouched


def test_magnitude_criterion_scores_the_weights_and_never_asks_for_gradients():
  params, _, _ = _two_layer_net(np.random.default_rng(0))

  def no_gradients(unused_params):
    raise AssertionError('magnitude pruning computed gradients')

  inputs = pruning.CriterionInputs(params, masks.ones_like(params), masks.prunable_tree(params), no_gradients)
  scores = pruning.criterion('magnitude')(inputs)
  np.testing.assert_array_equal(scores['output']['kernel'], np.abs(params['output']['kernel']))


def test_snip_criterion_matches_a_numpy_reference_on_a_two_layer_net():
  params, inputs, targets = _two_layer_net(np.random.default_rng(1))

  def loss(tree):
    hidden = jnp.tanh(inputs @ tree['dense_0']['kernel'] + tree['dense_0']['bias'])
    return 0.5 * jnp.mean((hidden @ tree['output']['kernel'] + tree['output']['bias'] - targets) ** 2)

  asked = []

  def loss_gradients(at):
    asked.append(at)
    return jax.tree_util.tree_map(np.asarray, jax.grad(loss)(at))

  criterion_inputs = pruning.CriterionInputs(
      params, masks.ones_like(params), masks.prunable_tree(params), loss_gradients
  )
  scores = pruning.criterion('snip')(criterion_inputs)
  assert len(asked) == 1 and asked[0] is params  # the gradient at the weights the level prunes from
  hidden_gradient, output_gradient = _numpy_kernel_gradients(params, inputs, targets)
  np.testing.assert_allclose(
      scores['dense_0']['kernel'], np.abs(hidden_gradient * params['dense_0']['kernel']), rtol=1e-5
  )
  np.testing.assert_allclose(
      scores['output']['kernel'], np.abs(output_gradient * params['output']['kernel']), rtol=1e-5
  )
  assert not np.allclose(scores['output']['kernel'], np.abs(params['output']['kernel']))


def test_snip_criterion_without_gradients_says_so():
  params, _, _ = _two_layer_net(np.random.default_rng(2))
  with pytest.raises(ValueError, match="the 'snip' criterion needs loss gradients"):
    pruning.snip(pruning.CriterionInputs(params, masks.ones_like(params), masks.prunable_tree(params)))


@dataclasses.dataclass(frozen=True)
class _Rule:
  mode: str = 'iterative'
  scope: str = 'local'
  fraction: float = 0.5
  layer_fractions: Mapping[str, float] = dataclasses.field(default_factory=dict)
  min_weights_per_layer: int = 0
  structure: str = 'unstructured'


def test_next_mask_prunes_the_lowest_scores_iteratively_or_in_one_shot():
  rng = np.random.default_rng(3)
  ticket, dense = random_tree(rng), random_tree(rng)
  prunable = masks.prunable_tree(ticket)
  keep = pruning.prune(pruning.magnitude_scores(dense), masks.ones_like(dense), prunable, 0.5)
  iterative = pruning.level_inputs('iterative', ticket, keep, dense, prunable)
  assert iterative.params is ticket and iterative.keep_mask is keep
  mask = pruning.next_mask(_Rule(), 2, pruning.magnitude(iterative), keep, prunable)
  # round(0.5 * remaining) of 150, 75, 15 pruned (round half to even: 38 of 75, 8 of 15)
  assert kernel_counts(mask) == {'dense_0': 75, 'dense_1': 37, 'output': 7}
  assert not np.any(np.asarray(mask['dense_0']['kernel']) & ~keep['dense_0']['kernel'])  # never revived
  one_shot = pruning.level_inputs('one_shot', ticket, keep, dense, prunable)
  assert one_shot.params is dense and all(np.all(leaf) for leaf in jax.tree_util.tree_leaves(one_shot.keep_mask))
  mask = pruning.next_mask(_Rule(mode='one_shot'), 2, pruning.magnitude(one_shot), keep, prunable)
  # 1 - 0.5^2 = 0.75 of 300, 150, 30 pruned in one step: 225, 112, 22
  assert kernel_counts(mask) == {'dense_0': 75, 'dense_1': 38, 'output': 8}
  np.testing.assert_array_equal(
      mask['dense_0']['kernel'],
      pruning.prune(pruning.magnitude_scores(dense), masks.ones_like(dense), prunable, 0.75)['dense_0']['kernel'],
  )
  with pytest.raises(ValueError, match="pruning mode must be one of \\('iterative', 'one_shot'\\), got 'gradual'"):
    pruning.next_mask(_Rule(mode='gradual'), 1, pruning.magnitude(iterative), keep, prunable)

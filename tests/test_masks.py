"""Tests for lth_jax.masks: prunable leaves, all-ones masks, applying masks and density bookkeeping."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import masks


def flax_like_params():
  """A hand-made tree shaped like flax params: conv, dense and norm layers with kernels and biases."""
  rng = np.random.default_rng(0)

  def normal(*shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)

  return {
      'conv_0': {'kernel': normal(3, 3, 1, 2), 'bias': normal(2)},
      'conv_1': {'kernel': normal(3, 3, 2, 2), 'bias': normal(2)},
      'norm_0': {'scale': normal(2), 'bias': normal(2)},
      'dense_0': {'kernel': normal(8, 4), 'bias': normal(4)},
      'dense_1': {'kernel': normal(4, 4), 'bias': normal(4)},
      'dense_10': {'kernel': normal(4, 4), 'bias': normal(4)},
      'output': {'kernel': normal(4, 3), 'bias': normal(3)},
  }


def prunable_names(prunable):
  """The '/'-joined names of the leaves flagged True."""
  flat, _ = jax.tree_util.tree_flatten_with_path(prunable)
  return {masks.leaf_name(masks.path_to_names(path)) for path, flag in flat if flag}


ALL_KERNELS = {'conv_0/kernel', 'conv_1/kernel', 'dense_0/kernel', 'dense_1/kernel', 'dense_10/kernel', 'output/kernel'}


# ----------------------------------------------------------------------------------------------
# prunable_tree


def test_prunable_tree_flags_kernels_but_not_biases_or_norms():
  prunable = masks.prunable_tree(flax_like_params())
  assert jax.tree_util.tree_structure(prunable) == jax.tree_util.tree_structure(flax_like_params())
  assert all(isinstance(flag, bool) for flag in jax.tree_util.tree_leaves(prunable))
  assert prunable_names(prunable) == ALL_KERNELS
  assert prunable['dense_0']['bias'] is False
  assert prunable['norm_0']['scale'] is False


@pytest.mark.parametrize(
    'excluded, expected_excluded',
    [
        (('output',), {'output/kernel'}),
        (('conv_0',), {'conv_0/kernel'}),
        # A prefix excludes every numbered layer of that family: 'conv' -> conv_0, conv_1.
        (('conv',), {'conv_0/kernel', 'conv_1/kernel'}),
        (('conv', 'output'), {'conv_0/kernel', 'conv_1/kernel', 'output/kernel'}),
        # 'dense_1' is a full name: it must not also swallow 'dense_10'.
        (('dense_1',), {'dense_1/kernel'}),
    ],
)
def test_prunable_tree_excluded_layers_by_name_and_prefix(excluded, expected_excluded):
  prunable = masks.prunable_tree(flax_like_params(), excluded_layers=excluded)
  assert prunable_names(prunable) == ALL_KERNELS - expected_excluded


def test_an_excluded_layer_selector_that_matches_nothing_is_refused():
  # A plain string prefix without the '_' separator selects no layer.
  with pytest.raises(ValueError, match='excluded_layers names no layer of these parameters: con, dens, out'):
    masks.prunable_tree(flax_like_params(), excluded_layers=('con', 'dens', 'out'))


def test_prunable_tree_custom_parameter_names():
  prunable = masks.prunable_tree(
      flax_like_params(), prunable_parameter_names=('kernel', 'scale'), excluded_layers=('conv',)
  )
  assert prunable_names(prunable) == (ALL_KERNELS - {'conv_0/kernel', 'conv_1/kernel'}) | {'norm_0/scale'}


def test_prunable_tree_accepts_shape_structs():
  """Works on `jax.eval_shape` output (no arrays needed to plan pruning)."""
  shapes = jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), flax_like_params())
  assert masks.prunable_tree(shapes) == masks.prunable_tree(flax_like_params())


# ----------------------------------------------------------------------------------------------
# ones_like and apply


def test_ones_like_is_all_true_with_matching_shapes():
  params = flax_like_params()
  mask = masks.ones_like(params)
  chex.assert_trees_all_equal_shapes(mask, params)
  for leaf in jax.tree_util.tree_leaves(mask):
    assert leaf.dtype == jnp.bool_
    assert bool(jnp.all(leaf))
  # Shape structs work too.
  shapes = jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), params)
  chex.assert_trees_all_equal(masks.ones_like(shapes), mask)


def test_apply_zeroes_masked_entries_exactly_and_keeps_the_rest():
  params = flax_like_params()
  rng = np.random.default_rng(1)
  mask = jax.tree_util.tree_map(lambda leaf: rng.random(leaf.shape) < 0.5, params)
  masked = masks.apply(params, mask)
  chex.assert_trees_all_equal_shapes_and_dtypes(masked, params)
  for weight, keep, result in zip(*map(jax.tree_util.tree_leaves, (params, mask, masked))):
    weight, result = np.asarray(weight), np.asarray(result)
    assert np.all(result[~keep] == 0.0)
    np.testing.assert_array_equal(result[keep], weight[keep])  # bit-identical, not multiplied


def test_apply_zeroes_even_non_finite_masked_weights():
  """A masked entry is replaced, not multiplied by 0 (inf * 0 would be nan)."""
  params = {'dense_0': {'kernel': jnp.array([[jnp.inf, -jnp.inf], [jnp.nan, 2.0]])}}
  mask = {'dense_0': {'kernel': np.array([[False, False], [False, True]])}}
  np.testing.assert_array_equal(masks.apply(params, mask)['dense_0']['kernel'], [[0.0, 0.0], [0.0, 2.0]])


def test_apply_with_ones_like_is_identity():
  params = flax_like_params()
  chex.assert_trees_all_equal(masks.apply(params, masks.ones_like(params)), params)


# ----------------------------------------------------------------------------------------------
# density, density_per_layer, count_per_layer, nonzero_count


def small_tree():
  """Two prunable kernels (20 and 10 weights) and two biases, with a mask keeping 5 + 10 kernels."""
  params = {
      'dense_0': {'kernel': jnp.arange(1.0, 21.0).reshape(4, 5), 'bias': jnp.ones(5)},
      'output': {'kernel': jnp.arange(1.0, 11.0).reshape(5, 2), 'bias': jnp.ones(2)},
  }
  keep_dense = np.zeros((4, 5), bool)
  keep_dense.flat[[0, 3, 7, 12, 19]] = True
  mask = {
      'dense_0': {'kernel': keep_dense, 'bias': np.array([True, False, False, False, False])},
      'output': {'kernel': np.ones((5, 2), bool), 'bias': np.zeros(2, bool)},
  }
  return params, mask


def test_density_counts_only_prunable_leaves():
  params, mask = small_tree()
  prunable = masks.prunable_tree(params)
  # Biases are masked half-way, but they are not prunable and must not count.
  assert masks.density(mask, prunable) == pytest.approx(15 / 30)
  assert masks.density_per_layer(mask, prunable) == {'dense_0/kernel': 0.25, 'output/kernel': 1.0}
  assert masks.count_per_layer(mask, prunable) == {'dense_0/kernel': 5, 'output/kernel': 10}


def test_density_of_all_ones_and_of_nothing_prunable():
  params, _ = small_tree()
  prunable = masks.prunable_tree(params)
  assert masks.density(masks.ones_like(params), prunable) == 1.0
  nothing = masks.prunable_tree(params, excluded_layers=('dense', 'output'))
  assert masks.density(masks.ones_like(params), nothing) == 1.0
  assert masks.density_per_layer(masks.ones_like(params), nothing) == {}
  assert masks.count_per_layer(masks.ones_like(params), nothing) == {}


def test_density_respects_excluded_layers():
  params, mask = small_tree()
  prunable = masks.prunable_tree(params, excluded_layers=('output',))
  assert masks.density(mask, prunable) == pytest.approx(5 / 20)
  assert masks.count_per_layer(mask, prunable) == {'dense_0/kernel': 5}


def test_nonzero_count_counts_prunable_nonzero_weights():
  params, mask = small_tree()
  prunable = masks.prunable_tree(params)
  assert masks.nonzero_count(params, prunable) == 30  # arange from 1: no zeros; biases ignored
  assert masks.nonzero_count(masks.apply(params, mask), prunable) == 15
  # A weight that is zero but kept counts as zero: nonzero_count measures the weights, not the mask.
  params['output']['kernel'] = params['output']['kernel'].at[0, 0].set(0.0)
  assert masks.nonzero_count(masks.apply(params, mask), prunable) == 14


def test_to_numpy_flattens_by_leaf_name():
  params, mask = small_tree()
  flat = masks.to_numpy(mask)
  assert set(flat) == {'dense_0/kernel', 'dense_0/bias', 'output/kernel', 'output/bias'}
  np.testing.assert_array_equal(flat['dense_0/kernel'], mask['dense_0']['kernel'])
  assert flat['output/bias'].dtype == bool

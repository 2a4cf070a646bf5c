"""Pruning at initialization: GraSP, SynFlow and magnitude at init against numpy references on a 2-layer net,
the ticket-sized selection (global and layerwise), and the shuffled and reinitialized ablations."""

import chex
import jax
import numpy as np
import pytest

from lth_jax import branches as branches_lib
from lth_jax import config as config_lib
from lth_jax import data as data_lib
from lth_jax import init_pruning
from lth_jax import masks as masks_lib
from lth_jax import models as models_lib
from lth_jax import optim
from lth_jax import pruning
from lth_jax.data import arrays
from lth_jax.training import parallel
from lth_jax.training import trainer as trainer_lib
from tests import helpers

DATA_SEED, NUM_BATCHES = 9, 2


@pytest.fixture(scope='module')
def two_layer_trainer():
  """A trainer of a 64-12-10 ReLU net (kernels and biases) on the sklearn digits."""
  config = helpers.tiny_config(model__hidden_sizes=(12,))
  dataset = data_lib.build(config_lib.data_spec(config.dataset))
  model = models_lib.build(config_lib.model_spec(config.model), dataset.num_outputs)
  return trainer_lib.Trainer(model, dataset, optim.from_config(config.training, 60), parallel.create_mesh(), 32, 8)


def _float64(tree):
  return jax.tree_util.tree_map(lambda leaf: np.asarray(leaf, np.float64), tree)


def _numpy_loss_gradient(params, inputs, labels):
  """Backpropagation by hand of the mean softmax cross-entropy of relu(x W0 + b0) W1 + b1."""
  inputs = inputs.reshape(len(inputs), -1).astype(np.float64)
  hidden_0, output = params['dense_0'], params['output']
  before = inputs @ hidden_0['kernel'] + hidden_0['bias']
  hidden = np.maximum(before, 0.0)
  logits = hidden @ output['kernel'] + output['bias']
  probabilities = np.exp(logits - logits.max(1, keepdims=True))
  probabilities /= probabilities.sum(1, keepdims=True)
  delta = (probabilities - np.eye(logits.shape[1])[labels]) / len(inputs)
  hidden_delta = (delta @ output['kernel'].T) * (before > 0)
  return {
      'dense_0': {'kernel': inputs.T @ hidden_delta, 'bias': hidden_delta.sum(0)},
      'output': {'kernel': hidden.T @ delta, 'bias': delta.sum(0)},
  }


def _numpy_mean_gradient(params, dataset):
  batches = arrays.batch_indices(DATA_SEED, 0, NUM_BATCHES, dataset.num_train, 32)
  gradients = [_numpy_loss_gradient(params, dataset.train_inputs[b], dataset.train_targets[b]) for b in batches]
  return jax.tree_util.tree_map(lambda *leaves: sum(leaves) / len(leaves), *gradients)


def _numpy_hessian_gradient(params, dataset, step=1e-5):
  """H g by central differences of the numpy gradient along g (float64)."""
  params = _float64(params)
  gradient = _numpy_mean_gradient(params, dataset)
  plus = _numpy_mean_gradient(jax.tree_util.tree_map(lambda w, g: w + step * g, params, gradient), dataset)
  minus = _numpy_mean_gradient(jax.tree_util.tree_map(lambda w, g: w - step * g, params, gradient), dataset)
  return jax.tree_util.tree_map(lambda a, b: (a - b) / (2 * step), plus, minus), gradient


def _numpy_synflow_gradient(params):
  """dR/dw at |w| for R = sum(relu(1 |W0| + |b0|) |W1| + |b1|), by hand."""
  hidden_0, output = _float64(jax.tree_util.tree_map(np.abs, params)).values()
  hidden = np.ones(hidden_0['kernel'].shape[0]) @ hidden_0['kernel'] + hidden_0['bias']
  downstream = output['kernel'].sum(1) * (hidden > 0)
  return {
      'dense_0': {'kernel': np.outer(np.ones(hidden_0['kernel'].shape[0]), downstream), 'bias': downstream},
      'output': {'kernel': np.outer(np.maximum(hidden, 0.0), np.ones(output['kernel'].shape[1])), 'bias': np.ones(10)},
  }


def _inputs(trainer, keep_fraction=0.2, at_init_scope='global', synflow_rounds=100, seed=4):
  params, model_state = trainer.init_variables(0)
  prunable = masks_lib.prunable_tree(params)
  ticket_mask = pruning.prune(
      pruning.magnitude_scores(params), masks_lib.ones_like(params), prunable, 1 - keep_fraction
  )
  return branches_lib.BranchInputs(
      ticket_mask=ticket_mask,
      rewind_params=params,
      rewind_model_state=model_state,
      prunable=prunable,
      init_variables=trainer.init_variables,
      seed=seed,
      structure='unstructured',
      layer_fractions={},
      at_init_scope=at_init_scope,
      synflow_rounds=synflow_rounds,
      loss_gradients=lambda p, s: trainer.mean_gradients(p, s, DATA_SEED, NUM_BATCHES),
      hessian_gradient=lambda p, s: trainer.hessian_gradient(p, s, DATA_SEED, NUM_BATCHES),
      synflow_gradients=trainer.synflow_gradients,
  )


def _prunable_leaves(tree, prunable):
  return [leaf for leaf, flag in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(prunable)) if flag]


def _assert_keeps_the_highest(reference_scores, keep_mask, prunable, tolerance):
  """Every kept weight's reference score is at least every pruned one's, up to `tolerance`."""
  kept = np.concatenate(
      [s[k] for s, k in zip(_prunable_leaves(reference_scores, prunable), _prunable_leaves(keep_mask, prunable))]
  )
  pruned = np.concatenate(
      [s[~k] for s, k in zip(_prunable_leaves(reference_scores, prunable), _prunable_leaves(keep_mask, prunable))]
  )
  assert kept.min() >= pruned.max() - tolerance


def _kept(keep_mask, prunable):
  return sum(masks_lib.count_per_layer(keep_mask, prunable).values())


def test_hessian_gradient_matches_central_differences_of_a_numpy_gradient(two_layer_trainer):
  params, _ = two_layer_trainer.init_variables(0)
  expected, gradient = _numpy_hessian_gradient(params, two_layer_trainer.dataset)
  actual = two_layer_trainer.hessian_gradient(params, {}, DATA_SEED, NUM_BATCHES)
  for leaf, reference in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(leaf, reference, rtol=1e-3, atol=1e-4 * np.abs(reference).max())
  # H g is not g: the product carries the curvature.
  assert not np.allclose(actual['dense_0']['kernel'], gradient['dense_0']['kernel'], rtol=0.1)


def test_grasp_keeps_the_largest_weight_times_hessian_gradient_of_the_reference(two_layer_trainer):
  inputs = _inputs(two_layer_trainer)
  params, _, keep_mask = branches_lib.start('grasp', inputs)
  product, _ = _numpy_hessian_gradient(inputs.rewind_params, two_layer_trainer.dataset)
  reference = jax.tree_util.tree_map(lambda w, hg: np.asarray(w, np.float64) * hg, inputs.rewind_params, product)
  assert _kept(keep_mask, inputs.prunable) == _kept(inputs.ticket_mask, inputs.prunable)
  scale = max(np.abs(leaf).max() for leaf in _prunable_leaves(reference, inputs.prunable))
  _assert_keeps_the_highest(reference, keep_mask, inputs.prunable, 1e-3 * scale)
  # Signed: GraSP removes the largest -w (H g), not the smallest |w (H g)|.
  by_magnitude = init_pruning.select(
      jax.tree_util.tree_map(np.abs, reference),
      masks_lib.ones_like(keep_mask),
      inputs.prunable,
      inputs.ticket_mask,
      'global',
  )
  assert not np.array_equal(keep_mask['dense_0']['kernel'], by_magnitude['dense_0']['kernel'])
  np.testing.assert_array_equal(params['dense_0']['kernel'][~keep_mask['dense_0']['kernel']], 0.0)


def test_synflow_gradients_match_the_numpy_reference_at_a_masked_net(two_layer_trainer):
  params, _ = two_layer_trainer.init_variables(0)
  rng = np.random.default_rng(0)
  keep_mask = jax.tree_util.tree_map(lambda leaf: rng.random(np.shape(leaf)) > 0.5, params)
  keep_mask['dense_0']['kernel'][:, 0] = False  # a hidden unit with no input left: its flow is zero
  masked = masks_lib.apply(params, keep_mask)
  actual = two_layer_trainer.synflow_gradients(masked, {})
  expected = _numpy_synflow_gradient(masked)
  for leaf, reference in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(leaf, reference, rtol=1e-5, atol=1e-6)


def _numpy_iterative_synflow(params, ticket_mask, rounds):
  """Tanaka et al.'s Algorithm 1 by hand: score the masked weights, keep the best N (c / N)^(k / n) globally."""
  keys = [('dense_0', 'kernel'), ('output', 'kernel')]
  sizes = [params[a][b].size for a, b in keys]
  total, ticket = sum(sizes), sum(int(ticket_mask[a][b].sum()) for a, b in keys)
  keep = [np.ones(size, bool) for size in sizes]
  for k in range(1, rounds + 1):
    mask = masks_lib.ones_like(params)
    for (a, b), flat in zip(keys, keep):
      mask[a][b] = flat.reshape(params[a][b].shape)
    masked = masks_lib.apply(params, mask)
    gradient = _numpy_synflow_gradient(masked)
    scores = np.concatenate(
        [np.abs(masked[a][b] * gradient[a][b].astype(np.float32)).reshape(-1) for a, b in keys]
    ).astype(np.float32)
    scores[~np.concatenate(keep)] = -np.inf
    count = int(np.round(total * (ticket / total) ** (k / rounds)))
    survivors = np.zeros(total, bool)
    survivors[np.argsort(scores, kind='stable')[total - count :]] = True
    keep = np.split(survivors, np.cumsum(sizes)[:-1])
  return {a: flat.reshape(params[a][b].shape) for (a, b), flat in zip(keys, keep)}


def test_iterative_synflow_follows_the_numpy_algorithm_and_never_revives_a_weight(two_layer_trainer):
  inputs = _inputs(two_layer_trainer, keep_fraction=0.1)
  seen = []

  def gradients(masked):
    seen.append(masked)
    return jax.tree_util.tree_map(lambda g: g.astype(np.float32), _numpy_synflow_gradient(masked))

  keep_mask = init_pruning.iterative_synflow(
      inputs.rewind_params, inputs.prunable, inputs.ticket_mask, 'global', 7, gradients
  )
  expected = _numpy_iterative_synflow(inputs.rewind_params, inputs.ticket_mask, 7)
  np.testing.assert_array_equal(keep_mask['dense_0']['kernel'], expected['dense_0'])
  np.testing.assert_array_equal(keep_mask['output']['kernel'], expected['output'])
  assert len(seen) == 7
  for earlier, later in zip(seen, seen[1:]):  # each round scores a subset of the previous round's weights
    kernel_earlier, kernel_later = earlier['dense_0']['kernel'], later['dense_0']['kernel']
    assert np.all(kernel_earlier[kernel_later != 0] != 0)
  one_shot = init_pruning.iterative_synflow(
      inputs.rewind_params, inputs.prunable, inputs.ticket_mask, 'global', 1, gradients
  )
  assert not np.array_equal(one_shot['dense_0']['kernel'], keep_mask['dense_0']['kernel'])


def test_synflow_branch_is_data_free_and_as_large_as_the_ticket(two_layer_trainer):
  inputs = _inputs(two_layer_trainer, keep_fraction=0.1, synflow_rounds=20)
  no_data = branches_lib.BranchInputs(**{**inputs.__dict__, 'loss_gradients': None, 'hessian_gradient': None})
  params, _, keep_mask = branches_lib.start('synflow', no_data)
  assert _kept(keep_mask, inputs.prunable) == _kept(inputs.ticket_mask, inputs.prunable)
  expected = _numpy_iterative_synflow(inputs.rewind_params, inputs.ticket_mask, 20)
  agreement = np.mean(keep_mask['dense_0']['kernel'] == expected['dense_0'])
  assert agreement > 0.99  # the device's float32 gradients against the reference: at most a few near-ties
  np.testing.assert_array_equal(params['output']['kernel'][~keep_mask['output']['kernel']], 0.0)


def test_magnitude_at_init_keeps_the_largest_initial_weights_globally_or_per_layer(two_layer_trainer):
  inputs = _inputs(two_layer_trainer)
  _, _, keep_mask = branches_lib.start('magnitude_at_init', inputs)
  magnitudes = jax.tree_util.tree_map(lambda w: np.abs(np.asarray(w, np.float64)), inputs.rewind_params)
  _assert_keeps_the_highest(magnitudes, keep_mask, inputs.prunable, 0.0)
  assert _kept(keep_mask, inputs.prunable) == _kept(inputs.ticket_mask, inputs.prunable)
  layerwise = branches_lib.BranchInputs(**{**inputs.__dict__, 'at_init_scope': 'layerwise'})
  _, _, layer_mask = branches_lib.start('magnitude_at_init', layerwise)
  assert masks_lib.count_per_layer(layer_mask, inputs.prunable) == masks_lib.count_per_layer(
      inputs.ticket_mask, inputs.prunable
  )
  for layer in ('dense_0', 'output'):
    kernel, keep = magnitudes[layer]['kernel'], layer_mask[layer]['kernel']
    assert kernel[keep].min() >= kernel[~keep].max()


def test_select_shrinks_exponentially_with_progress_and_never_revives():
  scores = {'a': np.arange(10.0), 'b': np.arange(10.0)[::-1].copy()}
  prunable = {'a': True, 'b': True}
  ticket = {'a': np.arange(10) < 2, 'b': np.arange(10) < 4}  # 6 of 20 in all
  full = masks_lib.ones_like(ticket)
  half = init_pruning.select(scores, full, prunable, ticket, 'global', 0.5)
  assert sum(int(leaf.sum()) for leaf in jax.tree_util.tree_leaves(half)) == round(20 * 0.3**0.5)
  layerwise = init_pruning.select(scores, full, prunable, ticket, 'layerwise', 1.0)
  np.testing.assert_array_equal(layerwise['a'], np.arange(10) >= 8)
  np.testing.assert_array_equal(layerwise['b'], np.arange(10) < 4)
  survivors = {'a': np.arange(10) < 5, 'b': np.ones(10, bool)}
  narrowed = init_pruning.select(scores, survivors, prunable, ticket, 'layerwise', 1.0)
  np.testing.assert_array_equal(narrowed['a'], (np.arange(10) >= 3) & (np.arange(10) < 5))
  with pytest.raises(ValueError, match="scope must be one of \\('global', 'layerwise'\\), got 'local'"):
    init_pruning.select(scores, full, prunable, ticket, 'local')


def test_every_method_has_a_shuffled_and_a_reinitialized_ablation(two_layer_trainer):
  for method in ('snip', 'grasp', 'synflow', 'magnitude_at_init'):
    assert {method, f'{method}_shuffled', f'{method}_reinit'} <= set(branches_lib.REGISTRY)
  inputs = _inputs(two_layer_trainer, synflow_rounds=5)
  _, _, method_mask = branches_lib.start('grasp', inputs)
  shuffled_params, _, shuffled_mask = branches_lib.start('grasp_shuffled', inputs)
  assert masks_lib.count_per_layer(shuffled_mask, inputs.prunable) == masks_lib.count_per_layer(
      method_mask, inputs.prunable
  )
  assert not np.array_equal(shuffled_mask['dense_0']['kernel'], method_mask['dense_0']['kernel'])
  chex.assert_trees_all_equal(shuffled_params, masks_lib.apply(inputs.rewind_params, shuffled_mask))
  reinit_params, _, reinit_mask = branches_lib.start('grasp_reinit', inputs)
  chex.assert_trees_all_equal(reinit_mask, method_mask)
  fresh, _ = inputs.init_variables(inputs.seed)
  chex.assert_trees_all_equal(reinit_params, masks_lib.apply(fresh, method_mask))


def test_a_method_without_what_it_scores_from_says_so(two_layer_trainer):
  inputs = branches_lib.BranchInputs(**{**_inputs(two_layer_trainer).__dict__, 'hessian_gradient': None})
  with pytest.raises(ValueError, match='the grasp branch needs Hessian-gradient products'):
    branches_lib.start('grasp_reinit', inputs)


def test_config_refuses_an_unknown_scope_and_no_synflow_rounds():
  with pytest.raises(config_lib.ConfigError, match="pruning.at_init_scope='local': must be one of"):
    config_lib.check_config(helpers.tiny_config(pruning__at_init_scope='local'))
  with pytest.raises(config_lib.ConfigError, match='pruning.synflow_rounds=0: must be a positive integer'):
    config_lib.check_config(helpers.tiny_config(pruning__synflow_rounds=0))


def test_reports_name_the_methods_and_their_ablations():
  from lth_jax.reporting import style  # pylint: disable=import-outside-toplevel

  assert [style.display_name(name) for name in ('grasp', 'synflow_shuffled', 'magnitude_at_init_reinit')] == [
      'GraSP',
      'SynFlow, shuffled',
      'magnitude at init, reinitialized',
  ]
  assert style.display_name('permuted_reinit') == 'permuted mask, reinitialized'


def test_synflow_runs_batch_norm_in_evaluation_mode_and_says_so(tmp_path):
  import optax  # pylint: disable=import-outside-toplevel

  import lth_jax  # pylint: disable=import-outside-toplevel

  dataset = data_lib.build(config_lib.data_spec(helpers.tiny_config().dataset))
  trainer = trainer_lib.Trainer(helpers.BatchNormNet(), dataset, optax.sgd(0.1), parallel.create_mesh(), 32, 8)
  params, model_state = trainer.init_variables(0)
  model_state = jax.tree_util.tree_map(lambda leaf: leaf - 0.3, model_state)  # running statistics that matter

  def total_output(positive_params):
    variables = {'params': positive_params, **jax.tree_util.tree_map(np.abs, model_state)}
    return trainer.model.apply(variables, np.ones((1, 64), np.float32), train=False).sum()

  expected = jax.grad(total_output)(jax.tree_util.tree_map(np.abs, params))
  chex.assert_trees_all_close(trainer.synflow_gradients(params, model_state), expected, rtol=1e-5)
  lines = []
  config = helpers.tiny_config(branches=('synflow',), pruning__levels=1, pruning__synflow_rounds=3)
  lth_jax.run(config, str(tmp_path), lines.append, model=helpers.BatchNormNet())
  assert any('synflow scores this model in evaluation mode' in line for line in lines)

"""Control branches (SNIP, random pruning, sign-preserving reinit) and early turnaround."""

import os

import chex
import jax
import numpy as np
import optax
import pytest

import lth_jax
from lth_jax import config as config_lib
from lth_jax import branches as branches_lib
from lth_jax import data as data_lib
from lth_jax.data import arrays
from lth_jax import masks as masks_lib
from lth_jax import models as models_lib
from lth_jax import optim
from lth_jax import pruning
from lth_jax.search import lottery
from lth_jax.search import trial
from lth_jax.training import checkpoints
from lth_jax.training import parallel
from lth_jax.training import steps
from lth_jax.training import trainer as trainer_lib
from tests import helpers


def _tiny_trainer():
  config = helpers.tiny_config()
  dataset = data_lib.build(config_lib.data_spec(config.dataset))
  model = models_lib.build(config_lib.model_spec(config.model), dataset.num_outputs)
  return trainer_lib.Trainer(model, dataset, optim.from_config(config.training, 60), parallel.create_mesh(), 32, 8)


def _branch_inputs(trainer, keep_fraction=0.3, seed=4, at_init_scope='global', synflow_rounds=100):
  params, model_state = trainer.init_variables(0)
  prunable = masks_lib.prunable_tree(params)
  scores = pruning.magnitude_scores(params)
  keep_mask = pruning.prune(scores, masks_lib.ones_like(params), prunable, 1 - keep_fraction)
  return branches_lib.BranchInputs(
      ticket_mask=jax.tree_util.tree_map(np.asarray, keep_mask),
      rewind_params=params,
      rewind_model_state=model_state,
      prunable=prunable,
      init_variables=trainer.init_variables,
      seed=seed,
      structure='unstructured',
      layer_fractions={},
      at_init_scope=at_init_scope,
      synflow_rounds=synflow_rounds,
      loss_gradients=lambda p, s: trainer.mean_gradients(p, s, data_seed=9, num_batches=3),
      hessian_gradient=lambda p, s: trainer.hessian_gradient(p, s, data_seed=9, num_batches=3),
      synflow_gradients=trainer.synflow_gradients,
  )


@pytest.mark.slow
def test_mean_gradients_equal_the_averaged_batch_gradients():
  trainer = _tiny_trainer()
  params, _ = trainer.init_variables(0)
  indices = arrays.batch_indices(9, 0, 3, trainer.dataset.num_train, 32)

  def loss(p, batch):
    outputs = trainer.model.apply({'params': p}, trainer.dataset.train_inputs[batch])
    return optax.softmax_cross_entropy_with_integer_labels(outputs, trainer.dataset.train_targets[batch]).mean()

  expected = jax.tree_util.tree_map(lambda *g: sum(g) / 3, *[jax.grad(loss)(params, b) for b in indices])
  chex.assert_trees_all_close(trainer.mean_gradients(params, {}, 9, 3), expected, atol=1e-6)


def test_mean_gradients_normalize_with_each_batch_statistics():
  """SNIP's gradients see a batch as a train step does: batch norm in training mode."""
  dataset = data_lib.build(config_lib.data_spec(helpers.tiny_config().dataset))
  trainer = trainer_lib.Trainer(helpers.BatchNormNet(), dataset, optax.sgd(0.1), parallel.create_mesh(), 32, 8)
  params, model_state = trainer.init_variables(0)
  batch = arrays.batch_indices(9, 0, 1, dataset.num_train, 32)[0]

  def loss(p, train):
    outputs = trainer.model.apply(
        {'params': p, **model_state},
        dataset.train_inputs[batch],
        train=train,
        mutable=['batch_stats'] if train else False,
    )
    outputs = outputs[0] if train else outputs
    return optax.softmax_cross_entropy_with_integer_labels(outputs, dataset.train_targets[batch]).mean()

  gradients = trainer.mean_gradients(params, model_state, 9, 1)
  chex.assert_trees_all_close(gradients, jax.grad(loss)(params, True), atol=1e-6)
  evaluation_mode = jax.grad(loss)(params, False)
  assert not np.allclose(gradients['hidden_0']['kernel'], evaluation_mode['hidden_0']['kernel'], atol=1e-3)


def test_snip_keeps_the_highest_connection_sensitivity():
  trainer = _tiny_trainer()
  inputs = _branch_inputs(trainer)
  params, _, keep_mask = branches_lib.start('snip', inputs)
  gradients = inputs.loss_gradients(inputs.rewind_params, {})
  scores = pruning.snip_scores(inputs.rewind_params, gradients)
  # Scores are |g * w| exactly.
  np.testing.assert_array_equal(
      scores['dense_0']['kernel'], np.abs(inputs.rewind_params['dense_0']['kernel'] * gradients['dense_0']['kernel'])
  )
  ticket_count = sum(masks_lib.count_per_layer(inputs.ticket_mask, inputs.prunable).values())
  assert sum(masks_lib.count_per_layer(keep_mask, inputs.prunable).values()) == ticket_count
  # Every kept weight scores at least as high as every pruned one (one global pool).
  kept, pruned = [], []
  for score, keep, flag in zip(
      jax.tree_util.tree_leaves(scores),
      jax.tree_util.tree_leaves(keep_mask),
      jax.tree_util.tree_leaves(inputs.prunable),
  ):
    if flag:
      kept.append(score[keep])
      pruned.append(score[~keep])
  assert np.concatenate(kept).min() >= np.concatenate(pruned).max()
  assert np.all(params['dense_0']['kernel'][~keep_mask['dense_0']['kernel']] == 0.0)
  assert not np.array_equal(keep_mask['dense_0']['kernel'], inputs.ticket_mask['dense_0']['kernel'])


def test_keep_top_exact_count_and_bounds():
  scores = {'a': {'kernel': np.array([[3.0, 1.0], [2.0, 5.0]])}, 'b': {'bias': np.zeros(2)}}
  prunable = masks_lib.prunable_tree(scores)
  keep = pruning.keep_top(scores, prunable, 2)
  np.testing.assert_array_equal(keep['a']['kernel'], [[True, False], [False, True]])
  assert keep['b']['bias'].all()
  with pytest.raises(ValueError, match='cannot keep 5 of 4'):
    pruning.keep_top(scores, prunable, 5)


def test_random_pruning_keeps_per_layer_counts_and_differs_from_the_ticket():
  trainer = _tiny_trainer()
  inputs = _branch_inputs(trainer)
  params, _, keep_mask = branches_lib.start('random_pruning', inputs)
  assert masks_lib.count_per_layer(keep_mask, inputs.prunable) == masks_lib.count_per_layer(
      inputs.ticket_mask, inputs.prunable
  )
  assert not np.array_equal(keep_mask['dense_0']['kernel'], inputs.ticket_mask['dense_0']['kernel'])
  kept = keep_mask['dense_0']['kernel']
  np.testing.assert_array_equal(params['dense_0']['kernel'][kept], inputs.rewind_params['dense_0']['kernel'][kept])
  _, _, again = branches_lib.start('random_pruning', inputs)
  chex.assert_trees_all_equal(again, keep_mask)  # deterministic for a seed


def test_sign_preserving_reinit_takes_signs_from_the_ticket_and_magnitudes_from_a_fresh_init():
  trainer = _tiny_trainer()
  inputs = _branch_inputs(trainer)
  params, _, keep_mask = branches_lib.start('sign_reinit', inputs)
  fresh, _ = trainer.init_variables(inputs.seed)
  kept = keep_mask['dense_0']['kernel']
  new, rewind = params['dense_0']['kernel'][kept], inputs.rewind_params['dense_0']['kernel'][kept]
  np.testing.assert_array_equal(np.sign(new), np.sign(rewind))
  np.testing.assert_array_equal(np.abs(new), np.abs(fresh['dense_0']['kernel'][kept]))
  assert not np.allclose(np.abs(new), np.abs(rewind))
  np.testing.assert_array_equal(params['dense_0']['bias'], fresh['dense_0']['bias'])  # not prunable: fresh


@pytest.mark.slow
def test_early_turnaround_prunes_from_the_weights_at_the_turnaround_step(tmp_path):
  config = helpers.tiny_config(pruning__turnaround_step=30, pruning__levels=1, branches=('snip', 'sign_reinit'))
  results = lottery.run(config, str(tmp_path), log=lambda line: None)
  assert {r['branch'] for r in results.records} == {'ticket', 'snip', 'sign_reinit'}
  trainer = _tiny_trainer()
  init_seed, data_seed = trial.trial_seeds(config.seed, 0)
  plan = config_lib.pruning_plan(config)
  params0, model_state0 = trainer.init_variables(init_seed)
  ones = jax.tree_util.tree_map(lambda leaf: np.ones(leaf.shape, bool), params0)
  stack = steps.stack_members  # a run alone: a population of one
  at_turnaround = trainer.train(
      trainer.create_state(stack([params0]), stack([model_state0]), stack([ones]), 0), 30, [data_seed]
  )
  at_turnaround = steps.member(parallel.to_host(at_turnaround.state.params), 0)
  level1 = checkpoints.restore_tree(
      os.path.join(str(tmp_path), 'checkpoints/trial_0/level_1'),
      {'params': params0, 'mask': ones, 'turnaround_params': params0},
  )
  prunable = masks_lib.prunable_tree(params0)
  expected = pruning.next_mask(plan, 1, pruning.magnitude_scores(at_turnaround), ones, prunable)
  chex.assert_trees_all_equal(level1['mask'], expected)
  level0 = checkpoints.restore_tree(
      os.path.join(str(tmp_path), 'checkpoints/trial_0/level_0'),
      {'params': params0, 'mask': ones, 'turnaround_params': params0},
  )
  chex.assert_trees_all_equal(level0['turnaround_params'], at_turnaround)
  assert not np.allclose(level0['params']['dense_0']['kernel'], at_turnaround['dense_0']['kernel'])


def test_turnaround_before_the_rewind_step_is_refused(tmp_path):
  config = helpers.tiny_config(pruning__turnaround_step=3)
  with pytest.raises(lth_jax.ConfigError, match='pruning.turnaround_step=3: must come after'):
    lottery.run(config, str(tmp_path), log=lambda line: None)


def test_snip_criterion_prunes_each_level_by_connection_sensitivity_to_the_planned_counts(tmp_path):
  config = helpers.tiny_config(pruning__criterion='snip', pruning__snip_batches=2, branches=())
  results = lottery.run(config, str(tmp_path), log=lambda line: None)
  trainer = _tiny_trainer()
  init_seed, data_seed = trial.trial_seeds(config.seed, 0)
  params0, model_state0 = trainer.init_variables(init_seed)
  plan = config_lib.pruning_plan(config)
  prunable = plan.prunable(params0)
  planned = pruning.planned_counts(
      masks_lib.layer_sizes(params0, prunable), plan.fraction, 2, plan.scope, plan.layer_fractions
  )
  tickets = {record['level']: record for record in results.select(branch='ticket')}
  assert [tickets[level]['kept_weights'] for level in (0, 1, 2)] == planned
  like = {'params': params0, 'mask': masks_lib.ones_like(params0)}
  levels = [
      checkpoints.restore_tree(os.path.join(str(tmp_path), f'checkpoints/trial_0/level_{level}'), like)
      for level in (0, 1, 2)
  ]
  for level in (1, 2):  # each mask: the lowest |g * w| at the previous ticket's final weights pruned
    previous = levels[level - 1]
    gradients = trainer.mean_gradients(previous['params'], model_state0, data_seed, 2)
    scores = pruning.snip_scores(previous['params'], gradients)
    expected = pruning.next_mask(plan, level, scores, previous['mask'], prunable)
    chex.assert_trees_all_equal(levels[level]['mask'], expected)
    by_magnitude = pruning.next_mask(
        plan, level, pruning.magnitude_scores(previous['params']), previous['mask'], prunable
    )
    assert not np.array_equal(levels[level]['mask']['dense_0']['kernel'], by_magnitude['dense_0']['kernel'])

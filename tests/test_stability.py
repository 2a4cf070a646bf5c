"""Stability metrics on hand-made trees, the vmapped population, and linear mode connectivity."""

import json
import math

import chex
import jax
import numpy as np
import pytest

from lth_jax import config as config_lib
from lth_jax.analysis import connectivity
from lth_jax.analysis import metrics as metrics_lib
from lth_jax.analysis import stability
from lth_jax.analysis import stability_results
from lth_jax.analysis import ticket_stability
from lth_jax.config import errors
from lth_jax import data as data_lib
from lth_jax import masks as masks_lib
from lth_jax import models as models_lib
from lth_jax import optim
from lth_jax import pruning
from lth_jax.search import lottery
from lth_jax.training import parallel
from lth_jax.training import steps as steps_lib
from lth_jax.training import trainer as trainer_lib
from tests import helpers


def _tree(kernel, bias=(9.0, 9.0)):
  return {'layer': {'kernel': np.asarray(kernel, np.float64), 'bias': np.asarray(bias, np.float64)}}


def test_metric_definitions_on_hand_made_trees():
  prunable = masks_lib.prunable_tree(_tree([0.0, 0.0, 0.0]))
  keep = {'layer': {'kernel': np.array([True, True, False]), 'bias': np.array([True, True])}}
  initial = _tree([0.0, 0.0, 5.0])
  full = _tree([1.0, 0.0, 7.0])  # W_F - W_0 on the mask: (1, 0)
  ticket = _tree([0.0, 2.0, -3.0])  # W_T - W_0 on the mask: (0, 2)
  full_final = _tree([1.0, 1.0, 0.0])  # W_* - W_0 on the mask: (1, 1)
  metrics = metrics_lib.stability_metrics(initial, full, ticket, full_final, keep, prunable, normalizer=2.0)
  assert metrics['l2_distance'] == pytest.approx(math.sqrt(1 + 4) / 2)
  assert metrics['angle'] == pytest.approx(90.0)
  assert metrics['angle_ticket_to_final'] == pytest.approx(45.0)
  assert metrics['angle_full_to_final'] == pytest.approx(45.0)
  assert metrics['correlation'] == pytest.approx(-1.0)  # (1, 0) vs (0, 2)
  assert metrics['full_distance_from_init'] == pytest.approx(0.5)
  assert metrics['ticket_distance_from_init'] == pytest.approx(1.0)


def test_max_normalization_rescales_distances_only():
  metrics = {'l2_distance': 0.5, 'angle': 40.0, 'correlation': 0.9, 'full_distance_from_init': 2.0}
  distances = [{'step': 0, 'distance': 3.0}, {'step': 10, 'distance': 8.0}, {'step': 20, 'distance': 4.0}]
  largest = metrics_lib.max_distance(distances)
  assert largest == 8.0
  both = metrics_lib.with_max_normalized(metrics, normalizer=4.0, max_normalizer=largest)
  # distance 0.5 * 4 = 2 raw, over the max 8: 0.25; angles and correlation have one value.
  assert both['l2_distance_max_normalized'] == pytest.approx(0.25)
  assert both['full_distance_from_init_max_normalized'] == pytest.approx(1.0)
  assert both['l2_distance'] == 0.5 and both['angle'] == 40.0 and 'angle_max_normalized' not in both
  assert metrics_lib.metric_key('angle', 'max') == 'angle' and metrics_lib.metric_key('l2_distance', 'max') == (
      'l2_distance_max_normalized'
  )
  # When the final distance is the largest, both normalizations agree.
  same = metrics_lib.with_max_normalized(
      metrics, normalizer=8.0, max_normalizer=metrics_lib.max_distance(distances[:2])
  )
  assert same['l2_distance_max_normalized'] == same['l2_distance']
  with pytest.raises(ValueError, match='normalization'):
    metrics_lib.metric_key('l2_distance', 'largest')


def test_stability_records_round_trip_and_old_records_load():
  final = {'ticket': {'l2_distance': 0.2, 'angle': 30.0}, 'random_ticket': {'l2_distance': 0.4, 'angle': 60.0}}
  old_record = {
      'rewind_step': 25,
      'final': final,
      'curve': [{'step': 300, **final}],
      'test_metrics': {'full': 0.5},
      'normalizer': 3.0,
  }
  old = stability_results.StabilityResult.from_record(old_record)
  assert old.max_normalizer is None and not old.has_normalization('max') and old.steps == [300]
  assert old.metric('random_ticket', 'angle') == 60.0
  new = stability_results.StabilityResult(**{**old_record, 'max_normalizer': 4.0, 'level': 2, 'trial': 1})
  assert stability_results.StabilityResult.from_record(new.as_record()) == new
  with pytest.raises(ValueError, match='missing normalizer'):
    stability_results.StabilityResult.from_record(
        {key: value for key, value in old_record.items() if key != 'normalizer'}
    )


def test_vector_helpers():
  assert metrics_lib.angle_degrees(np.array([1.0, 0.0]), np.array([-1.0, 0.0])) == pytest.approx(180.0)
  assert math.isnan(metrics_lib.angle_degrees(np.zeros(2), np.ones(2)))
  assert metrics_lib.correlation(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.5])) > 0.99
  assert metrics_lib.l2_distance(np.array([3.0, 0.0]), np.array([0.0, 4.0])) == pytest.approx(5.0)


def test_error_barrier():
  assert connectivity.error_barrier([0.0, 0.5, 1.0], [0.1, 0.1, 0.1]) == 0.0
  assert connectivity.error_barrier([0.0, 0.5, 1.0], [0.1, 0.6, 0.3]) == pytest.approx(0.6 - 0.2)
  assert connectivity.error_barrier([0.0, 0.5, 1.0], [0.3, 0.1, 0.3]) == 0.0  # below the line: no barrier
  # Frankle et al. (2020): above the mean of the end errors, not the line between them.
  assert connectivity.error_barrier_height([0.1, 0.6, 0.3]) == pytest.approx(0.6 - 0.2)
  assert connectivity.error_barrier([0.0, 0.5, 1.0], [0.1, 0.3, 0.5]) == 0.0
  assert connectivity.error_barrier_height([0.1, 0.3, 0.5]) == pytest.approx(0.5 - 0.3)
  assert connectivity.error_barrier_height([0.3, 0.1, 0.3]) == 0.0


def _alone(trainer, params, model_state, keep_mask, step):
  """A run alone's TrainState (a population of one) from one network's host trees."""
  stack = steps_lib.stack_members
  return trainer.create_state(stack([params]), stack([model_state]), stack([keep_mask]), step)


def _trainers(population_size):
  config = helpers.tiny_config()
  config.training.optimizer = 'momentum'
  config.training.learning_rate = 0.05
  dataset = data_lib.build(config_lib.data_spec(config.dataset))
  model = models_lib.build(config_lib.model_spec(config.model), dataset.num_outputs)
  optimizer = optim.from_config(config.training, 60)
  mesh = parallel.create_mesh()
  single = trainer_lib.Trainer(model, dataset, optimizer, mesh, 32, 16)
  population = trainer_lib.Trainer(model, dataset, optimizer, mesh, 32, 16, population_size=population_size)
  return single, population


def test_vmapped_population_equals_members_trained_one_by_one():
  single, population = _trainers(3)
  starts = [single.init_variables(seed) for seed in (0, 1, 2)]
  masks = [jax.tree_util.tree_map(lambda leaf: np.ones(leaf.shape, bool), starts[0][0])] * 3
  prunable = masks_lib.prunable_tree(starts[0][0])
  masks[1] = pruning.prune(pruning.magnitude_scores(starts[1][0]), masks[1], prunable, 0.7)
  seeds = [5, 6, 5]
  state = population.create_state(
      steps_lib.stack_members([masks_lib.apply(start[0], mask) for start, mask in zip(starts, masks)]),
      steps_lib.stack_members([s[1] for s in starts]),
      steps_lib.stack_members(masks),
      3,
  )
  together = population.train(state, 40, seeds, eval_every=20)
  assert len(together.curve[-1]['test_accuracy']) == 3
  for index in range(3):
    alone = single.train(
        _alone(single, masks_lib.apply(starts[index][0], masks[index]), starts[index][1], masks[index], 3),
        40,
        [seeds[index]],
    )
    chex.assert_trees_all_close(
        steps_lib.member(parallel.to_host(together.state.params), index),
        steps_lib.member(parallel.to_host(alone.state.params), 0),
        atol=2e-5,
    )
    assert len(alone.curve[-1]['test_accuracy']) == 1
    assert together.curve[-1]['test_accuracy'][index] == pytest.approx(alone.curve[-1]['test_accuracy'][0], abs=1e-6)


def test_measure_trains_full_network_like_a_plain_run_and_separates_tickets():
  single, population = _trainers(4)
  params0, model_state0 = single.init_variables(0)
  other = single.init_variables(1)
  ones = jax.tree_util.tree_map(lambda leaf: np.ones(leaf.shape, bool), params0)
  prunable = masks_lib.prunable_tree(params0)
  dense = single.train(_alone(single, params0, model_state0, ones, 0), 60, [11])
  dense_params = steps_lib.member(parallel.to_host(dense.state.params), 0)
  keep_mask = pruning.prune(pruning.magnitude_scores(dense_params), ones, prunable, 0.8)
  result = stability.measure(
      population,
      (params0, model_state0),
      other,
      keep_mask,
      prunable,
      rewind_step=10,
      end_step=60,
      data_seed=11,
      other_data_seed=12,
      random_ticket_seed=3,
      measure_steps=(5, 30),
  )
  assert [entry['step'] for entry in result.curve] == [30, 60]
  # The full member is exactly the plain dense run (same init, batches, optimizer state).
  assert result.test_metrics['full'] == pytest.approx(dense.curve[-1]['test_accuracy'][0], abs=1e-6)
  # ||W_F - W'_F|| at step 0, a step before the rewind, the rewind step and each measured step, against
  # the two full networks trained alone and compared with numpy.
  steps = [0, 5, 10, 30, 60]
  alone = [
      single.train(_alone(single, start[0], start[1], ones, 0), 60, [seed], snapshot_steps=steps).snapshots
      for start, seed in (((params0, model_state0), 11), (other, 12))
  ]

  def flat(snapshots, step):  # the run's prunable weights at `step`, one vector
    params = steps_lib.member(snapshots[step][0], 0)
    return np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(masks_lib.apply(params, prunable))])

  expected = [np.linalg.norm(flat(alone[0], s) - flat(alone[1], s)) for s in steps]
  assert [entry['step'] for entry in result.full_pair_distances] == steps
  np.testing.assert_allclose([entry['distance'] for entry in result.full_pair_distances], expected, rtol=1e-4)
  assert result.normalizer == pytest.approx(expected[-1], rel=1e-4)
  assert result.max_normalizer == pytest.approx(max(expected), rel=1e-4)
  for entry in result.curve:
    for name in ('ticket', 'random_ticket'):
      metrics = entry[name]
      for key in metrics_lib.DISTANCE_METRICS:
        assert metrics[key + '_max_normalized'] == pytest.approx(
            metrics[key] * result.normalizer / result.max_normalizer
        )
        assert metrics[key + '_max_normalized'] <= metrics[key] + 1e-12
  assert result.final['ticket']['angle_full_to_final'] == pytest.approx(0.0, abs=1e-3)
  for name in ('ticket', 'random_ticket'):
    for value in result.final[name].values():
      assert np.isfinite(value)
  assert 0 < result.final['ticket']['angle'] < 180
  assert result.normalizer > 0


def test_linear_mode_connectivity_ends_are_the_trained_networks_with_their_own_batch_statistics():
  config = helpers.tiny_config()
  dataset = data_lib.build(config_lib.data_spec(config.dataset))
  optimizer = optim.from_config(config_lib.training_spec({'optimizer': 'momentum', 'learning_rate': 0.2}), 40)
  mesh = parallel.create_mesh()
  single = trainer_lib.Trainer(helpers.BatchNormNet(), dataset, optimizer, mesh, 32, 16)
  pair = trainer_lib.Trainer(helpers.BatchNormNet(), dataset, optimizer, mesh, 32, 16, population_size=2)
  params0, model_state0 = single.init_variables(0)
  ones = masks_lib.ones_like(params0)
  path = connectivity.linear_mode_connectivity(pair, single, (params0, model_state0), ones, 0, 40, (4, 5), 3)
  ends = []
  for seed in (4, 5):
    alone = single.train(_alone(single, params0, model_state0, ones, 0), 40, [seed])
    ends.append(steps_lib.member(parallel.to_host(alone.state), 0))
    assert alone.curve[-1]['test_accuracy'][0] == pytest.approx(1.0 - path.errors[0 if seed == 4 else -1], abs=1e-6)
  assert not np.allclose(
      ends[0].model_state['batch_stats']['norm']['mean'], ends[1].model_state['batch_stats']['norm']['mean']
  )
  assert path.instability == connectivity.error_barrier_height(path.errors)


def test_linear_mode_connectivity_of_identical_copies_has_no_barrier():
  single, _ = _trainers(2)
  _, pair = _trainers(2)
  params0, model_state0 = single.init_variables(0)
  ones = jax.tree_util.tree_map(lambda leaf: np.ones(leaf.shape, bool), params0)
  same = connectivity.linear_mode_connectivity(pair, single, (params0, model_state0), ones, 0, 30, (4, 4), 5)
  assert same.alphas == [0.0, 0.25, 0.5, 0.75, 1.0]
  assert max(same.errors) - min(same.errors) < 1e-6
  assert same.barrier == pytest.approx(0.0, abs=1e-6)
  different = connectivity.linear_mode_connectivity(pair, single, (params0, model_state0), ones, 0, 30, (4, 5), 5)
  assert len(different.errors) == 5 and different.barrier >= 0.0
  assert all(0.0 <= error <= 1.0 for error in different.errors)


@pytest.mark.slow
def test_measure_lottery_ticket_checks_level_trial_and_the_workdir_config_first(tmp_path):
  config = helpers.tiny_config(pruning__levels=1, branches=())
  with pytest.raises(errors.ConfigError, match=r'level=99: the ticket of a pruned level is measured, 1..1'):
    ticket_stability.measure_lottery_ticket(config, str(tmp_path / 'none'), level=99)
  with pytest.raises(errors.ConfigError, match=r'trial=3: must be in 0..0'):
    ticket_stability.measure_lottery_ticket(config, str(tmp_path / 'none'), level=1, trial=3)
  assert not (tmp_path / 'none').exists()  # refused before any run
  workdir = str(tmp_path / 'run')
  lottery.run(config, workdir, log=lambda line: None)
  changed = helpers.tiny_config(pruning__levels=1, branches=(), training__learning_rate=0.05)
  with pytest.raises(errors.ConfigError, match='training.learning_rate: 0.003 -> 0.05'):
    ticket_stability.measure_lottery_ticket(changed, workdir, level=1)
  first, measured = ticket_stability.measure_lottery_ticket_once(config, workdir, level=1, measure_steps=(20, 40))
  assert measured and (first.level, first.trial, first.steps) == (1, 0, [20, 40, 60])
  stored = (tmp_path / 'run' / stability_results.STABILITY_FILE).read_bytes()
  again, measured = ticket_stability.measure_lottery_ticket_once(config, workdir, level=1, measure_steps=(20, 40))
  assert not measured and again == stability_results.StabilityResult.from_record(json.loads(stored))
  assert (tmp_path / 'run' / stability_results.STABILITY_FILE).read_bytes() == stored  # nothing appended
  with pytest.raises(errors.ConfigError, match='training.learning_rate: 0.003 -> 0.05'):
    ticket_stability.measure_lottery_ticket_once(changed, workdir, level=1, measure_steps=(20, 40))
  _, measured = ticket_stability.measure_lottery_ticket_once(config, workdir, level=1, measure_steps=(40,))
  assert measured and len(stability_results.load_results(str(tmp_path / 'run' / stability_results.STABILITY_FILE))) == 2

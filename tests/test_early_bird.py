"""Early-bird turnaround: mask distances between evaluations, the settled step, the next level pruned from
its weights, and the config checks that come before any training."""

import os

import chex
import numpy as np
import pytest

import lth_jax
from lth_jax import config as config_lib
from lth_jax import masks as masks_lib
from lth_jax import pruning
from lth_jax.search import early_bird
from lth_jax.search import lottery
from lth_jax.training import checkpoints
from tests import helpers


def test_mask_distance_counts_differing_prunable_positions_over_all_of_them():
  prunable = {'a': True, 'b': False}
  mask = {'a': np.array([True, True, False, False]), 'b': np.array([True, False])}
  other = {'a': np.array([True, False, True, False]), 'b': np.array([False, True])}
  assert early_bird.mask_distance(mask, other, prunable) == 0.5  # 2 of 4; 'b' is not prunable
  assert early_bird.mask_distance(mask, mask, prunable) == 0.0


def test_settled_index_needs_a_whole_window_below_the_threshold():
  distances = [None, 0.3, 0.05, 0.2, 0.05, 0.04, 0.01]
  assert early_bird.settled_index(distances, 0.1, 2) == 5
  assert early_bird.settled_index(distances, 0.1, 1) == 2
  assert early_bird.settled_index(distances, 0.1, 4) is None
  assert early_bird.settled_index([None, 0.0], 0.1, 2) is None  # the first evaluation has no distance


def test_evaluation_steps_before_the_end():
  assert early_bird.evaluation_steps(0, 60, 20) == (20, 40)
  assert early_bird.evaluation_steps(5, 60, 20) == (20, 40)
  assert early_bird.evaluation_steps(0, 60, 0) == ()


def test_find_takes_the_first_settled_evaluation_and_its_distance_to_the_end():
  rng = np.random.default_rng(0)
  base = rng.normal(size=(10, 10)).astype(np.float32)
  keep_mask, prunable = {'w': np.ones((10, 10), bool)}, {'w': True}
  noise = [3.0, 0.0, 0.0, 0.0]  # the weights of steps 10..40 (the end, 50: the base): settled from step 20
  snapshots = {
      10 * (i + 1): ({'w': base + scale * rng.normal(size=(10, 10)).astype(np.float32)}, {})
      for i, scale in enumerate(noise)
  }
  plan = config_lib.pruning_plan(
      helpers.tiny_config(pruning__turnaround='early_bird', pruning__early_bird_window=2, pruning__layer_fractions={})
  )
  found = early_bird.find(plan, 0, snapshots, {'w': base}, keep_mask, prunable, 0, 50, 10)
  assert found.steps == (10, 20, 30, 40, 50)
  assert found.distances[0] is None and found.distances[1] > plan.early_bird_threshold
  assert found.distances[2:] == (0.0, 0.0, 0.0)
  assert found.step == 40 and found.distance_to_end == 0.0 and found.steps_after == pytest.approx(0.2)
  record = found.annotate({'curve': [{'step': 10}, {'step': 50}], 'trial': 0})
  assert [entry['mask_distance'] for entry in record['curve']] == [None, 0.0]
  assert record['early_bird_step'] == 40


def _early_bird_config(**overrides):
  settings = {
      'pruning__turnaround': 'early_bird',
      'pruning__early_bird_window': 2,
      'pruning__early_bird_threshold': 0.2,
      'training__eval_every': 10,
      'pruning__rewind_step': 0,
      'branches': (),
  }
  return helpers.tiny_config(**{**settings, **overrides})


def test_a_run_turns_around_at_the_early_bird_step_and_records_it(tmp_path):
  config = _early_bird_config()
  lines = []
  results = lottery.run(config, str(tmp_path), log=lines.append)
  tickets = {record['level']: record for record in results.select(branch='ticket')}
  plan = config_lib.pruning_plan(config)
  for level in (0, 1, 2):
    record = tickets[level]
    distances = [entry['mask_distance'] for entry in record['curve']]
    assert distances[0] is None and all(0.0 <= d <= 1.0 for d in distances[1:])
    if record['early_bird_step'] is not None:
      index = [entry['step'] for entry in record['curve']].index(record['early_bird_step'])
      assert all(d < 0.2 for d in distances[index - 1 : index + 1])
      assert 0.0 <= record['early_bird_steps_after'] < 1.0
  assert tickets[0]['early_bird_step'] is not None  # the dense run's mask settles within its 60 steps
  assert any('early bird at step' in line and 'fewer of this run' in line for line in lines)
  # Level 1's mask is pruned from the dense run's weights at its early-bird step, and that mask is the
  # recorded distance from the mask of the end of training.
  level_zero = checkpoints.restore_tree(os.path.join(str(tmp_path), 'checkpoints/trial_0/level_0'))
  prunable = plan.prunable(level_zero['params'])
  full = masks_lib.ones_like(level_zero['mask'])
  early = pruning.next_mask(plan, 1, pruning.magnitude_scores(level_zero['turnaround_params']), full, prunable)
  at_end = pruning.next_mask(plan, 1, pruning.magnitude_scores(level_zero['params']), full, prunable)
  level_one = checkpoints.restore_tree(os.path.join(str(tmp_path), 'checkpoints/trial_0/level_1'))
  chex.assert_trees_all_equal(level_one['mask'], early)
  assert early_bird.mask_distance(early, at_end, prunable) == pytest.approx(tickets[0]['early_bird_distance_to_end'])


def test_without_evaluation_points_early_bird_says_what_to_set(tmp_path):
  with pytest.raises(
      config_lib.ConfigError, match='training.eval_every=60: gives 1 evaluation.*set training.eval_every to at most 20'
  ):
    lottery.run(_early_bird_config(training__eval_every=60), str(tmp_path), log=lambda line: None)
  assert not os.listdir(tmp_path)


def test_early_bird_refuses_a_fixed_turnaround_and_bad_settings():
  with pytest.raises(config_lib.ConfigError, match='pruning.turnaround_step=30: is a fixed turnaround point'):
    config_lib.check_config(_early_bird_config(pruning__turnaround_step=30))
  with pytest.raises(config_lib.ConfigError, match="pruning.turnaround='early': must be one of"):
    config_lib.check_config(helpers.tiny_config(pruning__turnaround='early'))
  with pytest.raises(config_lib.ConfigError, match='pruning.early_bird_threshold=0.0: must be in'):
    config_lib.check_config(_early_bird_config(pruning__early_bird_threshold=0.0))


def test_a_sweep_refuses_early_bird_before_training(tmp_path):
  with pytest.raises(config_lib.ConfigError, match="pruning.turnaround='early_bird' runs with lth_jax.run"):
    lth_jax.sweep(_early_bird_config(), {'pruning.rewind_step': (0, 5)}, str(tmp_path), log=lambda line: None)


def test_the_experiment_checks_each_level_against_its_checkpoint_and_prints_the_steps_saved(tmp_path):
  from experiments import early_bird as experiment  # pylint: disable=import-outside-toplevel

  config = experiment.early_bird_config(helpers.tiny_config(), levels=1, eval_every=10, threshold=0.2, window=2)
  assert config.pruning.turnaround == 'early_bird' and config.branches == ()
  results = lottery.run(config, str(tmp_path), log=lambda line: None)
  rows = experiment.check_levels(config, str(tmp_path), results.records)
  assert rows and all(row['recorded_distance'] == pytest.approx(row['recomputed_distance']) for row in rows)
  text = experiment.format_rows(rows, 2)
  saved = sum(row['steps_saved'] for row in rows)
  assert f'early bird found in {len(rows)} of 2 ticket runs' in text and f'save {saved} of' in text
  comparison = experiment.compare_tickets(results.records, results.records)
  assert comparison.splitlines()[0].startswith('level remaining  test_accuracy (early bird)')
  assert len(comparison.splitlines()) == 3

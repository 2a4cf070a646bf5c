"""The lottery runner end to end: levels, branches, rewinding, results, resume, the blog's toy."""

import json
import os

import chex
import jax
import numpy as np
import pytest

from lth_jax import config as config_lib
from lth_jax import branches as branches_lib
from lth_jax import data as data_lib
from lth_jax import masks as masks_lib
from lth_jax import models as models_lib
from lth_jax import optim
from lth_jax import pruning
from lth_jax.search import progress
from lth_jax.search import lottery
from lth_jax.search import trial
from lth_jax.training import checkpoints
from lth_jax.training import parallel
from lth_jax.training import steps
from lth_jax.training import trainer as trainer_lib
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('tiny'))
  config = helpers.tiny_config()
  return config, workdir, lottery.run(config, workdir, log=lambda message: None)


def test_records_cover_every_level_and_branch(tiny_run):
  config, workdir, results = tiny_run
  keys = sorted((r['level'], r['branch']) for r in results.records)
  assert keys == [
      (0, 'ticket'),
      (1, 'permuted'),
      (1, 'reinit'),
      (1, 'ticket'),
      (2, 'permuted'),
      (2, 'reinit'),
      (2, 'ticket'),
  ]
  on_disk = [json.loads(line) for line in open(os.path.join(workdir, 'results.jsonl'))]
  assert len(on_disk) == len(results.records)
  for record in on_disk:
    for field in ('level', 'branch', 'trial', 'fraction_remaining', 'nonzero_weights', 'test_accuracy', 'steps'):
      assert field in record
    assert record['steps'] == (60 if record['level'] == 0 else 55)  # level >= 1 trains from rewind step 5
    assert 0.0 <= record['test_accuracy'] <= 1.0


def test_fractions_follow_the_per_layer_schedule(tiny_run):
  _, _, results = tiny_run
  tickets = {r['level']: r for r in results.select(branch='ticket')}
  # digits: 64 -> 32 -> 16 -> 10; kernels 2048, 512, 160. Fraction 0.5, output layer at 0.1.
  assert tickets[0]['kept_weights'] == 2048 + 512 + 160
  assert tickets[1]['kept_weights'] == 1024 + 256 + 144
  assert tickets[2]['kept_weights'] == 512 + 128 + 130
  assert tickets[1]['layer_density']['output/kernel'] == pytest.approx(144 / 160)
  for level in (1, 2):
    same_level = results.select(level=level)
    assert len({r['kept_weights'] for r in same_level}) == 1  # controls share the ticket's density
    for record in same_level:
      assert record['nonzero_weights'] <= record['kept_weights']


def test_checkpointed_masks_and_rewind_point(tiny_run):
  """The rewind checkpoint is exactly the weights after `rewind_step` steps of the dense run, and
  each level's mask prunes the previous level's trained ticket by magnitude."""
  config, workdir, _ = tiny_run
  dataset = data_lib.build(config_lib.data_spec(config.dataset))
  model = models_lib.build(config_lib.model_spec(config.model), dataset.num_outputs)
  trainer = trainer_lib.Trainer(
      model,
      dataset,
      optim.from_config(config.training, 60),
      parallel.create_mesh(),
      config.training.batch_size,
      config.training.steps_per_dispatch,
  )
  init_seed, data_seed = trial.trial_seeds(config.seed, 0)
  plan = config_lib.pruning_plan(config)
  params0, model_state0 = trainer.init_variables(init_seed)
  ones = jax.tree_util.tree_map(lambda leaf: np.ones(leaf.shape, bool), params0)
  stack = steps.stack_members  # a run alone: a population of one
  replay = trainer.train(
      trainer.create_state(stack([params0]), stack([model_state0]), stack([ones]), 0), 5, [data_seed]
  )
  rewind_params, _ = checkpoints.restore_tree(
      os.path.join(workdir, 'checkpoints/trial_0/rewind'), (params0, model_state0)
  )
  chex.assert_trees_all_equal(rewind_params, steps.member(parallel.to_host(replay.state.params), 0))

  level0 = checkpoints.restore_tree(
      os.path.join(workdir, 'checkpoints/trial_0/level_0'), {'params': params0, 'mask': ones}
  )
  dense_params, dense_mask = level0['params'], level0['mask']
  level1_mask = checkpoints.restore_tree(
      os.path.join(workdir, 'checkpoints/trial_0/level_1'), {'params': params0, 'mask': ones}
  )['mask']
  prunable = masks_lib.prunable_tree(params0)
  expected = pruning.next_mask(plan, 1, pruning.magnitude_scores(dense_params), dense_mask, prunable)
  chex.assert_trees_all_equal(level1_mask, expected)


def test_ticket_branch_resets_survivors_to_the_rewind_weights():
  rng = np.random.default_rng(0)
  params = {'dense_0': {'kernel': rng.normal(size=(4, 3)).astype(np.float32), 'bias': np.ones(3, np.float32)}}
  keep = {'dense_0': {'kernel': rng.random((4, 3)) > 0.5, 'bias': np.ones(3, bool)}}
  prunable = masks_lib.prunable_tree(params)
  inputs = branches_lib.BranchInputs(
      ticket_mask=keep,
      rewind_params=params,
      rewind_model_state={},
      prunable=prunable,
      init_variables=lambda seed: (jax.tree_util.tree_map(lambda x: x + 10.0 + seed, params), {}),
      seed=1,
      structure='unstructured',
      layer_fractions={},
      at_init_scope='global',
      synflow_rounds=1,
  )
  start_params, _, start_mask = branches_lib.start('ticket', inputs)
  kernel, kept = start_params['dense_0']['kernel'], keep['dense_0']['kernel']
  np.testing.assert_array_equal(kernel[kept], params['dense_0']['kernel'][kept])
  assert np.all(kernel[~kept] == 0.0)
  reinit_params, _, reinit_mask = branches_lib.start('reinit', inputs)
  assert reinit_mask is keep
  assert np.all(reinit_params['dense_0']['kernel'][kept] == params['dense_0']['kernel'][kept] + 11.0)
  permuted_params, _, permuted_mask = branches_lib.start('permuted', inputs)
  assert permuted_mask['dense_0']['kernel'].sum() == kept.sum()
  assert not np.array_equal(permuted_mask['dense_0']['kernel'], kept)
  with pytest.raises(ValueError, match='unknown branch'):
    branches_lib.start('nonsense', inputs)


@pytest.mark.slow
def test_rerun_in_the_same_workdir_resumes_without_duplicates(tiny_run, tmp_path):
  config, _, first = tiny_run
  workdir = str(tmp_path)
  lines = []
  # Simulate a run that stopped after level 1: keep its records and checkpoints up to there.
  config = helpers.tiny_config()
  run_one = lottery.run(helpers.tiny_config(pruning__levels=1), workdir, log=lines.append)
  assert max(r['level'] for r in run_one.records) == 1
  lines.clear()
  resumed = lottery.run(config, workdir, log=lines.append)
  assert any('level 0: already done' in line for line in lines)
  keys = [(r['trial'], r['level'], r['branch']) for r in resumed.records]
  assert len(keys) == len(set(keys)) == 7
  by_key = {(r['level'], r['branch']): r for r in resumed.records}
  for record in first.records:
    assert by_key[(record['level'], record['branch'])]['kept_weights'] == record['kept_weights']
    assert by_key[(record['level'], record['branch'])]['test_accuracy'] == pytest.approx(
        record['test_accuracy'], abs=1e-6
    )


def test_one_shot_mode_prunes_from_the_dense_weights(tmp_path):
  config = helpers.tiny_config(pruning__mode='one_shot', branches=())
  results = lottery.run(config, str(tmp_path), log=lambda message: None)
  tickets = sorted(results.select(branch='ticket'), key=lambda r: r['level'])
  # One shot to what two levels of 50% (output 10%) would keep: 25% and 81% of the output layer.
  assert tickets[2]['kept_weights'] == 512 + 128 + round(160 * 0.81)


def test_progress_lines_come_between_evaluations_too(tmp_path):
  config = helpers.tiny_config(
      pruning__levels=0, branches=(), training__eval_every=0, report__progress_every_seconds=0.0
  )
  lines = []
  lottery.run(config, str(tmp_path), log=lines.append)
  heartbeats = [line for line in lines if 'examples/s | ETA' in line and 'test_accuracy' not in line]
  # 60 steps, 16 per dispatch after the rewind snapshot at step 5; the end is the evaluation's line.
  assert [line.split(': step ')[1].split(' ')[0] for line in heartbeats] == ['5/60', '21/60', '37/60', '53/60']
  assert heartbeats[1].startswith('trial 0 level 0/0 ticket: step 21/60 (35%) | ')


def test_sum_of_two_finds_the_blogs_winning_ticket(tmp_path):
  """configs/sum_of_two.py: a ticket of at most 4 weights matches the dense RMSE on [1, 2], while the
  permuted random ticket fails (the blog's finding)."""
  from ml_collections import config_flags  # noqa: F401  (configs are plain modules)
  import importlib.util

  spec = importlib.util.spec_from_file_location('sum_of_two', os.path.join(REPO, 'configs', 'sum_of_two.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.parallel.num_devices = 1  # a 2-200-1 net gains nothing from 8 simulated devices
  lines = []
  results = lottery.run(config, str(tmp_path), log=lines.append)
  dense = results.select(level=0, branch='ticket')[0]
  last_level = max(r['level'] for r in results.records)
  ticket = results.select(level=last_level, branch='ticket')[0]
  permuted = results.select(level=last_level, branch='permuted_reinit')[0]
  assert ticket['nonzero_weights'] <= 4
  assert ticket['layer_density']['dense_0/kernel'] * 400 == pytest.approx(2)
  assert ticket['test_rmse'] < 10 * dense['test_rmse'] + 1e-5
  assert permuted['test_rmse'] > 100 * ticket['test_rmse']
  assert permuted['test_rmse'] > 0.1
  assert any('dense_0/kernel' in line and 'ticket' in line for line in lines)  # surviving weights printed


def test_remaining_time_counts_training_and_the_evaluations_still_ahead():
  # 100 steps of batch 10 at 1000 examples/s = 1 s, then evaluations at 500, 600, ..., 900 and the
  # end (1000): six of them at 0.5 s each.
  assert progress.estimate_remaining_seconds(400, 1000, 100, 10, 1000.0, 0.5) == pytest.approx(6.0 + 3.0)
  assert progress.estimate_remaining_seconds(450, 1000, 100, 10, 1000.0, 0.5) == pytest.approx(5.5 + 3.0)
  assert progress.estimate_remaining_seconds(450, 1000, 0, 10, 1000.0, 0.5) == pytest.approx(5.5 + 0.5)
  assert progress.estimate_remaining_seconds(1000, 1000, 100, 10, 1000.0, 0.5) == 0.0

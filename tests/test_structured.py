"""N:M structured masks: the pattern along a kernel's input dimension, a level's mask under
`pruning.structure`, and the refusals that come before any training."""

import itertools
import os

import numpy as np
import pytest

from lth_jax import branches as branches_lib
from lth_jax import config as config_lib
from lth_jax import masks as masks_lib
from lth_jax import pruning
from lth_jax import structured
from lth_jax.search import lottery
from lth_jax.training import checkpoints
from tests import helpers


def _numpy_n_of_m(scores, keep, n, m):
  """Brute force: for every position off the input axis and every group along it, the n best survivors."""
  out = np.zeros(scores.shape, bool)
  *outer, size, last = scores.shape
  for index in itertools.product(*(range(d) for d in outer), range(last)):
    *lead, column = index
    for start in range(0, size, m):
      rows = [row for row in range(start, start + m) if keep[(*lead, row, column)]]
      best = sorted(rows, key=lambda row: (scores[(*lead, row, column)], row))[-n:]
      for row in best:
        out[(*lead, row, column)] = True
  return out


def test_parse_reads_n_of_m_and_refuses_anything_else():
  assert structured.parse('2:4') == (2, 4) and structured.parse('unstructured') is None
  for bad in ('4:2', '0:4', '2-4', '2:2', 'sparse'):
    with pytest.raises(ValueError, match="'unstructured' or 'N:M' with 0 < N < M"):
      structured.parse(bad)


@pytest.mark.parametrize('shape', [(8, 3), (3, 3, 8, 2)])
def test_keep_n_of_m_matches_a_brute_force_reference_along_the_input_axis(shape):
  rng = np.random.default_rng(0)
  scores = rng.normal(size=shape).astype(np.float32)
  keep = rng.random(shape) > 0.2
  kept = structured.keep_n_of_m(scores, keep, 2, 4)
  np.testing.assert_array_equal(kept, _numpy_n_of_m(scores, keep, 2, 4))
  assert structured.holds_pattern(kept, 2, 4) and not np.any(kept & ~keep)  # never a revived weight
  full = structured.keep_n_of_m(scores, np.ones(shape, bool), 2, 4)
  assert full.sum() == np.prod(shape) // 2  # exactly half: 2 of every 4
  assert not structured.holds_pattern(np.ones(shape, bool), 2, 4)


def _two_layer_params(rng):
  return {
      'dense_0': {'kernel': rng.normal(size=(8, 8)).astype(np.float32), 'bias': np.zeros(8, np.float32)},
      'output': {'kernel': rng.normal(size=(8, 4)).astype(np.float32), 'bias': np.zeros(4, np.float32)},
  }


def test_a_level_under_n_of_m_keeps_the_pattern_and_prunes_layers_with_their_own_fraction_unstructured():
  params = _two_layer_params(np.random.default_rng(1))
  prunable = masks_lib.prunable_tree(params)
  plan = config_lib.pruning_plan(
      helpers.tiny_config(pruning__structure='2:4', pruning__layer_fractions={'output': 0.5})
  )
  scores = pruning.magnitude_scores(params)
  level_one = pruning.next_mask(plan, 1, scores, masks_lib.ones_like(params), prunable)
  np.testing.assert_array_equal(
      level_one['dense_0']['kernel'], _numpy_n_of_m(scores['dense_0']['kernel'], np.ones((8, 8), bool), 2, 4)
  )
  assert level_one['output']['kernel'].sum() == 16  # half of its 32, unstructured
  level_two = pruning.next_mask(plan, 2, scores, level_one, prunable)
  np.testing.assert_array_equal(level_two['dense_0']['kernel'], level_one['dense_0']['kernel'])  # kept
  assert level_two['output']['kernel'].sum() == 8
  one_shot = config_lib.pruning_plan(
      helpers.tiny_config(pruning__structure='2:4', pruning__mode='one_shot', pruning__layer_fractions={})
  )
  shot = pruning.next_mask(one_shot, 3, scores, level_one, prunable)
  np.testing.assert_array_equal(shot['dense_0']['kernel'], level_one['dense_0']['kernel'])
  assert structured.holds_pattern(shot['output']['kernel'], 2, 4)  # no own fraction: in the pattern too


def test_a_run_under_two_of_four_trains_tickets_that_hold_the_pattern(tmp_path):
  config = helpers.tiny_config(pruning__structure='2:4', branches=('reinit', 'random_pruning'))
  results = lottery.run(config, str(tmp_path), log=lambda line: None)
  tickets = {record['level']: record for record in results.select(branch='ticket')}
  for level in (1, 2):
    assert tickets[level]['layer_density']['dense_0/kernel'] == 0.5
    assert tickets[level]['layer_density']['dense_1/kernel'] == 0.5
    mask = checkpoints.restore_tree(os.path.join(str(tmp_path), f'checkpoints/trial_0/level_{level}'))['mask']
    for layer in ('dense_0', 'dense_1'):
      assert structured.holds_pattern(mask[layer]['kernel'], 2, 4)
  # The output layer has its own fraction (0.1): it goes on being pruned, unstructured.
  assert tickets[2]['layer_density']['output/kernel'] < tickets[1]['layer_density']['output/kernel'] < 1.0
  for branch in ('reinit', 'random_pruning'):
    assert results.select(branch=branch, level=2)[0]['layer_density'] == tickets[2]['layer_density']


def test_random_controls_of_an_n_of_m_ticket_shuffle_within_its_groups():
  rng = np.random.default_rng(3)
  params = _two_layer_params(rng)
  prunable = masks_lib.prunable_tree(params)
  plan = config_lib.pruning_plan(
      helpers.tiny_config(pruning__structure='2:4', pruning__layer_fractions={'output': 0.5})
  )
  ticket = pruning.next_mask(plan, 1, pruning.magnitude_scores(params), masks_lib.ones_like(params), prunable)
  inputs = branches_lib.BranchInputs(
      ticket_mask=ticket,
      rewind_params=params,
      rewind_model_state={},
      prunable=prunable,
      init_variables=lambda seed: (params, {}),
      seed=5,
      structure='2:4',
      layer_fractions={'output': 0.5},
      at_init_scope='global',
      synflow_rounds=1,
  )
  for branch in ('permuted', 'permuted_reinit', 'random_pruning'):
    _, _, mask = branches_lib.start(branch, inputs)
    kernel = mask['dense_0']['kernel']
    assert structured.holds_pattern(kernel, 2, 4) and kernel.sum() == ticket['dense_0']['kernel'].sum()
    assert not np.array_equal(kernel, ticket['dense_0']['kernel'])
    assert mask['output']['kernel'].sum() == 16  # outside the pattern: the layer's count, anywhere
  unstructured = branches_lib.BranchInputs(**{**inputs.__dict__, 'structure': 'unstructured'})
  _, _, anywhere = branches_lib.start('permuted', unstructured)
  assert not structured.holds_pattern(anywhere['dense_0']['kernel'], 2, 4)


def test_a_structure_that_does_not_divide_a_layer_names_it_and_its_shape(tmp_path):
  workdir = tmp_path / 'work'
  with pytest.raises(
      config_lib.ConfigError,
      match=r"pruning.structure='2:3': dense_0/kernel of shape \(64, 32\): .* not a multiple of M=3",
  ):
    lottery.run(helpers.tiny_config(pruning__structure='2:3', branches=()), str(workdir), log=lambda line: None)
  assert not workdir.exists()


def test_the_config_refuses_a_bad_structure_a_target_density_and_controls_with_masks_of_their_own():
  with pytest.raises(config_lib.ConfigError, match="pruning.structure='2/4'"):
    config_lib.check_config(helpers.tiny_config(pruning__structure='2/4'))
  with pytest.raises(config_lib.ConfigError, match='pruning.target_density=0.2: an N:M structure keeps 2/4'):
    config_lib.check_config(helpers.tiny_config(pruning__structure='2:4', pruning__target_density=0.2))
  with pytest.raises(
      config_lib.ConfigError,
      match="'grasp_shuffled' chooses a mask by its own scores.*controls are: reinit, sign_reinit, permuted, ",
  ):
    config_lib.check_config(helpers.tiny_config(pruning__structure='2:4', branches=('reinit', 'grasp_shuffled')))
  config_lib.check_config(helpers.tiny_config(pruning__structure='2:4'))  # reinit and permuted hold the pattern


def test_a_branch_from_python_that_breaks_the_pattern_is_named(tmp_path, monkeypatch):
  monkeypatch.setattr(branches_lib, 'REGISTRY', dict(branches_lib.REGISTRY))

  def everything(inputs):
    mask = masks_lib.ones_like(inputs.ticket_mask)
    return inputs.rewind_params, inputs.rewind_model_state, mask

  branches_lib.register('everything', everything)
  config = helpers.tiny_config(pruning__structure='2:4', branches=('everything',), pruning__levels=1)
  with pytest.raises(ValueError, match="branch 'everything': its mask does not hold the 2:4 pattern"):
    lottery.run(config, str(tmp_path), log=lambda line: None)

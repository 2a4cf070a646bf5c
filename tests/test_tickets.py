"""Tickets as artifacts: load a finished level's ticket, export it bitwise, transfer it to another
config (its own weights or fresh ones), and compare masks across trials and levels."""

import os
import shutil

import chex
import jax
import numpy as np
import pytest

from lth_jax.analysis import mask_overlap
from lth_jax.config import errors
from lth_jax import masks as masks_lib
from lth_jax.reporting import summaries
from lth_jax.search import lottery
from lth_jax import tickets
from lth_jax.training import checkpoints
from tests import helpers


@pytest.fixture(scope='module')
def search(tmp_path_factory):
  """A finished search: 2 trials, 2 levels, ticket + reinit."""
  workdir = str(tmp_path_factory.mktemp('search') / 'work')
  lottery.run(helpers.tiny_config(trials=2, branches=('reinit',)), workdir, log=lambda message: None)
  return workdir


@pytest.fixture(scope='module')
def exported(search, tmp_path_factory):
  path = str(tmp_path_factory.mktemp('exported') / 'ticket.npz')
  tickets.export(tickets.load(search, level=2, trial=1), path)
  return path


def test_load_gives_the_level_s_mask_start_and_final_weights(search):
  ticket = tickets.load(search, level=2, trial=1)
  level = checkpoints.restore_tree(os.path.join(search, 'checkpoints', 'trial_1', 'level_2'))
  rewind_params, _ = checkpoints.restore_tree(os.path.join(search, 'checkpoints', 'trial_1', 'rewind'))
  chex.assert_trees_all_equal(ticket.keep_mask, jax.tree_util.tree_map(np.asarray, level['mask']))
  chex.assert_trees_all_equal(ticket.final_params, jax.tree_util.tree_map(np.asarray, level['params']))
  chex.assert_trees_all_equal(ticket.start_params, masks_lib.apply(rewind_params, ticket.keep_mask))
  assert ticket.record['level'] == 2 and ticket.record['trial'] == 1 and ticket.record['branch'] == 'ticket'
  assert ticket.density == pytest.approx(ticket.record['fraction_remaining'])
  assert ticket.rewind_step == 5 and ticket.config.model.name == 'lenet'
  assert ticket.model.num_outputs == 10


def test_export_round_trip_is_bitwise_and_masks_can_go_alone(search, exported, tmp_path):
  ticket, loaded = tickets.load(search, level=2, trial=1), tickets.load_exported(exported)
  for part in ('keep_mask', 'start_params', 'final_params', 'start_model_state'):
    chex.assert_trees_all_equal(getattr(loaded, part), getattr(ticket, part))
    for ours, theirs in zip(
        jax.tree_util.tree_leaves(getattr(loaded, part)), jax.tree_util.tree_leaves(getattr(ticket, part))
    ):
      assert ours.dtype == theirs.dtype
  assert (loaded.level, loaded.trial, loaded.rewind_step, loaded.record) == (2, 1, 5, ticket.record)
  masks_path = str(tmp_path / 'masks.npz')
  assert (
      tickets._command_line(
          ['export', f'--workdir={search}', '--level=2', '--trial=1', f'--out={masks_path}', '--masks_only']
      )
      == 0
  )
  with np.load(masks_path) as contents:
    assert sorted(name for name in contents.files if not name.startswith('__')) == [
        'keep_mask/dense_0/bias',
        'keep_mask/dense_0/kernel',
        'keep_mask/dense_1/bias',
        'keep_mask/dense_1/kernel',
        'keep_mask/output/bias',
        'keep_mask/output/kernel',
    ]
    np.testing.assert_array_equal(contents['keep_mask/dense_0/kernel'], ticket.keep_mask['dense_0']['kernel'])
  assert tickets.load_exported(masks_path).start_params is None


def test_bad_inputs_name_the_problem(search, exported, tmp_path, capsys):
  with pytest.raises(tickets.TicketError, match=r'level 7 of trial 0 is not finished \(finished levels: 0, 1, 2\)'):
    tickets.load(search, level=7)
  with pytest.raises(tickets.TicketError, match=r'no trial 5 has finished a level \(trials with records: 0, 1\)'):
    tickets.load(search, level=1, trial=5)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(tickets.TicketError, match='is not an lth_jax workdir'):
    tickets.load(str(tmp_path / 'empty'), level=1)
  assert tickets._command_line(['export', f'--workdir={search}', '--level=9', f'--out={tmp_path / "x.npz"}']) == 1
  assert 'level 9 of trial 0 is not finished' in capsys.readouterr().err
  damaged = str(tmp_path / 'damaged.npz')
  shutil.copy(exported, damaged)
  contents = dict(np.load(damaged))
  contents['final_params/dense_0/kernel'] = contents['final_params/dense_0/kernel'] + 1.0  # other weights
  np.savez(damaged, **contents)
  with pytest.raises(tickets.TicketError, match=r'1 array\(s\) differ .*final_params/dense_0/kernel.*damaged'):
    tickets.load_exported(damaged)
  (tmp_path / 'junk.npz').write_bytes(b'not a zip file')
  with pytest.raises(tickets.TicketError, match='not a readable ticket file'):
    tickets.load_exported(str(tmp_path / 'junk.npz'))
  other = helpers.tiny_config(model__hidden_sizes=(16, 16), transfer__ticket=exported)
  with pytest.raises(
      errors.ConfigError,
      match=r'the ticket does not fit this model: parameter dense_0/bias is '
      r'\(32,\) in the ticket and \(16,\) in the model',
  ):
    lottery.run(other, str(tmp_path / 'other'), log=lambda message: None)
  assert not os.path.exists(tmp_path / 'other' / 'results.jsonl')


@pytest.mark.slow
def test_transfer_trains_the_ticket_or_fresh_weights_under_its_mask_and_resumes(exported, tmp_path):
  ticket = tickets.load_exported(exported)
  starts = {}
  for start in ('ticket', 'reinit'):
    config = helpers.tiny_config(
        dataset__seed=7,
        seed=3,
        pruning__levels=1,
        pruning__rewind_step=0,
        branches=(),
        transfer__ticket=exported,
        transfer__start=start,
    )
    workdir = str(tmp_path / start)
    records = lottery.run(config, workdir, log=lambda message: None).records
    assert [(record['level'], record['branch']) for record in records] == [(0, 'ticket'), (1, 'ticket')]
    assert records[0]['fraction_remaining'] == pytest.approx(ticket.density)  # level 0 trains the ticket
    assert records[1]['fraction_remaining'] < records[0]['fraction_remaining']  # and prunes it further
    starts[start], _ = checkpoints.restore_tree(os.path.join(workdir, 'checkpoints', 'trial_0', 'rewind'))
    lines = []
    assert lottery.run(config, workdir, log=lines.append).records == records  # resumed: nothing retrained
    assert any('level 0: already done' in line for line in lines)
  chex.assert_trees_all_equal(starts['ticket'], ticket.start_params)
  kept = ticket.keep_mask['dense_0']['kernel']
  assert not np.allclose(starts['reinit']['dense_0']['kernel'][kept], ticket.start_params['dense_0']['kernel'][kept])
  assert not np.any(starts['reinit']['dense_0']['kernel'][~kept])  # fresh weights, the ticket's mask


def test_an_output_layer_of_another_width_starts_fresh_dense_or_at_the_ticket_s_density(exported):
  ticket = tickets.load_exported(exported)
  fresh = jax.tree_util.tree_map(np.ones_like, ticket.start_params)
  fresh['output'] = {'kernel': np.full((16, 3), 2.0, np.float32), 'bias': np.zeros(3, np.float32)}
  params, _, keep_mask = tickets.transfer_start(ticket, fresh, {}, 'ticket', 'dense', seed=0)
  assert keep_mask['output']['kernel'].all() and np.all(params['output']['kernel'] == 2.0)
  chex.assert_trees_all_equal(params['dense_0'], ticket.start_params['dense_0'])
  _, _, keep_mask = tickets.transfer_start(ticket, fresh, {}, 'ticket', 'ticket_density', seed=0)
  density = ticket.keep_mask['output']['kernel'].mean()
  assert keep_mask['output']['kernel'].sum() == round(density * 48)
  with pytest.raises(tickets.TicketError, match='masks-only ticket has no weights'):
    tickets.transfer_start(tickets.Ticket(**{**ticket.__dict__, 'start_params': None}), fresh, {}, 'ticket', 'dense', 0)


def test_overlap_of_hand_made_masks():
  prunable = {'a': {'kernel': True, 'bias': False}, 'b': {'kernel': True}}
  first = {
      'a': {'kernel': np.array([1, 1, 0, 0], bool), 'bias': np.ones(2, bool)},
      'b': {'kernel': np.array([1, 0], bool)},
  }
  disjoint = {
      'a': {'kernel': np.array([0, 0, 1, 1], bool), 'bias': np.ones(2, bool)},
      'b': {'kernel': np.array([0, 1], bool)},
  }
  assert mask_overlap.overlap(first, first, prunable) == {'a': 1.0, 'b': 1.0, 'overall': 1.0}
  assert mask_overlap.overlap(first, disjoint, prunable) == {'a': 0.0, 'b': 0.0, 'overall': 0.0}
  assert mask_overlap.chance_overlap(first, disjoint, prunable) == {'a': 0.5, 'b': 0.5, 'overall': 0.5}


def test_report_compares_trials_and_levels_and_plots_layer_density(search, tmp_path):
  records = summaries.load(search)
  paths = mask_overlap.write_mask_report(search, records, str(tmp_path))
  assert sorted(os.path.basename(path) for path in paths) == [
      'layer_density.csv',
      'layer_density.png',
      'mask_overlap.csv',
  ]
  rows = mask_overlap.overlap_rows(search, records)
  trials = [row for row in rows if row['comparison'] == 'trials' and row['layer'] == 'overall']
  assert [row['level'] for row in trials] == [0, 1, 2]
  assert trials[0]['overlap'] == 1.0  # the dense masks
  assert 0.0 < trials[2]['overlap'] < 1.0
  second = next(r for r in records if (r['trial'], r['level'], r['branch']) == (1, 2, 'ticket'))['layer_density']
  assert min(second.values()) < trials[2]['chance'] < max(second.values())  # per layer densities, weighted
  levels = [row for row in rows if row['comparison'] == 'levels' and row['layer'] == 'overall']
  assert all(row['overlap'] == 1.0 for row in levels)  # iterative pruning never revives a weight
  figure = mask_overlap.plot_layer_density(records)
  assert {line.get_gid() for line in figure.axes[0].get_lines()} == {
      'dense_0/kernel',
      'dense_1/kernel',
      'output/kernel',
  }

"""Population search: each level's runs trained as cohorts of vmapped programs over the ('members',
'data') mesh, on the 8 simulated devices of the test session — the same science as one run at a
time (to float rounding), member counts that do not divide the devices, resume after a crash, and
the checks of `parallel.members_per_program`."""

import contextlib
import glob
import json
import os
import shutil
import signal

import chex
import jax
import numpy as np
import pytest

from lth_jax.config import errors
from lth_jax.search import population
from lth_jax.search import packing
from lth_jax.search import experiment as experiment_lib
from lth_jax.search import lottery
from lth_jax.training import checkpoints
from lth_jax.training import memory
from lth_jax.training import parallel
from lth_jax.training import run_state
from lth_jax.training import steps
from lth_jax.training import trainer as trainer_lib
from tests import helpers

pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')


def _config(**overrides):
  """Three trials, ticket + reinit, batch 36: level 0 is a cohort of 3 (laid 4 x 2 with one padding
  member: 36 does not divide over 8 devices), a pruned level a cohort of 6 (2 x 4, three per row)."""
  settings = dict(trials=3, branches=('reinit',), training__batch_size=36, checkpointing__every_steps=20)
  settings.update(overrides)
  return helpers.tiny_config(**settings)


def _records(workdir):
  with open(os.path.join(workdir, 'results.jsonl')) as file:
    records = [json.loads(line) for line in file]
  for record in records:
    record.pop('wall_seconds')
  return sorted(records, key=lambda record: (record['trial'], record['level'], record['branch']))


def _level_trees(workdir):
  """Every trial's rewind point and level checkpoints (weights and masks), as numpy."""
  trees = {}
  for directory in sorted(glob.glob(os.path.join(workdir, 'checkpoints', 'trial_*', '*'))):
    if os.path.basename(directory) != 'running':
      trees[os.path.relpath(directory, workdir)] = jax.tree_util.tree_map(
          np.asarray, checkpoints.restore_tree(directory)
      )
  return trees


@contextlib.contextmanager
def _interrupted(monkeypatch, call, step, action):
  """While the block runs, the `call`-th training program calls `action()` between dispatches at `step`."""
  original = trainer_lib.Trainer.train
  calls = []

  def train(self, state, *args, should_stop=None, **kwargs):
    calls.append(None)
    index = len(calls)

    def stop(current):
      if index == call and current == step:
        action()
      return should_stop(current) if should_stop is not None else False

    return original(self, state, *args, should_stop=stop, **kwargs)

  monkeypatch.setattr(trainer_lib.Trainer, 'train', train)
  try:
    yield
  finally:
    monkeypatch.setattr(trainer_lib.Trainer, 'train', original)


@pytest.fixture(scope='module')
def cohort_run(tmp_path_factory):
  """An uninterrupted run in cohort mode; returns (workdir, progress lines)."""
  workdir = str(tmp_path_factory.mktemp('cohort') / 'work')
  lines = []
  lottery.run(_config(), workdir, log=lines.append)
  return workdir, lines


def test_member_layout_groups_members_and_pads_only_where_nothing_else_fits():
  assert parallel.member_layout(8, 8, 64) == (8, 8)  # one member per device
  assert parallel.member_layout(4, 8, 64) == (4, 4)  # each member's batch over 2 devices
  assert parallel.member_layout(1, 8, 64) == (1, 1)  # plain data parallelism
  assert parallel.member_layout(6, 8, 64) == (2, 6)  # three members per row of 4 devices
  assert parallel.member_layout(3, 8, 36) == (4, 4)  # 36 does not divide by 8: one padding member
  assert parallel.member_layout(5, 8, 60) == (2, 6)
  assert parallel.member_layout(1, 8, 60) == (2, 2)  # Frankle & Carbin's batch 60 on 8 cores
  assert parallel.member_layout(2, 4, 64, local_device_counts=(2, 2)) == (2, 2)
  assert parallel.member_layout(4, 4, 64, local_device_counts=(2, 2)) == (2, 4)  # groups stay within hosts


def test_two_axis_mesh_rows_take_a_share_of_every_host():
  mesh = parallel.create_mesh(8, 4)
  assert mesh.axis_names == ('members', 'data') and mesh.devices.shape == (4, 2)
  assert parallel.member_groups(mesh) == 4 and parallel.data_size(mesh) == 2
  assert parallel.create_mesh().devices.shape == (1, 8)
  with pytest.raises(ValueError, match='3 member groups do not divide the 8 devices'):
    parallel.create_mesh(8, 3)


def test_groups_split_a_cohort_evenly_and_keep_the_groups_of_a_resumed_level():
  assert [len(group) for group in packing.groups(list(range(10)), 8)] == [5, 5]
  assert [len(group) for group in packing.groups(list(range(6)), 6)] == [6]
  assert [len(group) for group in packing.groups(list(range(3)), 1)] == [1, 1, 1]
  assert packing.groups([], 4) == []


@pytest.mark.slow
def test_cohort_mode_records_what_one_run_at_a_time_records(cohort_run, tmp_path):
  workdir, lines = cohort_run
  # One run at a time on 4 devices (36 divides over 4, not 8): the runs of a level one after another.
  sequential = lottery.run(
      _config(parallel__members_per_program=1, parallel__num_devices=4),
      str(tmp_path / 'sequential'),
      log=lambda message: None,
  ).records
  cohort = _records(workdir)
  assert [(r['trial'], r['level'], r['branch']) for r in cohort] == sorted(
      (r['trial'], r['level'], r['branch']) for r in sequential
  )
  by_run = {(r['trial'], r['level'], r['branch']): r for r in sequential}
  for record in cohort:
    alone = by_run[(record['trial'], record['level'], record['branch'])]
    for field in ('fraction_remaining', 'kept_weights', 'layer_density', 'nonzero_weights', 'steps', 'start_step'):
      assert record[field] == alone[field], field
    assert record['test_loss'] == pytest.approx(alone['test_loss'], rel=1e-4)
    assert record['test_accuracy'] == pytest.approx(alone['test_accuracy'], abs=2.5e-3)  # one example at most
  # The masks (winning tickets) are the same masks.
  cohort_trees, sequential_trees = _level_trees(workdir), _level_trees(str(tmp_path / 'sequential'))
  assert sorted(cohort_trees) == sorted(sequential_trees)
  for name, tree in cohort_trees.items():
    if 'mask' in tree:
      chex.assert_trees_all_equal(tree['mask'], sequential_trees[name]['mask'])
  # Progress: one line per cohort and evaluation, metrics condensed over the members.
  assert any(
      line.startswith('level 0/2 cohort of 3 (trials 0-2 x ticket): step 60/60 (100%) test_accuracy=') for line in lines
  )
  assert any(line.startswith('level 2/2 cohort of 6 (trials 0-2 x ticket, reinit): step 60/60') for line in lines)
  # TensorBoard: scalars per member.
  for trial in range(3):
    for run in ('level_0_ticket', 'level_1_ticket', 'level_1_reinit', 'levels'):
      assert glob.glob(os.path.join(workdir, 'tensorboard', f'trial_{trial}', run, 'events.*')), (trial, run)
  assert not os.path.exists(os.path.join(workdir, 'checkpoints', 'running'))


@pytest.mark.slow
def test_a_crashed_cohort_resumes_to_the_records_of_an_uninterrupted_run(cohort_run, tmp_path, monkeypatch):
  reference, _ = cohort_run
  workdir = str(tmp_path / 'work')

  def crash():
    raise RuntimeError('simulated crash')

  with _interrupted(monkeypatch, 2, 56, crash):  # level 1's cohort, after its checkpoints of steps 20 and 40
    with pytest.raises(RuntimeError, match='simulated crash'):
      lottery.run(_config(), workdir, log=lambda message: None)
  running = glob.glob(os.path.join(workdir, 'checkpoints', 'running', 'level_1_*'))
  assert len(running) == 1 and sorted(os.listdir(running[0])) == ['20', '40']
  assert [(r['level'], r['branch']) for r in _records(workdir)] == [(0, 'ticket')] * 3

  lines = []
  lottery.run(_config(), workdir, log=lines.append)
  assert any(
      line.startswith('level 1/2 cohort of 6 (trials 0-2 x ticket, reinit): resuming at step 40/60') for line in lines
  )
  assert sum('level 0: already done' in line for line in lines) == 3  # level 0 is not retrained
  assert _records(workdir) == _records(reference)  # bitwise, the wall-clock field aside
  chex.assert_trees_all_equal(_level_trees(workdir), _level_trees(reference))
  assert not os.path.exists(os.path.join(workdir, 'checkpoints', 'running'))


@pytest.mark.slow
def test_a_level_resumed_after_some_programs_finished_trains_only_the_others(tmp_path, monkeypatch):
  config = _config(trials=2, pruning__levels=1, parallel__members_per_program=2)  # level 1: two programs
  workdir = str(tmp_path / 'work')
  original = population.train
  trained = []

  def recording(members, *args):
    trained.append([member.key for member in members])
    if len(trained) == 3:  # level 1's second population
      raise RuntimeError('simulated crash')
    return original(members, *args)

  monkeypatch.setattr(population, 'train', recording)
  with pytest.raises(RuntimeError, match='simulated crash'):
    lottery.run(config, workdir, log=lambda message: None)
  assert trained == [['t0-ticket', 't1-ticket'], ['t0-ticket', 't0-reinit'], ['t1-ticket', 't1-reinit']]
  assert len(_records(workdir)) == 4
  trained.clear()
  lottery.run(config, workdir, log=lambda message: None)
  assert trained == [['t1-ticket', 't1-reinit']]
  assert len(_records(workdir)) == 6


def test_members_per_program_is_checked_before_anything_trains(tmp_path, monkeypatch):
  with pytest.raises(errors.ConfigError, match='parallel.members_per_program=-1: must be a non-negative'):
    lottery.run(_config(parallel__members_per_program=-1), str(tmp_path / 'negative'), log=lambda m: None)
  assert not os.path.exists(tmp_path / 'negative')
  # A population that does not fit: the estimate says what to set; auto falls back to what fits.
  member = memory.footprint(*_footprint_inputs())
  monkeypatch.setattr(memory, 'device_memory_bytes', lambda: int(3 * member.state_bytes / memory.USABLE_FRACTION))
  with pytest.raises(
      errors.ConfigError,
      match=r'parallel.members_per_program=6: a program of 6 runs needs about .* per device.*'
      r'set parallel.members_per_program=\d',
  ):
    lottery.run(
        _config(parallel__members_per_program=6, dataset__name='sum_of_two', model__name='linear'),
        str(tmp_path / 'large'),
        log=lambda m: None,
    )
  assert experiment_lib.prepare(_config(dataset__name='sum_of_two', model__name='linear')).members_per_program < 6
  monkeypatch.setattr(memory, 'device_memory_bytes', lambda: None)  # unknown memory: whole cohorts
  assert experiment_lib.prepare(_config()).members_per_program == 6
  # On CPU devices auto packs no more runs than devices: one CPU device trains one run at a time.
  assert experiment_lib.prepare(_config(parallel__num_devices=4)).members_per_program == 4
  assert experiment_lib.prepare(_config(parallel__num_devices=1)).members_per_program == 1
  assert (
      experiment_lib.prepare(_config(parallel__num_devices=1, parallel__members_per_program=6)).members_per_program == 6
  )


def _footprint_inputs():
  experiment = experiment_lib.prepare(_config(dataset__name='sum_of_two', model__name='linear'))
  from lth_jax import optim
  from lth_jax.training import feeds

  return experiment.model, feeds.input_example(experiment.dataset), optim.from_config(experiment.spec.training, 60)


@pytest.mark.slow
def test_changing_members_per_program_is_a_config_change(cohort_run, tmp_path):
  workdir = str(tmp_path / 'work')
  shutil.copytree(cohort_run[0], workdir)
  with pytest.raises(errors.ConfigError, match=r'parallel.members_per_program: 0 -> 2'):
    lottery.run(_config(parallel__members_per_program=2), workdir, log=lambda message: None)


@pytest.mark.slow
def test_sigterm_stops_a_cohort_at_its_current_step_and_a_rerun_finishes_the_same(cohort_run, tmp_path, monkeypatch):
  reference, _ = cohort_run
  workdir = str(tmp_path / 'work')
  # Level 2's cohort, between its checkpoints, gets what a batch scheduler sends.
  with _interrupted(monkeypatch, 3, 36, lambda: os.kill(os.getpid(), signal.SIGTERM)):
    with pytest.raises(
        run_state.Preempted,
        match=r'level 2/2 cohort of 6 \(trials 0-2 x ticket, reinit\): stopped '
        r'at step 36/60 on request \(SIGTERM\); checkpointed in .*/36',
    ):
      lottery.run(_config(), workdir, log=lambda message: None)
  running = glob.glob(os.path.join(workdir, 'checkpoints', 'running', 'level_2_*'))
  assert len(running) == 1 and sorted(os.listdir(running[0])) == ['20', '36']
  lines = []
  lottery.run(_config(), workdir, log=lines.append)
  assert any('resuming at step 36/60' in line for line in lines)
  assert _records(workdir) == _records(reference)
  chex.assert_trees_all_equal(_level_trees(workdir), _level_trees(reference))


def test_stability_populations_are_spread_over_the_members_axis():
  experiment = experiment_lib.prepare(helpers.tiny_config())
  four = experiment.trainer(4)  # stability.measure's full, ticket, random ticket and second full network
  assert four.population_size == 4 and four.mesh.devices.shape == (4, 2)
  two = experiment.trainer(2)  # linear mode connectivity's two copies
  assert two.mesh.devices.shape == (2, 4)
  params, model_state = experiment.trainer().init_variables(0)
  state = four.create_state(
      steps.stack_members([params] * 4),
      steps.stack_members([model_state] * 4),
      steps.stack_members([jax.tree_util.tree_map(lambda leaf: np.ones(leaf.shape, bool), params)] * 4),
      0,
  )
  kernel = state.params['dense_0']['kernel']
  assert kernel.sharding.spec[0] == 'members'
  assert {shard.data.shape[0] for shard in kernel.addressable_shards} == {1}  # one member per device row


@pytest.mark.slow  # a layout of before cohorts; tests/test_earlier_layouts.py resumes the others
def test_a_workdir_recorded_before_members_per_program_resumes_one_run_at_a_time(tmp_path):
  workdir = str(tmp_path / 'old')
  config = _config(trials=2, pruning__levels=1, parallel__members_per_program=1, parallel__num_devices=4)
  lottery.run(config, workdir, log=lambda message: None)
  path = os.path.join(workdir, 'config.json')
  recorded = json.load(open(path))
  del recorded['parallel']['members_per_program']  # as written before the field existed
  recorded.get('resolved', {}).get('parallel', {}).pop('members_per_program', None)
  json.dump(recorded, open(path, 'w'))
  lines = []
  grown = _config(trials=2, pruning__levels=2, parallel__num_devices=4)  # auto, one more level
  lottery.run(grown, workdir, log=lines.append)
  assert any('before parallel.members_per_program existed: one run at a time' in line for line in lines)
  trained = [line for line in lines if ': step ' in line]
  assert trained and not any('cohort of' in line for line in trained)  # level 2's runs one at a time
  assert json.load(open(path))['parallel']['members_per_program'] == 1
  lines = []
  lottery.run(grown, workdir, log=lines.append)  # auto again: the recorded mode, nothing to train
  assert any('recorded with parallel.members_per_program=1; continuing' in line for line in lines)

"""Sweeps (lth_jax.sweep): variants of one base config in one workdir, their shared dense run, the same
records as each variant run alone, resuming, adding values, and the bad inputs refused before training."""

import glob
import json
import os
import shutil
import signal

import pytest

import lth_jax
from lth_jax import config as config_lib
from lth_jax.search import lottery
from lth_jax import results as results_lib
from lth_jax.search import sweep_plan
from lth_jax.search import sweeps
from lth_jax.search import workdir as workdir_lib
from tests import helpers
from tests import test_resume

REWIND_STEPS = (0, 5)
AXES = {'pruning.rewind_step': REWIND_STEPS, 'pruning.fraction': (0.5,)}


def _config(**overrides):
  """The tiny config, one pruning level of 40 steps with the reinit control."""
  return helpers.tiny_config(**{'pruning__levels': 1, 'branches': ('reinit',), 'training__num_steps': 40, **overrides})


def assert_same_science(records, alone_records):
  """A variant's records in a sweep against the same variant run alone: the same runs, identical mask
  sizes per layer, and test numbers equal to rounding-level drift (the runs train in other programs)."""
  records, alone_records = _without_timing(records), _without_timing(alone_records)
  assert [(r['trial'], r['level'], r['branch']) for r in records] == [
      (r['trial'], r['level'], r['branch']) for r in alone_records
  ]
  for record, alone in zip(records, alone_records):
    for field in ('fraction_remaining', 'kept_weights', 'layer_density', 'steps', 'start_step', 'end_step'):
      assert record[field] == alone[field], field
    assert [entry['step'] for entry in record['curve']] == [entry['step'] for entry in alone['curve']]
    assert record['test_loss'] == pytest.approx(alone['test_loss'], rel=1e-4)
    assert record['test_accuracy'] == pytest.approx(alone['test_accuracy'], abs=2.5e-3)  # one example at most


def _without_timing(records):
  """Records without their wall-clock fields, variant and dense run, in a fixed order."""
  kept = [{k: v for k, v in record.items() if k not in ('wall_seconds', 'variant', 'dense_run')} for record in records]
  return sorted(kept, key=lambda record: (record['trial'], record['level'], record['branch']))


@pytest.fixture(scope='module')
def rewind_sweep(tmp_path_factory):
  """A sweep over two rewind steps, with its log lines."""
  workdir = str(tmp_path_factory.mktemp('sweep') / 'work')
  lines = []
  results = lth_jax.sweep(_config(), AXES, workdir, log=lines.append)
  return workdir, results, lines


def test_a_sweep_trains_one_dense_run_and_equals_its_variants_run_alone(rewind_sweep, tmp_path):
  workdir, results, lines = rewind_sweep
  assert [variant.label for variant in results.variants] == [
      'pruning.fraction=0.5,pruning.rewind_step=0',
      'pruning.fraction=0.5,pruning.rewind_step=5',
  ]
  assert len(os.listdir(os.path.join(workdir, workdir_lib.DENSE_DIRECTORY))) == 1
  assert sum('level 0: already done' in line for line in lines) == len(REWIND_STEPS)  # no variant trains it
  for step in REWIND_STEPS:
    records = results.select(variant={'pruning.rewind_step': step, 'pruning.fraction': 0.5})
    assert [(r['level'], r['branch']) for r in records] == [(0, 'ticket'), (1, 'ticket'), (1, 'reinit')]
    alone = lottery.run(_config(pruning__rewind_step=step), str(tmp_path / str(step)), log=lambda line: None)
    assert_same_science(records, alone.records)
  assert [record['start_step'] for record in results.select(level=1, branch='ticket')] == [0, 5]
  # Level 1 of both variants trained as one program, each member from its own rewind point.
  assert any(line.startswith('level 1/1 cohort of 4 (2 variants x trial 0 x ticket, reinit)') for line in lines)


@pytest.mark.slow
def test_a_finished_sweep_trains_nothing_and_refuses_other_axes(rewind_sweep, tmp_path):
  workdir = str(tmp_path / 'work')
  shutil.copytree(rewind_sweep[0], workdir)
  lines = []
  again = lth_jax.sweep(_config(), AXES, workdir, log=lines.append)
  assert not any(line.startswith('level ') for line in lines)  # no progress line: nothing trained
  assert _without_timing(again.records) == _without_timing(rewind_sweep[1].records)
  with pytest.raises(
      config_lib.ConfigError,
      match='holds a sweep over pruning.fraction, pruning.rewind_step, not over pruning.rewind_step',
  ):
    lth_jax.sweep(_config(), {'pruning.rewind_step': REWIND_STEPS}, workdir)
  # A new fraction needs no new snapshot: the dense run stays, only the new variants' level 1 trains.
  lines = []
  grown = lth_jax.sweep(_config(), {**AXES, 'pruning.fraction': (0.5, 0.25)}, workdir, log=lines.append)
  trained = [line for line in lines if line.startswith('level ')]
  assert trained and all(line.startswith('level 1/1') for line in trained)
  assert not any('training its level 0 again' in line for line in lines)
  assert _without_timing(grown.select(variant={'pruning.rewind_step': 5, 'pruning.fraction': 0.5})) == _without_timing(
      rewind_sweep[1].select(variant={'pruning.rewind_step': 5, 'pruning.fraction': 0.5})
  )
  assert len(grown.select(level=1, branch='ticket')) == 4


@pytest.mark.slow
def test_a_new_rewind_point_trains_the_dense_run_again_and_keeps_the_other_variants(rewind_sweep, tmp_path):
  workdir = str(tmp_path / 'work')
  shutil.copytree(rewind_sweep[0], workdir)
  lines = []
  grown = lth_jax.sweep(_config(), {**AXES, 'pruning.rewind_step': (*REWIND_STEPS, 20)}, workdir, log=lines.append)
  assert any('training its level 0 again' in line for line in lines)  # step 20 was not kept
  for variant in rewind_sweep[1].variants:
    records = _without_timing(rewind_sweep[1].select(variant=variant.as_dict()))
    assert _without_timing(grown.select(variant=variant.as_dict())) == records
  assert len(grown.select(variant={'pruning.rewind_step': 20, 'pruning.fraction': 0.5})) == 3
  assert json.load(open(os.path.join(workdir, workdir_lib.SWEEP_FILE)))['axes']['pruning.rewind_step'] == [0, 5, 20]


def test_learning_rate_variants_train_level_0_as_members_of_one_program(tmp_path):
  workdir = str(tmp_path / 'work')
  lines = []
  rates = (0.05, 0.02)
  results = lth_jax.sweep(_config(), {'training.learning_rate': rates}, workdir, log=lines.append)
  assert not os.path.exists(os.path.join(workdir, workdir_lib.DENSE_DIRECTORY))  # no level 0 is shared
  assert any(line.startswith('level 0/1 cohort of 2 (2 variants x trial 0 x ticket)') for line in lines)
  assert any('each member with its own learning_rate' in line for line in lines)
  rate = rates[1]  # the second member of the program
  records = results.select(variant={'training.learning_rate': rate})
  alone = lottery.run(_config(training__learning_rate=rate), str(tmp_path / str(rate)), log=lambda line: None)
  assert_same_science(records, alone.records)
  first, second = (results.select(variant={'training.learning_rate': rate}, level=0)[0] for rate in rates)
  assert first['test_loss'] != second['test_loss']  # each member trained with its own rate


def test_a_variant_that_shares_its_level_0_with_none_trains_it_in_its_own_folder(tmp_path):
  workdir = str(tmp_path / 'work')
  results = lth_jax.sweep(_config(), {'training.learning_rate': (3e-3,)}, workdir, log=lambda line: None)
  assert not os.path.exists(os.path.join(workdir, workdir_lib.DENSE_DIRECTORY))
  assert [(r['level'], r['branch'], r['variant']) for r in results.records] == [
      (0, 'ticket', {'training.learning_rate': 3e-3}),
      (1, 'ticket', {'training.learning_rate': 3e-3}),
      (1, 'reinit', {'training.learning_rate': 3e-3}),
  ]


def test_axes_are_parsed_and_expanded():
  assert sweep_plan.parse_axis('pruning.rewind_step=0,100,500') == ('pruning.rewind_step', (0, 100, 500))
  assert sweep_plan.parse_axis('pruning.mode=iterative,one_shot') == ('pruning.mode', ('iterative', 'one_shot'))
  assert sweep_plan.parse_axis('training.decay_boundaries=(10,20);(30,)') == (
      'training.decay_boundaries',
      ((10, 20), (30,)),
  )
  variants = sweep_plan.variants({'a.x': (1, 2), 'b.y': ('p', 'q')})
  assert [variant.label for variant in variants] == ['a.x=1,b.y=p', 'a.x=1,b.y=q', 'a.x=2,b.y=p', 'a.x=2,b.y=q']
  assert sweep_plan.variants({'b.y': ('p',), 'a.x': (1,)})[0].label == 'a.x=1,b.y=p'  # one folder whatever the order
  config = _config()
  config.sweep = {'pruning': {'rewind_step': (0, 10)}, 'training': {'learning_rate': 0.1}}
  assert sweep_plan.axes_from_config(config) == {'pruning.rewind_step': (0, 10), 'training.learning_rate': (0.1,)}
  assert not sweep_plan.Variant(()).config(config).sweep


def test_the_dense_run_is_shared_only_where_level_0_is_the_same():
  specs = {
      name: lth_jax.search.prepare(config).spec
      for name, config in {
          'base': _config(),
          'rewind': _config(pruning__rewind_step=20),
          'branches': _config(branches=('snip',)),
          'learning_rate': _config(training__learning_rate=1e-3),
          'excluded': _config(pruning__excluded_layers=('output',), pruning__layer_fractions={}),
      }.items()
  }
  keys = {name: sweep_plan.dense_key(spec) for name, spec in specs.items()}
  assert keys['base'] == keys['rewind'] == keys['branches']
  assert len({keys['base'], keys['learning_rate'], keys['excluded']}) == 3
  assert sweep_plan.snapshot_steps([specs['base'], specs['rewind']]) == (5, 20)


@pytest.mark.parametrize(
    'axes, message',
    [
        ({'pruning.rewind_stepp': (0, 5)}, r'sweep axis pruning.rewind_stepp: not a config field'),
        ({'pruning': (0, 5)}, r'sweep axis pruning: not a config field'),
        ({'pruning.rewind_step': ('late',)}, r"sweep axis pruning.rewind_step: 'late' is not a value"),
        ({'pruning.rewind_step': (0, 0)}, r'sweep axis pruning.rewind_step: a value is repeated'),
        ({'pruning.rewind_step': (0, 40)}, r'sweep variant pruning.rewind_step=40: pruning.rewind_step=40'),
        (
            {'pruning.rewind_step': (5,), 'pruning.rewind_epoch': (0.5,)},
            r'sweep variant .*: pruning.rewind_epoch=0.5: set either pruning.rewind_step',
        ),
    ],
)
def test_bad_axes_are_refused_before_anything_trains(tmp_path, axes, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    lth_jax.sweep(_config(), axes, str(tmp_path / 'work'), log=lambda line: None)
  assert not os.path.exists(tmp_path / 'work')


def test_a_sweep_workdir_refuses_another_base_config(rewind_sweep, tmp_path):
  workdir = str(tmp_path / 'work')
  os.makedirs(workdir)
  shutil.copy(os.path.join(rewind_sweep[0], workdir_lib.SWEEP_FILE), workdir)
  with pytest.raises(
      config_lib.ConfigError, match=r'different base config (?s:.*)training.learning_rate: 0.003 -> 0.001'
  ):
    lth_jax.sweep(_config(training__learning_rate=1e-3), AXES, workdir)


def test_a_config_with_sweep_axes_is_not_run_as_one_search(tmp_path):
  config = _config()
  config.sweep = {'pruning': {'rewind_step': (0, 5)}}
  with pytest.raises(config_lib.ConfigError, match=r'sweep: the config names sweep axes \(pruning.rewind_step\)'):
    lth_jax.run(config, str(tmp_path / 'work'))


@pytest.mark.slow
def test_a_sweep_killed_mid_variant_resumes_to_the_records_of_an_uninterrupted_one(tmp_path):
  config = test_resume._config_file(str(tmp_path), pruning__levels=1)
  axis = '--sweep=pruning.rewind_step=0,5'
  returncode, _, stderr = test_resume._finish(test_resume._start(tmp_path / 'reference', axis, config=config))
  assert returncode == 0, stderr[-3000:]
  killed = tmp_path / 'killed'
  process = test_resume._start(killed, axis, pause='2:56', config=config)  # level 1 of both variants
  test_resume._wait_for_pause(process)
  running = glob.glob(str(killed / 'checkpoints' / 'running' / 'level_1_*'))
  assert len(running) == 1, running
  test_resume._wait_until(lambda: os.path.isdir(os.path.join(running[0], '40')))  # the save has committed
  os.kill(process.pid, signal.SIGKILL)
  assert test_resume._finish(process)[0] == -signal.SIGKILL
  returncode, stdout, stderr = test_resume._finish(test_resume._start(killed, axis, config=config))
  assert returncode == 0, stderr[-3000:]
  assert 'resuming at step 40/60' in stdout and 'level 0/0' not in stdout  # the dense run is not trained again
  expected, got = sweeps.load(str(tmp_path / 'reference')), sweeps.load(str(killed))
  for variant in expected.variants:
    assert _without_timing(got.select(variant=variant.as_dict())) == _without_timing(
        expected.select(variant=variant.as_dict())
    )


def test_records_left_pending_by_a_killed_population_are_written_once_on_the_next_run(rewind_sweep, tmp_path):
  """A sweep killed after a shared population's pending records but before every variant's results file took its
  records finishes the appends when it runs again, and trains nothing."""
  workdir = str(tmp_path / 'work')
  shutil.copytree(rewind_sweep[0], workdir)
  variant = sorted(os.listdir(os.path.join(workdir, workdir_lib.VARIANTS_DIRECTORY)))[1]
  results_path = os.path.join(workdir, workdir_lib.VARIANTS_DIRECTORY, variant, 'results.jsonl')
  lines = open(results_path).read().splitlines(keepends=True)
  level_one = [line for line in lines if json.loads(line)['level'] == 1]
  with open(results_path, 'w') as file:  # the kill came before this variant's append
    file.writelines(line for line in lines if line not in level_one)
  running = os.path.join(workdir, 'checkpoints', 'running')
  os.makedirs(running, exist_ok=True)
  with open(os.path.join(running, 'level_1_4_abcdef12' + results_lib.PENDING_SUFFIX), 'w') as file:
    json.dump({f'{workdir_lib.VARIANTS_DIRECTORY}/{variant}': [json.loads(line) for line in level_one]}, file)
  lines_logged = []
  again = lth_jax.sweep(_config(), AXES, workdir, log=lines_logged.append)
  assert any('wrote 2 record(s)' in line for line in lines_logged)
  assert not any(line.startswith('level ') for line in lines_logged)  # nothing trained again
  assert _without_timing(again.records) == _without_timing(rewind_sweep[1].records)
  assert open(results_path).read().splitlines(keepends=True) == lines
  assert not glob.glob(os.path.join(running, '*' + results_lib.PENDING_SUFFIX))


def test_variants_of_another_shape_train_in_programs_of_their_own(tmp_path):
  lines = []
  results = lth_jax.sweep(
      _config(pruning__levels=0, branches=()), {'model.hidden_sizes': ((16,), (24,))}, str(tmp_path / 'w'), lines.append
  )
  assert sum(line.startswith('lth_jax sweep: levels 0-0: 1 search(es)') for line in lines) == 2
  assert [len(results.select(variant=variant.as_dict())) for variant in results.variants] == [1, 1]

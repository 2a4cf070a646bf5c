"""Runs that survive: kill -9 and SIGTERM in the middle of a level, damaged checkpoints, the config
check at start, bad inputs, and the resumable Trainer underneath.

The end-to-end checks run the command line in subprocesses on 2 simulated devices (faster than 8),
and compare with an uninterrupted run of the same command: bitwise, all but the wall-clock fields.
"""

import glob
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from lth_jax.config import compatibility
from lth_jax.config import errors
from lth_jax.config import schema
from lth_jax import masks as masks_lib
from lth_jax.search import lottery
from lth_jax.search import workdir as workdir_lib
from lth_jax.training import checkpoints
from lth_jax.training import parallel
from lth_jax.training import preemption
from lth_jax.training import run_state
from lth_jax.training import steps
from tests import helpers
from tests import test_train

# Orbax's reads of a damaged checkpoint fail inside asyncio tasks whose leftovers are reported (as
# "Event loop is closed") whenever they are collected, possibly during a later test.
pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMINGS = ('examples_per_second', 'evaluation_seconds')  # curve fields that differ between runs
# Checkpoints at steps 20 and 40 of each run; the levels >= 1 train from the rewind step 5 to 60, in
# dispatches of 16 steps: 5-20, 20-36, 36-40, 40-56, 56-60.
OVERRIDES = {'checkpointing__every_steps': 20, 'branches': ('reinit',)}
# Levels >= 1 train the ticket and the reinit control as one cohort program (2 members on 2 devices).
COHORT = 'level {level}/2 cohort of 2 (trial 0 x ticket, reinit)'


def _running_level_1(workdir):
  """The periodic checkpoints of level 1's cohort program."""
  found = glob.glob(os.path.join(str(workdir), 'checkpoints', 'running', 'level_1_t0-ticket_2_*'))
  assert len(found) == 1, found
  return found[0]


WALL_CLOCK_FIELDS = ('wall_seconds',)


def _config_file(directory, **overrides) -> str:
  path = os.path.join(directory, 'config.py')
  with open(path, 'w') as file:
    file.write(
        'from tests import helpers\n\n\ndef get_config():\n'
        f'  return helpers.tiny_config(**{dict(OVERRIDES, **overrides)!r})\n'
    )
  return path


def _start(workdir, *arguments, pause=None, config=None, earlier_optimizer_layout=False, earlier_state_layout=False):
  """Starts `python -m lth_jax.main` (through the pausing driver) on the tiny config."""
  environment = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu')
  for name in ('LTH_TEST_PAUSE', 'LTH_TEST_EARLIER_OPTIMIZER_LAYOUT', 'LTH_TEST_EARLIER_STATE_LAYOUT'):
    environment.pop(name, None)
  if pause:
    environment['LTH_TEST_PAUSE'] = pause
  if earlier_optimizer_layout:
    environment['LTH_TEST_EARLIER_OPTIMIZER_LAYOUT'] = '1'
  if earlier_state_layout:
    environment['LTH_TEST_EARLIER_STATE_LAYOUT'] = '1'
  workdir = str(workdir)
  config = config or _config_file(os.path.dirname(workdir))
  log = open(f'{workdir}.log', 'a')
  process = subprocess.Popen(
      [sys.executable, '-m', 'tests.resume_driver', f'--config={config}', f'--workdir={workdir}', *arguments],
      cwd=REPO,
      env=environment,
      stdout=subprocess.PIPE,
      stderr=log,
      text=True,
  )
  process.log_path = log.name
  return process


def _finish(process, timeout=300):
  """(return code, stdout, stderr) once the process has ended."""
  stdout, _ = process.communicate(timeout=timeout)
  with open(process.log_path) as file:
    return process.returncode, stdout, file.read()


def _wait_for_pause(process):
  """Reads stdout until the driver says it paused; the process then waits for a signal."""
  lines = []
  for line in process.stdout:
    lines.append(line)
    if line.startswith('PAUSED'):
      return ''.join(lines)
  _, _, stderr = _finish(process)
  raise AssertionError(f'the run ended before pausing:\n{"".join(lines)[-3000:]}\n{stderr[-3000:]}')


def _wait_until(condition, timeout=60.0):
  deadline = time.monotonic() + timeout
  while not condition():
    assert time.monotonic() < deadline, 'timed out'
    time.sleep(0.02)


def _records(workdir):
  """The records of a workdir without wall-clock fields, in a fixed order."""
  with open(os.path.join(workdir, 'results.jsonl')) as file:
    records = [json.loads(line) for line in file]
  for record in records:
    for field in WALL_CLOCK_FIELDS:
      record.pop(field)
  return sorted(records, key=lambda record: (record['trial'], record['level'], record['branch']))


def _saved_trees(workdir):
  """Every kept checkpoint of trial 0 (rewind point, each level's weights and mask) as numpy."""
  trees = {}
  for directory in sorted(glob.glob(os.path.join(workdir, 'checkpoints', 'trial_0', '*'))):
    if os.path.basename(directory) != 'running':
      trees[os.path.basename(directory)] = jax.tree_util.tree_map(np.asarray, checkpoints.restore_tree(directory))
  return trees


def _assert_same_as_uninterrupted(workdir, reference):
  assert _records(workdir) == _records(reference)
  resumed, expected = _saved_trees(workdir), _saved_trees(reference)
  assert sorted(resumed) == sorted(expected) == ['level_0', 'level_1', 'level_2', 'rewind']
  chex.assert_trees_all_equal(resumed, expected)  # masks and weights, bitwise
  assert not os.path.exists(os.path.join(workdir, 'checkpoints', 'trial_0', 'running'))  # runs cleaned up
  assert not os.path.exists(os.path.join(workdir, 'checkpoints', 'running'))


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted run of the command."""
  workdir = tmp_path_factory.mktemp('reference') / 'work'
  returncode, stdout, stderr = _finish(_start(workdir))
  assert returncode == 0, stderr[-3000:]
  assert COHORT.format(level=2) + ': step 60/60 (100%)' in stdout
  return str(workdir)


@pytest.fixture(scope='module')
def killed(tmp_path_factory):
  """A run killed with SIGKILL in level 1's cohort (ticket and reinit) at step 56, after its checkpoints of steps 20 and 40."""
  workdir = tmp_path_factory.mktemp('killed') / 'work'
  process = _start(workdir, pause='2:56')  # second training run: level 1's cohort
  _wait_for_pause(process)
  running = _running_level_1(workdir)
  _wait_until(lambda: os.path.isdir(os.path.join(running, '40')))  # the asynchronous save has committed
  os.kill(process.pid, signal.SIGKILL)
  returncode, _, _ = _finish(process)
  assert returncode == -signal.SIGKILL
  assert sorted(os.listdir(running)) == ['20', '40']
  return str(workdir)


@pytest.mark.slow
def test_a_run_killed_mid_level_resumes_to_the_same_results(reference, killed, tmp_path):
  workdir = str(tmp_path / 'work')
  shutil.copytree(killed, workdir)
  assert [(r['level'], r['branch']) for r in _records(workdir)] == [(0, 'ticket')]
  returncode, stdout, stderr = _finish(_start(workdir))
  assert returncode == 0, stderr[-3000:]
  assert 'level 0: already done' in stdout
  assert COHORT.format(level=1) + ': resuming at step 40/60' in stdout
  _assert_same_as_uninterrupted(workdir, reference)


@pytest.mark.slow
def test_a_checkpoint_written_before_the_hyperparameters_lived_in_the_optimizer_state_resumes(reference, tmp_path):
  """A workdir killed mid-level by a version whose optimizer state held no hyperparameters resumes from
  its checkpoint (not from the level's start) to the records of an uninterrupted run."""
  workdir = tmp_path / 'work'
  process = _start(workdir, pause='2:56', earlier_optimizer_layout=True)
  _wait_for_pause(process)
  running = _running_level_1(workdir)
  _wait_until(lambda: os.path.isdir(os.path.join(running, '40')))
  os.kill(process.pid, signal.SIGKILL)
  assert _finish(process)[0] == -signal.SIGKILL
  with open(os.path.join(running, '40', 'metadata', 'metadata')) as file:
    assert 'optimizer_layout' not in json.load(file)
  returncode, stdout, stderr = _finish(_start(workdir))
  assert returncode == 0, stderr[-3000:]
  assert COHORT.format(level=1) + ': resuming at step 40/60' in stdout
  assert 'cannot be restored' not in stderr
  _assert_same_as_uninterrupted(str(workdir), reference)


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(reference, killed, tmp_path):
  workdir = str(tmp_path / 'work')
  shutil.copytree(killed, workdir)
  running = _running_level_1(workdir)
  data_files = glob.glob(os.path.join(running, '40', 'arrays', 'd', '*'))
  assert data_files
  for path in data_files:  # a truncated copy
    with open(path, 'r+b') as file:
      file.truncate(os.path.getsize(path) // 2)
  shutil.copytree(os.path.join(running, '20'), os.path.join(running, '50.orbax-checkpoint-tmp'))  # unfinished
  returncode, stdout, stderr = _finish(_start(workdir))
  assert returncode == 0, stderr[-3000:]
  assert f'checkpoint {os.path.join(running, "40")} cannot be restored' in stderr
  assert 'falling back to step 20' in stderr
  assert COHORT.format(level=1) + ': resuming at step 20/60' in stdout
  _assert_same_as_uninterrupted(workdir, reference)


@pytest.mark.slow
def test_sigterm_checkpoints_the_current_step_and_a_restart_finishes_the_same(reference, tmp_path):
  workdir = str(tmp_path / 'work')
  process = _start(workdir, pause='1:36')  # level 0, past the rewind step 5 and the checkpoint at 20
  _wait_for_pause(process)
  process.send_signal(signal.SIGTERM)
  returncode, _, stderr = _finish(process)
  running = os.path.join(workdir, 'checkpoints', 'trial_0', 'running', 'level_0_ticket')
  assert returncode == 143, stderr[-3000:]
  assert (
      f'lth_jax: trial 0 level 0/2 ticket: stopped at step 36/60 on request (SIGTERM); checkpointed in '
      f'{os.path.join(running, "36")}; run the same command again to continue'
  ) in stderr
  assert sorted(os.listdir(running)) == ['20', '36']
  assert not os.path.exists(os.path.join(workdir, 'results.jsonl'))
  # The rewind point was saved when it was taken, not at the end of the level.
  expected_rewind = checkpoints.restore_tree(os.path.join(reference, 'checkpoints', 'trial_0', 'rewind'))
  chex.assert_trees_all_equal(
      checkpoints.restore_tree(os.path.join(workdir, 'checkpoints', 'trial_0', 'rewind')), expected_rewind
  )

  returncode, stdout, stderr = _finish(_start(workdir))
  assert returncode == 0, stderr[-3000:]
  assert 'trial 0 level 0/2 ticket: resuming at step 36/60' in stdout
  _assert_same_as_uninterrupted(workdir, reference)


@pytest.mark.slow
def test_a_run_alone_checkpointed_before_every_state_had_a_member_axis_resumes(reference, tmp_path):
  """A run alone stopped mid-level by a version whose run alone had no member axis (its state, metric sums
  and snapshots unstacked, its curve's metrics numbers) resumes from that checkpoint to the records and
  weights of an uninterrupted run."""
  workdir = str(tmp_path / 'work')
  process = _start(workdir, pause='1:36', earlier_state_layout=True)  # level 0: the ticket alone
  _wait_for_pause(process)
  process.send_signal(signal.SIGTERM)
  returncode, _, stderr = _finish(process)
  assert returncode == 143, stderr[-3000:]
  running = os.path.join(workdir, 'checkpoints', 'trial_0', 'running', 'level_0_ticket')
  assert sorted(os.listdir(running)) == ['20', '36']
  with open(os.path.join(running, '36', 'metadata', 'metadata')) as file:
    written = json.load(file)
  assert 'member_axis' not in written
  kernel = written['checksums']["['state'].params['dense_0']['kernel']"]
  assert kernel.startswith('<f4[64, 32]:')  # the weights of the one run, without a member axis
  assert written['curve'] and all(isinstance(entry['train_loss'], float) for entry in written['curve'])
  assert written['snapshot_steps'] == [5]  # the rewind point, unstacked too
  returncode, stdout, stderr = _finish(_start(workdir))
  assert returncode == 0, stderr[-3000:]
  assert 'trial 0 level 0/2 ticket: resuming at step 36/60' in stdout
  assert 'cannot be restored' not in stderr
  _assert_same_as_uninterrupted(workdir, reference)


@pytest.mark.slow
def test_allow_config_change_flag(reference, tmp_path):
  workdir = str(tmp_path / 'work')
  shutil.copytree(reference, workdir)
  changed = _config_file(str(tmp_path), training__learning_rate=0.01)
  returncode, stdout, stderr = _finish(_start(workdir, config=changed))
  assert returncode == 1
  assert 'training.learning_rate: 0.003 -> 0.01' in stderr
  returncode, stdout, stderr = _finish(_start(workdir, '--allow_config_change', config=changed))
  assert returncode == 0, stderr[-3000:]
  assert 'config changed' in stdout and 'training.learning_rate: 0.003 -> 0.01' in stdout
  with open(os.path.join(workdir, 'config.json')) as file:
    assert json.load(file)['training']['learning_rate'] == 0.01
  assert _records(workdir) == _records(reference)  # finished records are kept as they are


# In-process checks (8 simulated devices).


def _one(tree):
  """A host tree as the state of a population of one (a run alone): a leading member axis of size 1."""
  return steps.stack_members([tree])


def _quiet(message):
  del message


def test_config_change_is_refused_with_the_differing_fields(reference, tmp_path):
  workdir = str(tmp_path / 'work')
  shutil.copytree(reference, workdir)
  with open(os.path.join(workdir, 'config.json')) as file:
    written = json.load(file)
  assert written.pop('resolved')['training']['batch_size'] == 32
  assert written == compatibility.config_to_json(helpers.tiny_config(**OVERRIDES))
  changed = helpers.tiny_config(**OVERRIDES, training__learning_rate=0.01, pruning__fraction=0.4, dataset__seed=3)
  with pytest.raises(errors.ConfigError) as raised:
    lottery.run(changed, workdir, log=_quiet)
  message = str(raised.value)
  for line in ('training.learning_rate: 0.003 -> 0.01', 'pruning.fraction: 0.5 -> 0.4', 'dataset.seed: 0 -> 3'):
    assert line in message
  assert 'allow_config_change' in message and os.path.join(workdir, 'config.json') in message
  # Fields that cannot change the recorded results pass: checkpointing, trials, levels at a set fraction.
  lines = []
  neutral = helpers.tiny_config(
      **dict(OVERRIDES, checkpointing__every_steps=7, trials=1, report__print_surviving_weights=True, pruning__levels=1)
  )
  results = lottery.run(neutral, workdir, log=lines.append)
  assert len(results.records) == 5
  assert any('checkpointing.every_steps: 20 -> 7' in line and 'pruning.levels: 2 -> 1' in line for line in lines)
  # allow_config_change lets a results-affecting change through and makes the new config the workdir's.
  lottery.run(changed, workdir, log=_quiet, allow_config_change=True)
  lottery.run(changed, workdir, log=_quiet)


def test_config_differences_ignore_fields_added_at_their_defaults():
  new = compatibility.config_to_json(helpers.tiny_config())
  old = json.loads(json.dumps(new))
  del old['checkpointing']
  old['training'].pop('steps_per_dispatch')  # absent before; the new value 16 is not the default 64
  changing, neutral = compatibility.config_differences(old, new, compatibility.config_to_json(schema.base_config()))
  assert changing == ['training.steps_per_dispatch: (absent) -> 16']
  assert neutral == []  # checkpointing.* absent before and at its defaults now: no difference


def test_a_config_json_without_a_pruning_criterion_ran_magnitude_pruning(tmp_path):
  """A workdir written before `pruning.criterion` resumes at its default; another criterion is a change."""
  old = compatibility.config_to_json(helpers.tiny_config())
  del old['pruning']['criterion']
  (tmp_path / 'config.json').write_text(json.dumps(old))
  (tmp_path / 'results.jsonl').write_text('{"trial": 0, "level": 0, "branch": "ticket"}\n')  # it holds runs
  lines = []
  with pytest.raises(errors.ConfigError, match='pruning.criterion: \\(absent\\) -> "snip"'):
    workdir_lib.check_config_file(helpers.tiny_config(pruning__criterion='snip'), str(tmp_path), False, lines.append)
  workdir_lib.check_config_file(helpers.tiny_config(), str(tmp_path), False, log=lines.append)
  assert not any('pruning.criterion' in line for line in lines)
  assert json.loads((tmp_path / 'config.json').read_text())['pruning']['criterion'] == 'magnitude'  # now recorded


@pytest.mark.parametrize(
    'overrides, message',
    [
        ({'training__num_steps': '60'}, "training.num_steps='60'"),
        ({'training__eval_every': 2.5}, 'training.eval_every=2.5: must be a non-negative integer'),
        ({'checkpointing__every_steps': -1}, 'checkpointing.every_steps=-1: must be a non-negative integer'),
        ({'checkpointing__max_to_keep': 0}, 'checkpointing.max_to_keep=0: must be a positive integer'),
        ({'checkpointing__tensorboard': 'yes'}, "checkpointing.tensorboard='yes': must be True or False"),
    ],
)
def test_wrong_types_are_refused_before_anything_is_written(tmp_path, overrides, message):
  config = helpers.tiny_config()
  for field, value in overrides.items():  # past the ConfigDict's own type check, as a config file could
    section, name = field.split('__')
    with config[section].ignore_type():
      config[section][name] = value
  with pytest.raises(errors.ConfigError, match=message.replace('(', r'\(').replace(')', r'\)')):
    lottery.run(config, str(tmp_path / 'work'), log=_quiet)
  assert not os.path.exists(tmp_path / 'work')


def test_a_workdir_that_is_a_file_or_below_a_file_is_refused(tmp_path):
  a_file = tmp_path / 'results'
  a_file.write_text('not a folder')
  with pytest.raises(compatibility.WorkdirError, match=f'workdir {a_file}: exists and is not a folder'):
    lottery.run(helpers.tiny_config(), str(a_file), log=_quiet)
  with pytest.raises(compatibility.WorkdirError, match=f'workdir {a_file}/work: cannot create or write there'):
    lottery.run(helpers.tiny_config(), str(a_file / 'work'), log=_quiet)


def test_an_unwritable_workdir_is_refused(tmp_path):
  workdir = tmp_path / 'work'
  workdir.mkdir()
  workdir.chmod(0o500)
  try:
    try:
      (workdir / 'probe').write_text('')
    except PermissionError:
      pass
    else:
      pytest.skip(
          'running as root (or with CAP_DAC_OVERRIDE): chmod does not stop writes here; the '
          'folder-below-a-file case covers the same error path'
      )
    with pytest.raises(compatibility.WorkdirError, match='cannot create or write there'):
      lottery.run(helpers.tiny_config(), str(workdir), log=_quiet)
  finally:
    workdir.chmod(0o700)


def test_a_torn_last_record_is_redone_without_losing_or_duplicating_records(reference, tmp_path, caplog):
  workdir = str(tmp_path / 'work')
  shutil.copytree(reference, workdir)
  path = os.path.join(workdir, 'results.jsonl')
  with open(path, 'rb') as file:
    lines = file.readlines()
  with open(path, 'wb') as file:  # a crash in the middle of writing the last record
    file.writelines(lines[:-1] + [lines[-1][: len(lines[-1]) // 2]])
  torn = json.loads(lines[-1])
  handler = signal.getsignal(signal.SIGTERM)
  with caplog.at_level(logging.WARNING):
    results = lottery.run(helpers.tiny_config(**OVERRIDES), workdir, log=_quiet)
  assert 'skipping a truncated or corrupt last record' in caplog.text
  assert signal.getsignal(signal.SIGTERM) == handler  # the SIGTERM handler was put back
  expected = _records(reference)
  resumed = _records(workdir)
  keys = [(r['trial'], r['level'], r['branch']) for r in resumed]
  assert keys == sorted(set(keys)) == [(r['trial'], r['level'], r['branch']) for r in expected]
  assert len(results.records) == len(expected)
  redone = (torn['trial'], torn['level'], torn['branch'])
  for old, new in zip(expected, resumed):
    if (new['trial'], new['level'], new['branch']) != redone:
      assert new == old  # untouched
    else:  # trained again, here on 8 devices instead of 2: equal up to float rounding
      assert new['kept_weights'] == old['kept_weights']
      assert new['test_accuracy'] == pytest.approx(old['test_accuracy'], abs=0.02)


@pytest.mark.parametrize('damaged', ['level_1', 'rewind'])
def test_a_damaged_checkpoint_of_a_finished_level_is_an_error_naming_it(reference, tmp_path, damaged):
  workdir = str(tmp_path / 'work')
  shutil.copytree(reference, workdir)
  directory = os.path.join(workdir, 'checkpoints', 'trial_0', damaged)
  for path in glob.glob(os.path.join(directory, 'd', '*')):
    with open(path, 'r+b') as file:
      file.truncate(3)
  config = helpers.tiny_config(**OVERRIDES, pruning__levels=3)  # so that there is work left
  with pytest.raises(checkpoints.CheckpointError, match=re.escape(f'{directory}: cannot restore the')) as raised:
    lottery.run(config, workdir, log=_quiet)
  assert 'level >= ' in str(raised.value) and 'delete that folder' in str(raised.value)


def test_a_finished_level_checkpoint_with_changed_weights_is_an_error_not_other_results(reference, tmp_path):
  """Damage orbax restores without complaint (here: level 1 holding level 0's arrays) is caught by the
  checksums saved with the checkpoint."""
  workdir = str(tmp_path / 'work')
  shutil.copytree(reference, workdir)
  trial_dir = os.path.join(workdir, 'checkpoints', 'trial_0')
  helpers.swap_checkpoint_arrays(os.path.join(trial_dir, 'level_0'), os.path.join(trial_dir, 'level_1'))
  config = helpers.tiny_config(**OVERRIDES, pruning__levels=3)
  with pytest.raises(checkpoints.CheckpointError, match='checksum mismatch'):
    lottery.run(config, workdir, log=_quiet)


def test_the_trainer_continues_a_run_checkpoint_bitwise(tmp_path):
  """Stopped at step 38 (between evaluations, snapshots and checkpoints) and resumed: the same curve,
  snapshots and state as a run never stopped, through an orbax round trip of the RunCheckpoint."""
  trainer = test_train._trainer(8, 8)
  params, model_state = trainer.init_variables(seed=2)
  keep_mask = test_train._half_mask(params)
  start = masks_lib.apply(params, keep_mask)

  def fresh():
    return trainer.create_state(_one(start), _one(model_state), _one(keep_mask), 3)

  settings = dict(end_step=50, data_seed=[6], snapshot_steps=(11, 30), eval_every=20)
  straight = trainer.train(fresh(), **settings)
  saved = []  # (step, checkpoint): a checkpoint's state is donated to the next dispatch, so read it at once
  # Dispatches of 8 steps end at 11, 13, 20, 26, 30, 38, 39, 40, 48, 50 (checkpoints every 13 steps).
  with pytest.raises(run_state.Preempted, match='stopped at step 38') as raised:
    trainer.train(
        fresh(),
        **settings,
        checkpoint_every=13,
        on_checkpoint=lambda checkpoint: saved.append((checkpoint.step, checkpoint)),
        should_stop=lambda step: step == 38,
    )
  assert raised.value.step == 38 and raised.value.checkpointed
  assert [step for step, _ in saved] == [13, 26, 38]
  stopped = saved[-1][1]
  assert [entry['step'] for entry in stopped.curve] == [20] and sorted(stopped.snapshots) == [11, 30]
  assert stopped.train_sum_steps == 18

  with checkpoints.RunCheckpoints(str(tmp_path / 'running')) as run:
    run.save(stopped.step, stopped.arrays(), stopped.metadata())
    run.wait()
    assert run.steps() == [38]

    def like(metadata):
      return run_state.RunCheckpoint.arrays_like(
          metadata, fresh(), trainer.placement.zero_train_sums(fresh()), (_one(start), _one(model_state))
      )

    restored = run_state.RunCheckpoint.from_parts(*run.restore_latest(like))
  resumed = trainer.train(restored, **settings)

  def without_speed(curve):
    return [{k: v for k, v in entry.items() if k not in TIMINGS} for entry in curve]

  assert without_speed(resumed.curve) == without_speed(straight.curve)
  assert [entry['step'] for entry in resumed.curve] == [20, 40, 50]
  chex.assert_trees_all_equal(resumed.snapshots, straight.snapshots)
  chex.assert_trees_all_equal(parallel.to_host(resumed.state), parallel.to_host(straight.state))


def test_scalars_go_to_tensorboard_when_tensorboardx_is_importable(tmp_path, monkeypatch):
  """With a stand-in tensorboardX module: each evaluation and each record adds scalars, by process 0."""
  written = []

  class SummaryWriter:

    def __init__(self, logdir):
      self.logdir = logdir

    def add_scalar(self, tag, value, step):
      written.append((os.path.relpath(self.logdir, tmp_path), tag, value, step))

    def flush(self):
      pass

    def close(self):
      pass

  fake = type(sys)('tensorboardX')
  fake.SummaryWriter = SummaryWriter
  monkeypatch.setitem(sys.modules, 'tensorboardX', fake)
  config = helpers.tiny_config(
      pruning__levels=1, branches=(), training__num_steps=20, training__eval_every=10, pruning__rewind_step=0
  )
  lottery.run(config, str(tmp_path), log=_quiet)
  runs = {(logdir, tag) for logdir, tag, _, _ in written}
  assert ('tensorboard/trial_0/level_0_ticket', 'test_accuracy') in runs
  assert ('tensorboard/trial_0/level_1_ticket', 'train_loss') in runs
  assert [(step, tag) for logdir, tag, _, step in written if logdir == 'tensorboard/trial_0/levels'] == [
      (0, 'ticket/test_accuracy'),
      (0, 'ticket/percent_remaining'),
      (1, 'ticket/test_accuracy'),
      (1, 'ticket/percent_remaining'),
  ]
  assert sorted(
      step for logdir, tag, _, step in written if logdir == 'tensorboard/trial_0/level_1_ticket' and tag == 'test_loss'
  ) == [10, 20]


def test_checkpoint_steps_do_not_change_the_results():
  """Checkpoints end dispatches; metric sums are added in step order, so the results stay bitwise."""
  trainer = test_train._trainer(8, 8)
  params, model_state = trainer.init_variables(seed=4)
  keep_mask = masks_lib.ones_like(params)
  results = [
      trainer.train(
          trainer.create_state(_one(params), _one(model_state), _one(keep_mask), 0),
          30,
          [1],
          eval_every=15,
          checkpoint_every=every,
          on_checkpoint=lambda checkpoint: None,
      )
      for every in (0, 7)
  ]
  curves = [[{k: v for k, v in entry.items() if k not in TIMINGS} for entry in result.curve] for result in results]
  assert curves[0] == curves[1]
  chex.assert_trees_all_equal(*[parallel.to_host(result.state) for result in results])


def test_sigterm_sets_the_stop_request_and_a_second_one_goes_to_the_previous_handler():
  received = []
  original = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
  try:
    stop = preemption.StopRequest()
    stop.install()
    assert not stop(0)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop(1) and received == []
    os.kill(os.getpid(), signal.SIGTERM)
    assert received == [signal.SIGTERM]
    stop.restore()
  finally:
    signal.signal(signal.SIGTERM, original)

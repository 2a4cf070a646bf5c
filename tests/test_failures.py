"""Runs that fail loudly: divergence, strict JSON, workdirs that cannot be written, bad config files,
and epoch lengths given as fractions on the command line."""

import errno
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lth_jax import branches as branches_lib
from lth_jax import main as lth_main
from lth_jax.reporting import plots
from lth_jax.reporting import summaries
from lth_jax import results as results_lib
from lth_jax.search import lottery
from lth_jax.search import scalars as scalars_lib
from lth_jax.search import trial
from lth_jax.training import checkpoints
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _strict_records(workdir):
  """The records of a results file parsed as strict JSON (NaN and Infinity are not JSON)."""

  def refuse(constant):
    raise ValueError(f'not strict JSON: {constant}')

  with open(os.path.join(workdir, 'results.jsonl')) as file:
    return [json.loads(line, parse_constant=refuse) for line in file]


def _exploding(inputs):
  """A branch whose weights start at 1e30 times the ticket's: its loss is not finite from the first step."""
  params, model_state, keep_mask = branches_lib.winning_ticket(inputs)
  return (
      {name: {leaf: value * np.float32(1e30) for leaf, value in layer.items()} for name, layer in params.items()},
      model_state,
      keep_mask,
  )


def test_a_diverging_run_is_marked_and_its_trial_stops(tmp_path):
  lines = []
  results = lottery.run(helpers.tiny_config(training__learning_rate=1e30), str(tmp_path), log=lines.append)
  (record,) = results.records  # the dense run diverged: level 1 is not pruned from its weights
  assert record['diverged'] is True and record['diverged_step'] == 20  # the first evaluation
  assert record['curve'][-1]['step'] == 20  # stopped there, not trained to step 60
  assert record['test_loss'] is None
  assert any(
      'warning: trial 0 level 0 ticket diverged: a non-finite loss or weight at step 20 '
      '(training.learning_rate=1e+30)' in line
      for line in lines
  )
  assert any(
      'trial 0: the level 0 ticket diverged' in line and 'Lower training.learning_rate' in line for line in lines
  )
  assert _strict_records(str(tmp_path))[0]['diverged'] is True
  assert 'diverged@20' in results.table()
  with pytest.raises(ValueError, match='every one of the 1 run'):
    plots.plot_accuracy_vs_sparsity(results.records)
  # Re-running finds the record and stops the trial again, without training.
  lines.clear()
  assert (
      len(lottery.run(helpers.tiny_config(training__learning_rate=1e30), str(tmp_path), log=lines.append).records) == 1
  )
  assert any('trial 0: the level 0 ticket diverged' in line for line in lines)


def test_a_diverging_control_does_not_stop_its_cohort(tmp_path, monkeypatch):
  monkeypatch.setitem(branches_lib.REGISTRY, 'exploding', _exploding)
  config = helpers.tiny_config(branches=('exploding',), pruning__levels=2)
  results = lottery.run(config, str(tmp_path), log=lambda message: None)
  by_run = {(record['level'], record['branch']): record for record in results.records}
  assert sorted(by_run) == [(0, 'ticket'), (1, 'exploding'), (1, 'ticket'), (2, 'exploding'), (2, 'ticket')]
  for level in (1, 2):
    assert by_run[(level, 'exploding')]['diverged'] is True
    assert 'diverged' not in by_run[(level, 'ticket')]
    assert by_run[(level, 'ticket')]['curve'][-1]['step'] == 60  # trained to the end beside it
  summary = summaries.sparsity_summary(results.records)
  assert 'exploding' not in summary and len(summary['ticket']) == 3  # left out of means and plots
  table = results_lib.format_sparsity_table(results.records)
  assert '(2 diverged run(s) left out: trial 0 level 1 exploding, trial 0 level 2 exploding)' in table
  _strict_records(str(tmp_path))


def test_a_diverged_ticket_stops_only_its_trial(tmp_path, monkeypatch):
  config = helpers.tiny_config(trials=2, branches=(), pruning__levels=2)
  exploding_seed = trial.branch_seed(config.seed, 1, 1, 2)  # trial 1, level 1, the ticket

  def ticket(inputs):
    return _exploding(inputs) if inputs.seed == exploding_seed else branches_lib.winning_ticket(inputs)

  monkeypatch.setitem(branches_lib.REGISTRY, 'ticket', ticket)
  lines = []
  results = lottery.run(config, str(tmp_path), log=lines.append)
  runs = sorted((record['trial'], record['level']) for record in results.records)
  assert runs == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
  assert results.select(trial=1, level=1)[0]['diverged'] is True
  assert any('trial 1: the level 1 ticket diverged' in line for line in lines)


def test_results_written_before_strict_json_still_load(tmp_path):
  path = tmp_path / 'results.jsonl'
  path.write_text(
      '{"trial": 0, "level": 0, "branch": "ticket", "fraction_remaining": 1.0, "test_accuracy": NaN}\n'
      '{"trial": 0, "level": 1, "branch": "ticket", "fraction_remaining": 0.5, "test_accuracy": 0.9}\n'
  )
  records = results_lib.read_records(str(path))
  assert [results_lib.is_diverged(record) for record in records] == [True, False]
  assert results_lib.strict_json({'a': float('nan'), 'b': [float('inf'), 1.5]}) == '{"a": null, "b": [null, 1.5]}'


def _enospc_results(path, records):
  del records
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def _orbax_full(directory, tree):
  del tree
  raise ValueError(f'RESOURCE_EXHAUSTED: Error writing local file "{directory}/d/0.tmp": ' 'No space left on device')


def _read_only_tensorboard(self, run, step, scalars):
  del step, scalars
  raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.path.join(self.directory, run))


def _io_error_checkpoint(self, step, arrays, metadata):
  del arrays, metadata
  raise OSError(errno.EIO, os.strerror(errno.EIO), os.path.join(self.directory, str(step)))


@pytest.fixture(scope='module')
def level_zero(tmp_path_factory):
  """A workdir whose level 0 is recorded."""
  workdir = str(tmp_path_factory.mktemp('level_zero') / 'work')
  lottery.run(helpers.tiny_config(pruning__levels=0, checkpointing__every_steps=20), workdir, log=lambda message: None)
  return workdir


@pytest.mark.parametrize(
    'target, replacement, cause, where',
    [
        ((results_lib, 'write_records'), _enospc_results, 'No space left on device', 'results.jsonl'),
        ((checkpoints, 'save_tree'), _orbax_full, 'No space left on device', 'checkpoints/trial_0/'),
        ((scalars_lib.Scalars, 'write'), _read_only_tensorboard, 'Read-only file system', 'tensorboard/trial_0'),
        (
            (checkpoints.RunCheckpoints, 'save'),
            _io_error_checkpoint,
            'Input/output error',
            'checkpoints/running/level_1_',
        ),
    ],
)
def test_a_workdir_that_cannot_be_written_gives_one_line_naming_path_and_cause(
    level_zero, tmp_path, monkeypatch, target, replacement, cause, where
):
  workdir = str(tmp_path / 'work')
  shutil.copytree(level_zero, workdir)  # one record already there
  with open(os.path.join(workdir, 'results.jsonl')) as file:
    recorded = file.read()
  monkeypatch.setattr(*target, replacement)
  with pytest.raises(results_lib.WriteError) as raised:
    lottery.run(
        helpers.tiny_config(pruning__levels=1, checkpointing__every_steps=20), workdir, log=lambda message: None
    )
  message = str(raised.value)
  assert '\n' not in message and f'{cause}.' in message and where in message
  assert 'Nothing already recorded is lost' in message and 'run the same command again to resume' in message
  with open(os.path.join(workdir, 'results.jsonl')) as file:
    assert file.read() == recorded


def test_permission_denied_on_config_json(tmp_path, monkeypatch):
  original = results_lib.atomic_open

  def denied(path, mode='w'):
    if path.endswith('config.json'):
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    return original(path, mode)

  monkeypatch.setattr(results_lib, 'atomic_open', denied)
  with pytest.raises(
      results_lib.WriteError,
      match=r'cannot write .*config.json: Permission denied\. .*give this ' 'user write permission',
  ):
    lottery.run(helpers.tiny_config(), str(tmp_path / 'work'), log=lambda message: None)


def _bad_config_files(directory):
  files = {
      'syntax.py': 'def get_config(:\n  pass\n',
      'no_get_config.py': 'x = 1\n',
      'import_error.py': 'import lth_jax_no_such_module\n',
      'raises.py': 'def get_config():\n  return 1 / 0\n',
  }
  for name, text in files.items():
    (directory / name).write_text(text)
  return {name: str(directory / name) for name in files}


def test_bad_config_files_get_one_line(tmp_path):
  paths = _bad_config_files(tmp_path)
  check = lth_main.check_config_file
  assert (
      check(str(tmp_path / 'nope.py'))
      == f'lth_jax: --config={tmp_path / "nope.py"}: no config file at {tmp_path / "nope.py"}'
  )
  assert check(paths['syntax.py']).endswith(f'{paths["syntax.py"]}, line 1: SyntaxError: invalid syntax')
  assert check(paths['no_get_config.py']).endswith('defines no get_config() function')
  assert check(paths['import_error.py']).endswith(
      f"{paths['import_error.py']}, line 1: ModuleNotFoundError: No module named 'lth_jax_no_such_module'"
  )
  assert check(paths['raises.py']).endswith(f'{paths["raises.py"]}, line 2: ZeroDivisionError: division by zero')
  resnet50 = os.path.join(REPO, 'configs', 'resnet50_imagenet.py')
  assert "ValueError: unknown variant 'nope' of resnet50_imagenet.py" in check(f'{resnet50}:nope')
  assert check(os.path.join(REPO, 'configs', 'default.py:x')).endswith(
      'has no variants (its get_config takes no argument)'
  )
  assert check(resnet50 + ':one_shot') is None and check(os.path.join(REPO, 'configs', 'default.py')) is None


def _command(*arguments, module='lth_jax.main'):
  environment = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu')
  return subprocess.run(
      [sys.executable, '-m', module, *arguments],
      cwd=REPO,
      env=environment,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )


def _tiny_config_file(directory):
  path = directory / 'tiny.py'
  path.write_text('from tests import helpers\n\n\ndef get_config():\n  return helpers.tiny_config(pruning__levels=1)\n')
  return str(path)


@pytest.mark.slow
def test_command_line_failures_exit_with_one_line(tmp_path):
  completed = _command(f'--config={tmp_path / "missing.py"}', f'--workdir={tmp_path / "work"}')
  assert completed.returncode == 1
  assert (
      completed.stderr.strip()
      == f'lth_jax: --config={tmp_path / "missing.py"}: no config file at {tmp_path / "missing.py"}'
  )
  # A full disk when the first record is written: one line, nothing recorded, and the rewind point kept.
  workdir = tmp_path / 'full'
  completed = _command(f'--config={_tiny_config_file(tmp_path)}', f'--workdir={workdir}', module='tests.fault_driver')
  assert completed.returncode == 1, completed.stderr[-2000:]
  last = completed.stderr.strip().splitlines()[-1]
  assert last.startswith(f'lth_jax: cannot write {workdir / "results.jsonl"}: No space left on device.')
  assert 'Traceback' not in completed.stderr
  assert os.path.isdir(workdir / 'checkpoints' / 'trial_0' / 'rewind')


@pytest.mark.slow
def test_a_full_disk_under_orbax_gives_one_line_and_no_traceback(tmp_path):
  """The command on a 700 KB tmpfs, mounted in a user namespace: orbax's background writes fail."""
  if shutil.which('unshare') is None or subprocess.run(['unshare', '-rm', 'true'], check=False).returncode != 0:
    pytest.skip('mounting a tmpfs without root needs user namespaces (unshare -rm)')
  mount = tmp_path / 'small_disk'
  mount.mkdir()
  completed = subprocess.run(
      ['unshare', '-rm', 'sh', '-c', f'mount -t tmpfs -o size=700k tmpfs {mount} && exec "$@"', 'sh', sys.executable]
      + [
          '-m',
          'lth_jax.main',
          '--config=configs/default.py',
          f'--workdir={mount / "work"}',
          '--config.pruning.levels=1',
      ]
      + ['--config.training.num_steps=200', '--config.checkpointing.every_steps=50'],
      cwd=REPO,
      env=dict(os.environ, JAX_PLATFORMS='cpu'),
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert completed.returncode == 1, completed.stderr[-2000:]
  lines = completed.stderr.strip().splitlines()
  assert len(lines) == 1 and 'No space left on device. Nothing already recorded is lost' in lines[0], lines[-40:]
  assert 'Traceback' not in completed.stdout


@pytest.mark.slow
def test_fractional_epochs_from_the_command_line_and_the_diverged_exit_status(tmp_path):
  workdir = tmp_path / 'work'
  completed = _command(
      f'--config={_tiny_config_file(tmp_path)}',
      f'--workdir={workdir}',
      '--config.training.num_steps=0',
      '--config.training.num_epochs=1.5',
      '--config.training.learning_rate=1e30',
  )
  assert completed.returncode == 3, completed.stderr[-2000:]
  assert 'trial 0 level 0: the ticket diverged' in completed.stderr
  config = json.loads((workdir / 'config.json').read_text())
  assert config['training']['num_epochs'] == 1.5
  assert config['resolved']['training']['num_steps'] == 66  # 1437 digits // 32 = 44 steps per epoch

"""The command line: `python -m lth_jax.main --config=... --workdir=...` with flag overrides."""

import pytest
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_main(*arguments, workdir):
  environment = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu')
  return subprocess.run(
      [sys.executable, '-m', 'lth_jax.main', *arguments, f'--workdir={workdir}'],
      cwd=REPO,
      env=environment,
      capture_output=True,
      text=True,
      timeout=600,
  )


@pytest.mark.slow
def test_default_config_runs_with_overrides_and_prints_the_table(tmp_path):
  cache = tmp_path / 'xla_cache'
  completed = _run_main(
      '--config=configs/default.py',
      '--config.pruning.levels=1',
      '--config.training.num_steps=40',
      '--config.training.eval_every=20',
      '--config.model.hidden_sizes=(16,8)',
      f'--compilation_cache_dir={cache}',
      workdir=tmp_path / 'run',
  )
  tmp_path = tmp_path / 'run'
  assert cache.is_dir() and any(cache.iterdir()), 'compiled programs are kept for the next run'

  assert completed.returncode == 0, completed.stderr[-3000:]
  records = [json.loads(line) for line in open(tmp_path / 'results.jsonl')]
  assert sorted((r['level'], r['branch']) for r in records) == [(0, 'ticket'), (1, 'reinit'), (1, 'ticket')]
  assert all(r['steps'] == 40 for r in records)
  assert 'test_accuracy' in completed.stdout and 'remaining' in completed.stdout
  assert '2 device(s)' in completed.stdout
  assert records[1]['fraction_remaining'] < 1.0


def test_bad_override_fails_before_training_and_names_the_field(tmp_path):
  completed = _run_main('--config=configs/default.py', '--config.pruning.fraction=1.5', workdir=tmp_path)
  assert completed.returncode != 0
  assert 'pruning.fraction=1.5' in completed.stderr
  assert not (tmp_path / 'results.jsonl').exists()


@pytest.mark.parametrize(
    'override, expected',
    [
        ('--config.pruning.fractoin=0.5', '\'fractoin\' Did you mean "fraction" instead of "fractoin"?'),  # a leaf
        ('--config.trainng.num_steps=5', '\'trainng\' Did you mean "training" instead of "trainng"?'),  # a group
    ],
)
def test_unknown_config_field_is_one_line(tmp_path, override, expected):
  completed = _run_main('--config=configs/default.py', override, workdir=tmp_path)
  assert completed.returncode == 1
  assert completed.stderr.strip() == (
      f'lth_jax: unknown config field {expected} (in {override}; every field is listed in lth_jax/config/schema.py)'
  )


def test_wrong_type_override_is_refused_in_one_line(tmp_path):
  completed = _run_main('--config=configs/default.py', '--config.training.num_steps=many', workdir=tmp_path)
  assert completed.returncode == 1
  assert completed.stderr.strip() == (
      "lth_jax: flag --config.training.num_steps=many: invalid literal for int() with base 10: 'many'"
  )
  assert not (tmp_path / 'results.jsonl').exists()


def test_workdir_that_is_a_file_is_refused_with_a_message(tmp_path):
  workdir = tmp_path / 'a_file'
  workdir.write_text('')
  completed = _run_main('--config=configs/default.py', '--config.training.num_steps=10', workdir=workdir)
  assert completed.returncode == 1
  assert f'lth_jax: workdir {workdir}: exists and is not a folder' in completed.stderr


def test_damaged_results_file_is_refused_with_a_message_not_a_traceback(tmp_path):
  (tmp_path / 'results.jsonl').write_text('{"trial": 0}\nnot json\n{"trial": 0}\n')
  completed = _run_main(
      '--config=configs/default.py', '--config.training.num_steps=10', '--allow_config_change', workdir=tmp_path
  )
  assert completed.returncode == 1
  assert 'line 2: corrupt record' in completed.stderr and 'Traceback' not in completed.stderr


def test_distributed_is_only_started_when_asked_or_launched_as_a_cluster():
  from lth_jax.training import parallel

  assert not parallel.launched_as_cluster({})
  assert not parallel.launched_as_cluster({'SLURM_NTASKS': '1', 'OMPI_COMM_WORLD_SIZE': 'x'})
  assert parallel.launched_as_cluster({'SLURM_NTASKS': '4'})
  assert parallel.launched_as_cluster({'OMPI_COMM_WORLD_SIZE': '2'})
  assert parallel.launched_as_cluster({'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234'})
  assert parallel.initialize_distributed('no') is False
  if not parallel.launched_as_cluster():
    assert parallel.initialize_distributed('auto') is False


def test_distributed_flag_is_checked(tmp_path):
  completed = _run_main('--config=configs/default.py', '--distributed=maybe', workdir=tmp_path)
  assert completed.returncode != 0 and 'distributed' in completed.stderr

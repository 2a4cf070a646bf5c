"""The experiment scripts run end to end in their --quick mode and write their tables and figures."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, *arguments):
  environment = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1', JAX_PLATFORMS='cpu')
  return subprocess.run(
      [sys.executable, '-m', module, *arguments], cwd=REPO, env=environment, capture_output=True, text=True, timeout=900
  )


def test_lottery_sweep_writes_plots_and_table(tmp_path):
  completed = _run(
      'experiments.lottery_sweep', f'--workdir={tmp_path}', '--quick', '--trials=2', '--branches=reinit,snip'
  )
  assert completed.returncode == 0, completed.stderr[-3000:]
  for name in ('results.jsonl', 'accuracy_vs_sparsity.png', 'training_curves.png', 'sparsity_table.csv'):
    assert (tmp_path / name).stat().st_size > 0
  records = [json.loads(line) for line in open(tmp_path / 'results.jsonl')]
  assert {r['branch'] for r in records} == {'ticket', 'reinit', 'snip'}
  assert {r['trial'] for r in records} == {0, 1}


def test_late_reset_sweep_writes_table_and_stability(tmp_path):
  completed = _run(
      'experiments.late_reset_sweep', f'--workdir={tmp_path}', '--quick', '--reset_steps=0,20', '--stability_level=1'
  )
  assert completed.returncode == 0, completed.stderr[-3000:]
  table = open(tmp_path / 'late_reset_table.csv').read().splitlines()
  assert table[0].startswith('reset_step,level_0') and [row.split(',')[0] for row in table[1:]] == ['0', '20']
  stability = [json.loads(line) for line in open(tmp_path / 'stability.jsonl')]
  assert [entry['rewind_step'] for entry in stability] == [0, 20]
  for entry in stability:
    assert set(entry['final']) == {'ticket', 'random_ticket'}
    assert 0.0 <= entry['final']['ticket']['angle'] <= 180.0
  assert (tmp_path / 'stability_vs_reset_step.png').stat().st_size > 0


def test_late_reset_sweep_refuses_a_reset_step_past_the_end_before_training(tmp_path):
  completed = _run('experiments.late_reset_sweep', f'--workdir={tmp_path}', '--quick', '--reset_steps=0,5000')
  assert completed.returncode == 1
  assert 'reset step 5000: pruning.rewind_step=5000: must be before the end of training' in completed.stderr
  assert not os.listdir(tmp_path)  # nothing trained


def test_lottery_sweep_quick_is_for_the_embedded_config_only(tmp_path):
  completed = _run('experiments.lottery_sweep', f'--workdir={tmp_path}', '--quick', '--config=configs/sum_of_two.py')
  assert completed.returncode != 0 and '--quick shrinks the embedded config' in completed.stderr

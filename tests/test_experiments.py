"""The experiment scripts run end to end in their --quick mode and write their tables and figures."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, *arguments):
  environment = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1', JAX_PLATFORMS='cpu')
  return subprocess.run(
      [sys.executable, '-m', module, *arguments], cwd=REPO, env=environment, capture_output=True, text=True, timeout=900
  )


@pytest.mark.slow
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


@pytest.mark.slow
def test_late_reset_sweep_writes_table_and_stability(tmp_path):
  completed = _run(
      'experiments.late_reset_sweep', f'--workdir={tmp_path}', '--quick', '--reset_steps=0,20', '--stability_level=1'
  )
  assert completed.returncode == 0, completed.stderr[-3000:]
  table = open(tmp_path / 'late_reset_table.csv').read().splitlines()
  assert table[0].startswith('reset_step,level_0') and [row.split(',')[0] for row in table[1:]] == ['R', '0', '20']
  stability = [json.loads(line) for line in open(tmp_path / 'stability.jsonl')]
  assert [entry['rewind_step'] for entry in stability] == [0, 20]
  for entry in stability:
    assert set(entry['final']) == {'ticket', 'random_ticket'}
    assert 0.0 <= entry['final']['ticket']['angle'] <= 180.0
  assert (tmp_path / 'stability_vs_reset_step.png').stat().st_size > 0
  assert (tmp_path / 'late_reset_curves.png').stat().st_size > 0  # Figure 3: a line per reset point
  # One sweep: the reset points share one dense run, which kept its weights at both reset steps.
  assert sorted(os.listdir(tmp_path / 'variants')) == ['reset_0', 'reset_20']
  (dense,) = os.listdir(tmp_path / 'dense')
  assert sorted(os.listdir(tmp_path / 'dense' / dense / 'checkpoints' / 'trial_0' / 'snapshots')) == [
      'step_0',
      'step_20',
  ]
  (dense_record,) = _records(tmp_path / 'dense' / dense)
  variants = {0: {'branches': ['reinit']}, 20: {'pruning.rewind_step': 20}}  # what each changes of the base
  for reset_step, variant in variants.items():
    (level_zero,) = [r for r in _records(tmp_path / 'variants' / f'reset_{reset_step}') if r['level'] == 0]
    assert level_zero['variant'] == variant
    assert level_zero['test_accuracy'] == dense_record['test_accuracy']


def _records(run_dir):
  return [json.loads(line) for line in open(run_dir / 'results.jsonl')]


def test_late_reset_sweep_refuses_a_reset_step_past_the_end_before_training(tmp_path):
  completed = _run('experiments.late_reset_sweep', f'--workdir={tmp_path}', '--quick', '--reset_steps=0,5000')
  assert completed.returncode == 1
  assert 'reset step 5000: pruning.rewind_step=5000: must be before the end of training' in completed.stderr
  assert not os.listdir(tmp_path)  # nothing trained


def test_lottery_sweep_quick_is_for_the_embedded_config_only(tmp_path):
  completed = _run('experiments.lottery_sweep', f'--workdir={tmp_path}', '--quick', '--config=configs/sum_of_two.py')
  assert completed.returncode != 0 and '--quick shrinks the embedded config' in completed.stderr


def _record(level, branch, accuracy, trial=0, fraction=None):
  return {
      'trial': trial,
      'level': level,
      'branch': branch,
      'test_accuracy': accuracy,
      'fraction_remaining': fraction if fraction is not None else 0.8**level,
  }


def test_late_reset_table_stars_winning_tickets_and_puts_random_reinit_first(tmp_path):
  from experiments import late_reset_table

  early = [_record(0, 'ticket', 0.90), _record(1, 'ticket', 0.89), _record(1, 'reinit', 0.80)]
  late = [
      _record(0, 'ticket', 0.90),
      _record(0, 'ticket', 0.92, trial=1),
      _record(1, 'ticket', 0.92),
      _record(1, 'ticket', 0.95, trial=1),
  ]
  header, rows = late_reset_table.late_reset_table(
      {'0': early, '500': late}, [r for r in early if r['branch'] == 'reinit']
  )
  assert header == ['reset', 'level_0', 'level_1']
  assert [row[0] for row in rows] == ['R', '0', '500']
  assert rows[0] == ['R', '', '0.8000 @80.0%']  # compared with the first run's dense network: no star
  assert rows[1][2] == '0.8900 @80.0%'
  # Every level-1 trial (0.92, 0.95) is at least the best dense trial (0.92): a winning ticket.
  assert rows[2][1] == '0.9100±0.0100 @100.0%' and rows[2][2] == '0.9350±0.0150* @80.0%'
  short = late_reset_table.late_reset_table({'0': late[:2] + [_record(1, 'ticket', 0.91), late[3]]})
  assert short[1][0][2] == '0.9300±0.0200 @80.0%'  # mean above the dense mean, one trial below its best: no star
  path = str(tmp_path / 'table.png')
  late_reset_table.plot_late_reset_table(header, rows, 'title', path, dpi=50)
  assert os.path.getsize(path) > 1000


def _synthetic_result(rewind_step, scale, trial=0, max_normalizer=2.0):
  from lth_jax.analysis import metrics as metrics_lib
  from lth_jax.analysis import stability_results

  def metrics(step, member):
    grow = step / 100 * scale * (2.0 if member == 'random_ticket' else 1.0)
    values = {
        'l2_distance': grow,
        'angle': 60 * grow,
        'angle_ticket_to_final': 50 * grow,
        'angle_full_to_final': 40 * grow,
        'correlation': 1 - grow,
        'full_distance_from_init': 0.5 * grow,
        'ticket_distance_from_init': 0.6 * grow,
    }
    return metrics_lib.with_max_normalized(values, 1.0, max_normalizer) if max_normalizer else values

  curve = [
      {'step': step, 'ticket': metrics(step, 'ticket'), 'random_ticket': metrics(step, 'random_ticket')}
      for step in range(rewind_step + 25, 101, 25)
  ]
  return stability_results.StabilityResult(
      rewind_step=rewind_step,
      final={name: curve[-1][name] for name in ('ticket', 'random_ticket')},
      curve=curve,
      test_metrics={'full': 0.9, 'ticket': 0.9 - scale / 10, 'random_ticket': 0.8, 'full_other': 0.9},
      normalizer=1.0,
      max_normalizer=max_normalizer,
      level=2,
      trial=trial,
  )


def test_stability_report_rows_and_figures_on_synthetic_results(tmp_path):
  from lth_jax.reporting import stability_tables as stability_report

  results = [_synthetic_result(0, 0.4), _synthetic_result(0, 0.2, trial=1), _synthetic_result(50, 0.1)]
  header, rows = stability_report.end_of_training_rows(results)
  assert header[:6] == ['rewind_step', 'member', 'trials', 'l2_distance', 'l2_distance_max_normalized', 'angle']
  assert [row[:3] for row in rows] == [
      [0, 'ticket', 2],
      [0, 'random_ticket', 2],
      [50, 'ticket', 1],
      [50, 'random_ticket', 1],
  ]
  assert float(rows[0][3]) == pytest.approx(0.3) and float(rows[0][4]) == pytest.approx(0.15)  # mean, halved by max 2
  header, rows = stability_report.curve_rows(results)
  assert header[:4] == ['rewind_step', 'trial', 'member', 'step'] and 'angle_full_to_final' in header
  assert len(rows) == 2 * (4 + 4 + 2)  # (ticket, random ticket) x measured steps of each result
  table = stability_report.format_over_training(results)
  assert 'rewind 50: step' in table and '0.300 / 18.0' in table  # step 100 of rewind 0: mean of 0.4 and 0.2
  for normalization in ('final', 'max'):
    for plot in (stability_report.plot_stability_vs_reset_step, stability_report.plot_stability_over_training):
      path = tmp_path / f'{plot.__name__}_{normalization}.png'
      plot(results, str(path), normalization, dpi=40)
      assert path.stat().st_size > 1000
  old = [_synthetic_result(0, 0.4, max_normalizer=None)]
  assert stability_report.end_of_training_rows(old)[1][0][4] == ''  # no max normalization recorded
  with pytest.raises(ValueError, match=r"rewind steps \[0\] have no 'max' normalization"):
    stability_report.plot_stability_vs_reset_step(old, None, 'max')
  with pytest.raises(ValueError, match='several levels'):
    stability_report.by_rewind_step([results[0], dataclasses.replace(results[2], level=3)])


@pytest.mark.slow
def test_sweep_flags_are_checked_before_training(tmp_path):
  from absl import app

  from experiments import common

  with pytest.raises(app.UsageError, match='--quick shrinks the embedded config'):
    common.base_config(common.embedded_config(False, 1), quick=True, trials=None, embedded_trials=(1, 3))
  assert common.base_config(None, quick=True, trials=None, embedded_trials=(1, 3)).trials == 1
  assert common.base_config(None, quick=False, trials=2, embedded_trials=(1, 3)).trials == 2
  with pytest.raises(app.UsageError, match='give the late-reset points'):
    common.reset_points(None, None, default_steps=None)
  with pytest.raises(app.UsageError, match='not both'):
    common.reset_points(['0'], ['2'], default_steps=None)
  with pytest.raises(app.UsageError, match='distinct and non-negative'):
    common.reset_points(['0', '-5'], None, default_steps=None)
  points = common.reset_points(None, ['4', '0.5'], default_steps=None)
  assert [(point.label, point.directory) for point in points] == [('0.5', 'reset_epoch_0.5'), ('4', 'reset_epoch_4')]
  config = common.embedded_config(True, 1)
  config.pruning.rewind_step = 7
  points[0].apply(config)
  assert (config.pruning.rewind_step, config.pruning.rewind_epoch) == (0, 0.5)
  completed = _run('experiments.late_reset_sweep', f'--workdir={tmp_path}', '--quick', '--mode=pruned')
  assert completed.returncode != 0 and 'value should be one of <iterative|one_shot>' in completed.stderr
  completed = _run('experiments.stability_sweep', f'--workdir={tmp_path}', '--quick', '--reset_steps=0,400')
  assert completed.returncode == 1 and 'stability_sweep: reset step 400: pruning.rewind_step=400' in completed.stderr
  assert not os.listdir(tmp_path)  # nothing trained


@pytest.mark.slow
def test_late_reset_sweep_one_shot_table_has_the_reinit_row_and_one_shot_densities(tmp_path):
  completed = _run(
      'experiments.late_reset_sweep',
      f'--workdir={tmp_path}',
      '--quick',
      '--mode=one_shot',
      '--reset_steps=0,50',
      '--stability_level=2',
      '--trials=2',
  )
  assert completed.returncode == 0, completed.stderr[-3000:]
  table = [line.split(',') for line in open(tmp_path / 'late_reset_table.csv').read().splitlines()]
  assert table[0] == ['reset_step', 'level_0', 'level_1', 'level_2']
  assert [row[0] for row in table[1:]] == ['R', '0', '50'] and table[1][1] == '' and table[1][3]
  assert all('±' in cell for cell in table[2][1:])  # two trials: mean ± spread
  for reset_step in (0, 50):
    config = json.load(open(tmp_path / 'variants' / f'reset_{reset_step}' / 'config.json'))
    assert config['pruning']['mode'] == 'one_shot' and config['pruning']['rewind_step'] == reset_step
  (dense,) = os.listdir(tmp_path / 'dense')  # one dense run per trial, shared by the reset points
  assert sorted(r['trial'] for r in _records(tmp_path / 'dense' / dense)) == [0, 1]
  records = _records(tmp_path / 'variants' / 'reset_0')
  assert {r['branch'] for r in records if r['level'] > 0} == {'ticket', 'reinit'}
  assert not {r['branch'] for r in _records(tmp_path / 'variants' / 'reset_50')} - {'ticket'}
  # One shot: level 2 is the dense network pruned once to 0.8^2 of its hidden weights (0.9^2 of the output
  # layer), not 20% of level 1's survivors pruned again (which rounds differently per layer).
  by_level = {r['level']: r for r in records if r['branch'] == 'ticket' and r['trial'] == 0}
  assert by_level[2]['fraction_remaining'] == pytest.approx(0.651, abs=2e-3)
  stability = [json.loads(line) for line in open(tmp_path / 'stability.jsonl')]
  assert [entry['rewind_step'] for entry in stability] == [0, 50]
  for entry in stability:
    assert entry['max_normalizer'] >= entry['normalizer'] > 0
    assert entry['final']['ticket']['l2_distance_max_normalized'] <= entry['final']['ticket']['l2_distance']
  for name in ('late_reset_table.png', 'stability_vs_reset_step.png', 'stability_vs_reset_step_max_normalized.png'):
    assert (tmp_path / name).stat().st_size > 0


@pytest.mark.slow
def test_stability_sweep_draws_curves_and_resumes_without_measuring_again(tmp_path):
  arguments = (
      'experiments.stability_sweep',
      f'--workdir={tmp_path}',
      '--quick',
      '--reset_steps=0,100',
      '--measure_every=50',
  )
  completed = _run(*arguments)
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert 'stability measurements: 2 measured, 0 loaded' in completed.stdout
  header = open(tmp_path / 'stability_curves.csv').readline().strip().split(',')
  assert header[:4] == ['rewind_step', 'trial', 'member', 'step'] and 'l2_distance_max_normalized' in header
  curves = [line.split(',') for line in open(tmp_path / 'stability_curves.csv').read().splitlines()[1:]]
  assert sorted({(int(row[0]), int(row[3])) for row in curves}) == [
      (0, 50),
      (0, 100),
      (0, 150),
      (0, 200),
      (0, 250),
      (0, 300),
      (100, 150),
      (100, 200),
      (100, 250),
      (100, 300),
  ]
  for name in (
      'stability_over_training.png',
      'stability_over_training_max_normalized.png',
      'stability_vs_reset_step.png',
      'stability_vs_reset_step_max_normalized.png',
  ):
    assert (tmp_path / name).stat().st_size > 0
  kept = {path: path.read_bytes() for path in tmp_path.glob('variants/reset_*/*.jsonl')}
  assert len(kept) == 4  # results.jsonl and stability.jsonl of each reset step
  assert len(os.listdir(tmp_path / 'dense')) == 1  # one dense run, shared by the reset steps
  again = _run(*arguments)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'stability measurements: 0 measured, 2 loaded' in again.stdout
  assert {path: path.read_bytes() for path in tmp_path.glob('variants/reset_*/*.jsonl')} == kept
  # late_reset_sweep with the same flags builds the same sweep: it reuses these runs and trains nothing.
  table = _run('experiments.late_reset_sweep', *arguments[1:4], '--stability_level=0')
  assert table.returncode == 0, table.stderr[-3000:]
  assert not re.search(r': step \d+/\d+ \(', table.stdout + table.stderr)
  assert [line.split(',')[0] for line in open(tmp_path / 'late_reset_table.csv').read().splitlines()[1:]] == [
      'R',
      '0',
      '100',
  ]


def test_a_workdir_of_the_layout_before_sweeps_is_refused_with_what_to_do(tmp_path):
  from experiments import common

  common.refuse_per_variant_layout('late_reset_sweep', str(tmp_path))  # empty: fine
  (tmp_path / 'reset_0').mkdir()
  (tmp_path / 'reset_0' / 'results.jsonl').write_text('{"trial": 0, "level": 0, "branch": "ticket"}\n')
  with pytest.raises(
      SystemExit, match=r'late_reset_sweep: .* holds runs of one lottery workdir per variant \(reset_0\)'
  ):
    common.refuse_per_variant_layout('late_reset_sweep', str(tmp_path))
  (tmp_path / 'sweep.json').write_text('{}')
  common.refuse_per_variant_layout('late_reset_sweep', str(tmp_path))  # a sweep's workdir: fine


def test_the_readme_quotes_the_sweep_cost_as_the_command_prints_it():
  from experiments import sweep_cost  # pylint: disable=import-outside-toplevel

  lines = sweep_cost.cost_lines(8)
  readme = open(os.path.join(REPO, 'README.md')).read()
  quoted = re.search(r'<!-- sweep_cost: begin[^\n]*-->\n(.*?)<!-- sweep_cost: end -->', readme, re.S)
  assert quoted is not None, 'README.md lost its sweep_cost block'
  assert [line.strip() for line in quoted.group(1).strip().splitlines()] == lines
  # Figure 5: 6 reset epochs x 3 trials share 3 dense trainings instead of 18.
  assert lines[1] == 'dense trainings: 18 as one lottery run per reset point, 3 as one sweep'

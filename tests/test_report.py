"""Reports: `lth_jax.report` plots and CSV from hand-made records, its command line, and the results
file's tolerance of a torn last line."""

import csv
import json
import logging
import os
import re
import subprocess
import sys

from matplotlib import image
import numpy as np
import pytest

from lth_jax.reporting import plots
from lth_jax.reporting import summaries
from lth_jax import results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
FRACTIONS = {0: 1.0, 1: 0.5, 2: 0.25}
STEPS = (10, 20, 30)


def _record(trial, level, branch, metric, value, curve_values):
  return {
      'trial': trial,
      'level': level,
      'branch': branch,
      'fraction_remaining': FRACTIONS[level],
      'kept_weights': int(1000 * FRACTIONS[level]),
      'nonzero_weights': int(1000 * FRACTIONS[level]),
      'layer_density': {'dense_0/kernel': FRACTIONS[level]},
      metric: value,
      f'best_{metric}': value,
      'test_loss': 1.0,
      'steps': 30,
      'start_step': 0,
      'end_step': 30,
      'curve': [
          {'step': step, metric: curve_value, 'test_loss': 1.0, 'train_loss': 1.0}
          for step, curve_value in zip(STEPS, curve_values)
      ],
  }


# (trial, level, branch) -> final test accuracy; each curve ends at the final value.
ACCURACY = {
    (0, 0, 'ticket'): 0.90,
    (1, 0, 'ticket'): 0.92,
    (0, 1, 'ticket'): 0.93,
    (1, 1, 'ticket'): 0.97,
    (0, 1, 'reinit'): 0.85,
    (1, 1, 'reinit'): 0.89,
    (0, 2, 'ticket'): 0.94,
    (1, 2, 'ticket'): 0.90,
    (0, 2, 'reinit'): 0.70,
    (1, 2, 'reinit'): 0.80,
}
RMSE = {
    (0, 0, 'ticket'): 1e-6,
    (1, 0, 'ticket'): 3e-6,
    (0, 1, 'ticket'): 2e-6,
    (1, 1, 'ticket'): 4e-6,
    (0, 1, 'reinit'): 0.5,
    (1, 1, 'reinit'): 1.5,
    (0, 2, 'ticket'): 5e-6,
    (1, 2, 'ticket'): 7e-6,
    (0, 2, 'reinit'): 2.0,
    (1, 2, 'reinit'): 3.0,
}


def _records(metric='test_accuracy', values=None):
  values = ACCURACY if values is None else values
  return [
      _record(trial, level, branch, metric, value, (value - 0.2, value - 0.1, value))
      for (trial, level, branch), value in values.items()
  ]


def _accuracy_records():
  return _records()


def _rmse_records():
  return _records('test_rmse', RMSE)


def _expected(values, level, branch):
  trial_values = [values[(trial, level, branch)] for trial in (0, 1)]
  return np.mean(trial_values), min(trial_values), max(trial_values)


def _check_png(path):
  with open(path, 'rb') as file:
    assert file.read(8) == PNG_SIGNATURE
  pixels = image.imread(path)
  assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
  assert 400 <= pixels.shape[0] <= 3000 and 500 <= pixels.shape[1] <= 4000, pixels.shape


def test_csv_holds_mean_min_max_per_branch_and_level(tmp_path):
  path = tmp_path / 'table.csv'
  summaries.write_csv(_accuracy_records(), str(path))
  with open(path, newline='') as file:
    rows = list(csv.DictReader(file))
  assert list(rows[0]) == [
      'level',
      'fraction_remaining',
      'ticket_test_accuracy_mean',
      'ticket_test_accuracy_min',
      'ticket_test_accuracy_max',
      'ticket_trials',
      'reinit_test_accuracy_mean',
      'reinit_test_accuracy_min',
      'reinit_test_accuracy_max',
      'reinit_trials',
  ]
  assert [int(row['level']) for row in rows] == [0, 1, 2]
  assert [float(row['fraction_remaining']) for row in rows] == [1.0, 0.5, 0.25]
  for row in rows:
    level = int(row['level'])
    branches = ('ticket',) if level == 0 else ('ticket', 'reinit')
    for branch in branches:
      mean, minimum, maximum = _expected(ACCURACY, level, branch)
      assert float(row[f'{branch}_test_accuracy_mean']) == pytest.approx(mean)
      assert float(row[f'{branch}_test_accuracy_min']) == pytest.approx(minimum)
      assert float(row[f'{branch}_test_accuracy_max']) == pytest.approx(maximum)
      assert int(row[f'{branch}_trials']) == 2
  assert rows[0]['reinit_test_accuracy_mean'] == '' and rows[0]['reinit_trials'] == '0'
  assert os.listdir(tmp_path) == ['table.csv']  # no temporary file left behind


def test_csv_of_a_regression_run_names_the_rmse(tmp_path):
  path = tmp_path / 'table.csv'
  summaries.write_csv(_rmse_records(), str(path))
  with open(path, newline='') as file:
    rows = list(csv.DictReader(file))
  assert 'ticket_test_rmse_mean' in rows[0] and not any('accuracy' in name for name in rows[0])
  assert float(rows[2]['reinit_test_rmse_mean']) == pytest.approx(2.5)
  assert float(rows[2]['reinit_test_rmse_min']) == pytest.approx(2.0)
  assert float(rows[2]['ticket_test_rmse_max']) == pytest.approx(7e-6)


def _error_bars(axes):
  """branch -> (x, y, lower ends, upper ends) of each errorbar drawn on `axes`."""
  drawn = {}
  for container in axes.containers:
    data_line, _, (bar_lines, *_) = container.lines
    segments = bar_lines.get_segments()
    drawn[data_line.get_gid()] = (
        np.asarray(data_line.get_xdata()),
        np.asarray(data_line.get_ydata()),
        np.array([segment[:, 1].min() for segment in segments]),
        np.array([segment[:, 1].max() for segment in segments]),
    )
  return drawn


@pytest.mark.parametrize('metric, values', [('test_accuracy', ACCURACY), ('test_rmse', RMSE)])
def test_accuracy_vs_sparsity_plots_means_with_min_max_error_bars(tmp_path, metric, values):
  path = tmp_path / 'accuracy_vs_sparsity.png'
  figure = plots.plot_accuracy_vs_sparsity(_records(metric, values), str(path))
  _check_png(path)
  axes = figure.axes[0]
  drawn = _error_bars(axes)
  assert set(drawn) == {'ticket', 'reinit'}
  for branch, levels in (('ticket', (0, 1, 2)), ('reinit', (1, 2))):
    x, y, lower, upper = drawn[branch]
    expected = np.array([_expected(values, level, branch) for level in levels])
    np.testing.assert_allclose(x, [FRACTIONS[level] for level in levels])
    np.testing.assert_allclose(y, expected[:, 0])
    np.testing.assert_allclose(lower, expected[:, 1])
    np.testing.assert_allclose(upper, expected[:, 2])
  dense = [line for line in axes.lines if line.get_gid() == 'dense']
  assert len(dense) == 1
  np.testing.assert_allclose(dense[0].get_ydata(), _expected(values, 0, 'ticket')[0])
  assert dense[0].get_linestyle() == '--'
  assert axes.get_xscale() == 'log'
  left, right = axes.get_xlim()
  assert left > 1.0 > 0.25 > right  # fewer weights to the right
  assert [label.get_text() for label in axes.get_xticklabels()] == ['100', '50', '25']
  assert 'weights remaining' in axes.get_xlabel()
  assert ('RMSE' if metric == 'test_rmse' else 'accuracy') in axes.get_ylabel()
  assert axes.get_yscale() == ('log' if metric == 'test_rmse' else 'linear')  # RMSE spans 1e-6 to 3
  assert 'mean of 2 trials' in axes.get_title()
  legend = [text.get_text() for text in axes.get_legend().get_texts()]
  assert (
      legend[0] == 'winning ticket' and legend[1] == 'random reinitialization' and legend[2].startswith('dense network')
  )


def test_training_curves_plot_the_ticket_mean_per_level(tmp_path):
  path = tmp_path / 'training_curves.png'
  records = _accuracy_records()
  figure = plots.plot_training_curves(records, str(path))
  _check_png(path)
  axes = figure.axes[0]
  lines = {line.get_gid(): line for line in axes.lines}
  assert set(lines) == {'level_0', 'level_1', 'level_2'}  # the ticket only; no reinit curves
  for level in (0, 1, 2):
    mean = _expected(ACCURACY, level, 'ticket')[0]
    np.testing.assert_allclose(lines[f'level_{level}'].get_xdata(), STEPS)
    np.testing.assert_allclose(lines[f'level_{level}'].get_ydata(), [mean - 0.2, mean - 0.1, mean])
  assert lines['level_0'].get_color() != lines['level_2'].get_color()  # coloured by weights remaining
  assert [text.get_text() for text in axes.get_legend().get_texts()] == [
      '100% (level 0)',
      '50% (level 1)',
      '25% (level 2)',
  ]
  assert axes.get_xlabel() == 'training step'

  curves = summaries.training_curves(records, branch='reinit')
  assert [curve.level for curve in curves] == [1, 2]
  np.testing.assert_allclose(curves[1].minimum, [0.5, 0.6, 0.7])
  np.testing.assert_allclose(curves[1].maximum, [0.6, 0.7, 0.8])


def test_training_curves_average_only_the_trials_that_evaluated_a_step():
  records = _accuracy_records()
  first = next(record for record in records if record['trial'] == 0 and record['level'] == 0)
  first['curve'] = first['curve'][-1:]  # trial 0 evaluated only the final step
  curve = summaries.training_curves(records)[0]
  np.testing.assert_allclose(curve.steps, STEPS)
  np.testing.assert_allclose(curve.mean, [0.72, 0.82, 0.91])


def test_equal_trials_whose_mean_rounds_below_their_minimum_still_plot():
  value = 0.8158535541215322  # np.mean([value] * 3) is one ulp below value
  records = [_record(trial, 0, 'ticket', 'test_accuracy', value, (value,) * 3) for trial in range(3)]
  assert np.mean([value] * 3) < value
  figure = plots.plot_accuracy_vs_sparsity(records)
  _, y, lower, upper = _error_bars(figure.axes[0])['ticket']
  np.testing.assert_allclose([y[0], lower[0], upper[0]], value)


def test_plots_refuse_empty_records(tmp_path):
  with pytest.raises(ValueError, match='no records'):
    plots.plot_accuracy_vs_sparsity([], str(tmp_path / 'plot.png'))
  assert not os.listdir(tmp_path)


def test_load_names_a_missing_workdir_or_results_file(tmp_path):
  missing = tmp_path / 'nowhere'
  with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
    summaries.load(str(missing))
  with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / 'results.jsonl'))):
    summaries.load(str(tmp_path))
  results.write_records(str(tmp_path / 'results.jsonl'), _accuracy_records())
  assert summaries.load(str(tmp_path)) == _accuracy_records()
  damaged = _accuracy_records()
  del damaged[1]['fraction_remaining'], damaged[1]['test_accuracy']
  results.write_records(str(tmp_path / 'results.jsonl'), damaged)
  with pytest.raises(ValueError, match='record 2 has no fraction_remaining, test_accuracy or test_rmse'):
    summaries.load(str(tmp_path))


def _start_report(*arguments):
  environment = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.Popen(
      [sys.executable, '-m', 'lth_jax.report', *arguments],
      cwd=REPO,
      env=environment,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )


def test_command_line_writes_the_report_and_names_a_missing_workdir(tmp_path):
  workdir, output_dir, missing = tmp_path / 'run', tmp_path / 'report', tmp_path / 'no_such_run'
  results.write_records(str(workdir / 'results.jsonl'), _rmse_records())
  # Both processes at once: most of their time is importing JAX.
  writing = _start_report(f'--workdir={workdir}', f'--output_dir={output_dir}')
  failing = _start_report(f'--workdir={missing}')
  to_a_file = _start_report(f'--workdir={workdir}', f'--output_dir={workdir / "results.jsonl"}')
  stdout, stderr = writing.communicate(timeout=120)
  failing_stdout, failing_stderr = failing.communicate(timeout=120)
  _, to_a_file_stderr = to_a_file.communicate(timeout=120)
  assert to_a_file.returncode == 1 and 'exists and is not a folder' in to_a_file_stderr
  assert 'Traceback' not in to_a_file_stderr

  assert writing.returncode == 0, stderr[-3000:]
  assert sorted(os.listdir(output_dir)) == [
      'accuracy_vs_sparsity.png',
      'layer_density.csv',
      'layer_density.png',
      'sparsity_table.csv',
      'training_curves.png',
  ]  # (no checkpoints: no overlap)
  for name in ('accuracy_vs_sparsity.png', 'training_curves.png'):
    _check_png(output_dir / name)
  assert 'test_rmse against fraction of weights remaining' in stdout  # the sparsity table
  assert 'reinit' in stdout and 'remaining' in stdout
  assert f'wrote {output_dir / "sparsity_table.csv"}' in stdout
  assert sorted(os.listdir(workdir)) == ['results.jsonl']  # the report went to --output_dir

  assert failing.returncode != 0
  assert failing_stdout == ''
  message = failing_stderr.strip().splitlines()[-1]
  assert message.startswith('lth_jax.report: ') and str(missing) in message, failing_stderr[-3000:]
  assert 'Traceback' not in failing_stderr


def test_read_records_skips_a_truncated_last_line_with_a_warning(tmp_path, caplog):
  path = tmp_path / 'results.jsonl'
  good = _accuracy_records()[:2]
  text = ''.join(json.dumps(record) + '\n' for record in good)
  path.write_text(text + json.dumps(_accuracy_records()[2])[:40])  # an append torn mid-record
  with caplog.at_level(logging.WARNING):
    assert results.read_records(str(path)) == good
  assert any(str(path) in message and 'line 3' in message for message in caplog.messages), caplog.messages

  results.append_record(str(path), _accuracy_records()[2])  # the next append drops the torn line
  assert results.read_records(str(path)) == _accuracy_records()[:3]


@pytest.mark.parametrize('torn', [b'\x00\x00\x00\x00', b'{"trial": 0, "branch": "tick\xc3', b'7'])
def test_read_records_skips_other_torn_last_lines(tmp_path, torn):
  path = tmp_path / 'results.jsonl'
  good = _accuracy_records()[:1]
  path.write_bytes((json.dumps(good[0]) + '\n\n').encode() + torn + b'\n\n')
  assert results.read_records(str(path)) == good


def test_read_records_refuses_a_corrupt_middle_line(tmp_path):
  path = tmp_path / 'results.jsonl'
  lines = [json.dumps(record) for record in _accuracy_records()[:3]]
  lines[1] = lines[1][:30]
  path.write_text('\n'.join(lines) + '\n')
  with pytest.raises(ValueError, match=re.escape(f'{path}, line 2: corrupt record')):
    results.read_records(str(path))
  with pytest.raises(ValueError, match='line 2'):
    summaries.load(str(tmp_path))


def test_results_files_are_not_private_to_their_owner(tmp_path):
  path = tmp_path / 'results.jsonl'
  umask = os.umask(0o022)
  try:
    results.write_records(str(path), _accuracy_records())
  finally:
    os.umask(umask)
  assert os.stat(path).st_mode & 0o777 == 0o644

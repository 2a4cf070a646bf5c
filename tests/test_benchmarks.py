"""The trainer speed benchmark runs end to end (`--quick`) and prints every figure. No timing checks."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPECTED_FIGURES = (
    'lenet300_100',
    'conv4',
    'matmul_peak',
    'lenet300_100_flops',
    'conv4_flops',
    'fusion_linear_2_200_1',
    'fusion_lenet_mnist1d',
    'lottery_level',
    'lottery_run',
    'data_parallel',
)
EXPECTED_FIELDS = {
    'lenet300_100': ('masked_step_ms', 'dense_step_ms', 'masked/dense'),
    'conv4': ('masked_step_ms', 'dense_step_ms', 'masked/dense', 'lax_gradient/patches', 'fused4/single'),
    'matmul_peak': ('gflops',),
    'lenet300_100_flops': ('analytic_mflop_per_step', 'dense_fraction_of_peak'),
    'conv4_flops': ('analytic_gflop_per_step', 'dense_fraction_of_peak'),
    'fusion_linear_2_200_1': ('dispatch1_steps_per_s', 'dispatch64_steps_per_s', 'fused/single'),
    'fusion_lenet_mnist1d': ('dispatch1_steps_per_s', 'dispatch64_steps_per_s', 'fused/single'),
    'lottery_level': ('wall_s', 'training_s', 'outside_training_share'),
    'lottery_run': ('wall_s', 'training_s', 'outside_training_share'),
    'data_parallel': ('devices', 'steps_per_s', 'max_abs_diff_vs_1'),
}


@pytest.mark.slow  # a minute of benchmark smoke test: the figures are measured, not asserted
def test_trainer_speed_quick_prints_every_figure(tmp_path):
  output = tmp_path / 'trainer_speed.json'
  # The script picks its own device counts (conftest's 8 simulated devices are dropped in its main
  # process and set per data-parallel subprocess).
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get('PYTHONPATH')]))
  completed = subprocess.run(
      [sys.executable, '-m', 'experiments.benchmarks.trainer_speed', '--quick', f'--output={output}'],
      cwd=REPO_ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=900,
      check=False,
  )
  assert completed.returncode == 0, completed.stdout + completed.stderr

  lines = {}
  for line in completed.stdout.splitlines():
    if line and not line.startswith('#'):
      name, *fields = line.split()
      lines.setdefault(name, []).append(dict(field.split('=', 1) for field in fields))
  for name in EXPECTED_FIGURES:
    assert name in lines, f'figure {name!r} missing from:\n{completed.stdout}'
    for fields in lines[name]:
      for field in EXPECTED_FIELDS[name]:
        assert field in fields, f'{name}: no {field!r} in {fields}'
  assert [int(fields['devices']) for fields in lines['data_parallel']][0] == 1
  assert len(lines['data_parallel']) >= 2

  written = json.loads(output.read_text())
  assert {figure['figure'] for figure in written['figures']} == set(EXPECTED_FIGURES)


@pytest.mark.slow
def test_population_benchmark_quick_prints_every_population_size():
  completed = subprocess.run(
      [sys.executable, '-m', 'experiments.benchmarks.population', '--quick', '--members=1,2'],
      cwd=REPO_ROOT,
      env=dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1'),
      capture_output=True,
      text=True,
      timeout=900,
      check=False,
  )
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert 'population K=1 vmapped_examples_per_s=' in completed.stdout
  assert 'population K=2 vmapped_examples_per_s=' in completed.stdout
  levels = {
      fields['mode']: fields
      for fields in (
          dict(pair.split('=', 1) for pair in line.split()[1:])
          for line in completed.stdout.splitlines()
          if line.startswith('lottery_level ')
      )
  }
  assert {'sequential_1_device', 'cohort_1_device', 'packed_1_device'} <= set(levels), completed.stdout
  for mode in levels.values():
    assert float(mode['seconds']) > 0 and float(mode['vs_sequential_1_device_min']) <= float(
        mode['vs_sequential_1_device']
    )
  # Auto mode on one CPU device runs the programs and dispatches of one run at a time.
  for field in ('trainers', 'train_programs', 'dispatches', 'member_steps'):
    assert levels['cohort_1_device'][field] == levels['sequential_1_device'][field], field
  assert levels['packed_1_device']['trainers'] != levels['sequential_1_device']['trainers']
  assert 'lottery_level_profile mode=cohort_1_devices level=1 ' in completed.stdout
  assert 'compiled_share=' in completed.stdout


@pytest.mark.slow  # two minutes: four variants trained both ways, twice
def test_sweep_benchmark_quick_counts_the_dense_trainings_of_both_ways(tmp_path):
  output = tmp_path / 'sweep.json'
  completed = subprocess.run(
      [sys.executable, '-m', 'experiments.benchmarks.sweep', '--quick', f'--output={output}'],
      cwd=REPO_ROOT,
      env=dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8'),
      capture_output=True,
      text=True,
      timeout=900,
      check=False,
  )
  assert completed.returncode == 0, completed.stderr[-3000:]
  figures = {figure['figure']: figure for figure in json.loads(output.read_text())['figures']}
  # Four reset points of two trials share two dense runs; four learning rates share none.
  assert (figures['late_reset']['dense_runs_old'], figures['late_reset']['dense_runs_sweep']) == (8, 2)
  assert (figures['learning_rate']['dense_runs_old'], figures['learning_rate']['dense_runs_sweep']) == (8, 8)
  ratios = [figures[name] for name in ('late_reset', 'learning_rate')]
  assert all(figure['speedup'] > 0 for figure in ratios)
  assert all(figure['speedup_min'] <= figure['speedup'] <= figure['speedup_max'] for figure in ratios)
  profiles = {
      figure['way']: figure
      for figure in json.loads(output.read_text())['figures']
      if figure['figure'] == 'late_reset_profile'
  }
  assert set(profiles) == {'old', 'sweep'}
  for way in profiles.values():
    assert 0 < way['compiled_share'] < 1 and way['dispatches'] > 0
  # The sweep trains the reset points side by side: fewer dispatches than one run per reset point.
  assert profiles['sweep']['dispatches'] < profiles['old']['dispatches']


@pytest.mark.slow
def test_start_up_benchmark_quick_prints_every_figure(tmp_path):
  output = tmp_path / 'start_up.json'
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get('PYTHONPATH')]))
  completed = subprocess.run(
      [
          sys.executable,
          '-m',
          'experiments.benchmarks.start_up',
          '--quick',
          f'--output={output}',
          f'--workdir={tmp_path / "work"}',
      ],
      cwd=REPO_ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
  )
  # The script itself exits non-zero if the cached data differs from tfds's record-by-record decode.
  assert completed.returncode == 0, completed.stdout + completed.stderr[-3000:]
  lines = {}
  for line in completed.stdout.splitlines():
    if line and not line.startswith('#'):
      name, *fields = line.split()
      lines[name] = dict(field.split('=', 1) for field in fields)
  for name in ('build_mnist', 'build_cifar10'):
    for field in ('record_by_record_s', 'cold_s', 'warm_s', 'cold_speedup', 'warm_speedup'):
      assert float(lines[name][field]) > 0, (name, field)
  assert (lines['build_mnist']['num_train'], lines['build_cifar10']['num_test']) == ('3000', '500')
  for name in ('process_cold', 'process_warm'):
    assert float(lines[name]['wall_s']) >= float(lines[name]['min_s']) > 0 and lines[name]['num_steps'] == '100'
  phases = {name: float(value) for name, value in lines['process_warm_phases'].items()}
  parts = ('imports_s', 'config_s', 'data_s', 'setup_s', 'compile_s', 'training_s', 'end_s')
  assert all(phases[name] > 0 for name in parts), phases
  assert phases['total_s'] == pytest.approx(sum(phases[name] for name in parts), rel=0.05)  # medians of one run
  assert 0 < phases['exit_s'] < phases['end_s'] and phases['cache_hits'] > 0  # a warm run loads its programs
  written = json.loads(output.read_text())
  assert set(written) == {'build_mnist', 'build_cifar10', 'process_cold', 'process_warm', 'process_warm_phases'}
  assert written['process_warm_phases']['times'][0]['total_s'] > 0
  assert len(written['build_mnist']['times']['cold_s']) == 1

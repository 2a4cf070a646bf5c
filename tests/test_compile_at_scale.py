"""The train programs compiled ahead of time from shapes alone (`lth_jax.training.compiled`) and the
`compile_at_scale` benchmark's figures, its refusals and the README table it generates."""

import json
import pathlib
import re

import chex
import jax
import pytest

from lth_jax.training import compiled
from lth_jax.training import parallel

from experiments import sweep_cost
from experiments.benchmarks import chips
from experiments.benchmarks import compile_at_scale

REPO = pathlib.Path(__file__).resolve().parents[1]
RECORDED = REPO / 'experiments' / 'benchmarks' / 'recorded' / 'compile_at_scale_tpu.json'


def test_a_tiny_config_compiles_for_8_simulated_devices_with_every_field(tmp_path, monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
  output = tmp_path / 'figures.json'
  status = compile_at_scale.main(['--target=cpu-8', '--config=configs/default.py', '--cohorts=2', f'--output={output}'])
  assert status == 0
  figures = {figure['program']: figure for figure in json.loads(output.read_text())['figures']}
  assert set(figures) == {'run', 'cohort_2', 'sweep_2'}
  run, cohort, sweep = figures['run'], figures['cohort_2'], figures['sweep_2']
  assert (run['mesh'], cohort['mesh'], sweep['mesh']) == ('1x8', '2x4', '2x4')
  for figure in figures.values():
    assert figure['fits'] == 'yes'
    assert 0 < figure['peak_gib'] < figure['available_gib']
    assert figure['peak_gib'] >= figure['argument_gib'] + figure['temp_gib'] - 1e-9
    assert figure['tflop_per_device'] > 0 and figure['gb_accessed_per_device'] > 0
    assert figure['all_reduce_count'] >= 1  # the gradient's mean over the batch's devices
    assert figure['step_s_at_peak'] == 'n/a'  # no published peak for simulated CPU devices
  # One run's gradient is summed over all 8 devices; a cohort member's over the 4 of its row only.
  assert run['all_reduce_groups'] == '8'
  assert cohort['all_reduce_groups'] == '4'
  assert 'all_gather_count' not in cohort  # a dense model's cohort gathers nothing across members
  # A cohort device trains one member on twice the examples of one run's device.
  assert cohort['examples_per_device'] == 2 * run['examples_per_device']
  assert cohort['tflop_per_device'] > 1.5 * run['tflop_per_device']


def test_an_unknown_target_lists_the_known_ones(capsys):
  assert compile_at_scale.main(['--target=v9-8']) == 2
  error = capsys.readouterr().err
  assert "unknown target 'v9-8'" in error
  for name in ('v3-8', 'v4-8', 'v5e-8', 'cpu-64'):
    assert name in error


def test_a_program_that_does_not_fit_reports_needed_and_available():
  message = (
      'RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. '
      'Used 45.50G of 31.25G hbm. Exceeded hbm capacity by 14.25G.'
  )
  assert compile_at_scale._needed_bytes(message) == (45.5 * 2**30, 31.25 * 2**30)
  message = 'RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries (35.93G) exceeds available HBM (30.75G).'
  assert compile_at_scale._needed_bytes(message) == (35.93 * 2**30, 30.75 * 2**30)
  assert compile_at_scale._needed_bytes('some other failure') is None


def test_collectives_are_counted_with_their_bytes_and_device_groups():
  hlo = '\n'.join(
      [
          '  %all-reduce.1 = f32[1000]{0} all-reduce(%a), channel_id=1, replica_groups={{0,1,2,3}}, to_apply=%add',
          '  %all-reduce.2 = (f32[64]{0}, bf16[8,8]{1,0}) all-reduce(%b, %c), replica_groups=[2,2]<=[4], to_apply=%add',
          "  %ar-start = f32[16]{0} all-reduce-start(%d), replica_groups=mesh['axis_0'=4,'axis_1'=2] {'axis_1'}",
          '  %ar-done = f32[16]{0} all-reduce-done(%ar-start)',
          '  %all-gather.3 = f32[8,10]{1,0} all-gather(%e), replica_groups={{0,1}}, dimensions={0}',
          '  %add.4 = f32[16]{0} add(%f, %g)',
      ]
  )
  found = compiled.collectives(hlo)
  assert set(found) == {'all-reduce', 'all-gather'}
  assert found['all-reduce'] == compiled.Collective(3, 4000 + 256 + 128 + 64, (2, 4))
  assert found['all-gather'] == compiled.Collective(1, 320, (2,))


def test_the_program_of_a_cohort_is_lowered_on_shapes_alone():
  from lth_jax import data as data_lib  # pylint: disable=import-outside-toplevel
  from lth_jax import models as models_lib  # pylint: disable=import-outside-toplevel
  from lth_jax import optim  # pylint: disable=import-outside-toplevel
  from lth_jax import tasks  # pylint: disable=import-outside-toplevel

  config = compile_at_scale.load_config('configs/default.py', 0)
  run = compile_at_scale.setup(config, chips.target('cpu-8'))
  assert isinstance(run.dataset, data_lib.ArrayDataset)
  mesh = parallel.mesh_of(jax.devices()[:8], 4)
  optimizer = optim.from_config(run.spec.training, run.spec.training.num_steps, ('learning_rate',))
  model = models_lib.build(compile_at_scale.config_lib.model_spec(config), run.dataset.num_outputs)
  lowered = compiled.lower_train_program(
      model, run.dataset, optimizer, mesh, tasks.for_dataset('classification'), 64, compiled.ProgramKind(4, True)
  )
  stats = compiled.stats(lowered.compile())
  chex.assert_scalar_positive(stats.peak_bytes)
  assert stats.alias_bytes > 0  # the state and sums are donated
  assert compiled.ProgramKind(4, True).name == 'sweep_4' and compiled.ProgramKind().name == 'run'
  # One run alone is a population of one; a sweep of one variant keeps its per-member start step.
  assert compiled.ProgramKind().members == 1 and compiled.ProgramKind(1, True).name == 'sweep_1'


def test_chips_are_found_by_device_kind_and_mfu_is_their_share():
  assert chips.for_device_kind('TPU v4') is chips.CHIPS['v4']
  assert chips.for_device_kind('TPU v5 lite') is chips.CHIPS['v5e']
  assert chips.for_device_kind('NVIDIA H100 80GB HBM3') is chips.CHIPS['h100']
  assert chips.for_device_kind('cpu') is None
  assert chips.model_flops_utilization(275e12, 1.0, 2, chips.CHIPS['v4']) == pytest.approx(0.5)
  assert chips.model_flops_utilization(1.0, 1.0, 1, None) is None


def test_the_readme_table_is_the_recorded_benchmark_output_rendered():
  recorded = json.loads(RECORDED.read_text())
  assert recorded['readme_table'] is True
  figures = recorded['figures']
  programs = [figure for figure in figures if figure['figure'] == 'program']
  assert {figure['target'] for figure in programs} == set(compile_at_scale.TABLE_TARGETS)
  cost = sweep_cost.figure5_cost(8)
  rows = compile_at_scale.table_rows(figures, cost)
  assert [row['target'] for row in rows] == list(compile_at_scale.TABLE_TARGETS)
  expected = compile_at_scale.table_markdown(rows, cost)
  readme = (REPO / 'README.md').read_text()
  quoted = re.search(r'<!-- compile_at_scale: begin[^\n]*-->\n(.*?)\n<!-- compile_at_scale: end -->', readme, re.S)
  assert quoted is not None, 'README.md lost its compile_at_scale table'
  assert quoted.group(1).strip() == expected.strip()

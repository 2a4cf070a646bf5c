"""The ResNet throughput benchmark runs end to end (`--quick`) and prints every figure. No timing checks."""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEVICE_COUNT_FLAG = '--xla_force_host_platform_device_count'
EXPECTED_FIGURES = (
    'resnet18_cifar10',
    'resnet50_imagenet',
    'pipeline_cifar10',
    'pipeline_imagenet2012',
    'pipeline_imagenet2012_eval',
    'pipeline_imagenet2012_jpeg',
    'bottleneck',
)
MODEL_FIELDS = ('batch', 'steps', 'images_per_s', 'step_ms', 'min_step_ms', 'compile_s', 'warmup_step_s', 'params_m')
PIPELINE_FIELDS = ('batch', 'batches', 'images_per_s', 'batch_ms', 'first_batch_s')
# Numeric fields that must be positive and finite on every line of the figure.
EXPECTED_FIELDS = {
    'resnet18_cifar10': MODEL_FIELDS,
    'resnet50_imagenet': MODEL_FIELDS,
    'pipeline_cifar10': PIPELINE_FIELDS,
    'pipeline_imagenet2012': PIPELINE_FIELDS,
    'pipeline_imagenet2012_eval': PIPELINE_FIELDS,
    'pipeline_imagenet2012_jpeg': PIPELINE_FIELDS + ('jpeg_kb',),
    'bottleneck': ('batch', 'model_images_per_s', 'pipeline_images_per_s', 'model/pipeline'),
}


def parse_figures(stdout: str) -> dict[str, list[dict[str, str]]]:
  """Figure lines (`name key=value ...`, not '#' context) by figure name."""
  lines: dict[str, list[dict[str, str]]] = {}
  for line in stdout.splitlines():
    if line and not line.startswith('#'):
      name, *fields = line.split()
      lines.setdefault(name, []).append(dict(field.split('=', 1) for field in fields))
  return lines


def printed_order(stdout: str) -> list[str]:
  """Figure names in the order they were printed."""
  return [line.split()[0] for line in stdout.splitlines() if line and not line.startswith('#')]


@pytest.mark.slow  # 40 s of benchmark smoke test: the figures are measured, not asserted
def test_resnet_throughput_quick_prints_every_figure(tmp_path):
  output = tmp_path / 'resnet_throughput.json'
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get('PYTHONPATH')]))
  # One CPU device (conftest asks for eight simulated ones).
  env['XLA_FLAGS'] = ' '.join(
      flag for flag in env.get('XLA_FLAGS', '').split() if not flag.startswith(DEVICE_COUNT_FLAG)
  )
  completed = subprocess.run(
      [sys.executable, '-m', 'experiments.benchmarks.resnet_throughput', '--quick', f'--output={output}'],
      cwd=REPO_ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=900,
      check=False,
  )
  assert completed.returncode == 0, completed.stdout + completed.stderr[-5000:]

  lines = parse_figures(completed.stdout)
  assert set(lines) == set(EXPECTED_FIGURES), completed.stdout
  for name in EXPECTED_FIGURES:
    for fields in lines[name]:
      for field in EXPECTED_FIELDS[name]:
        assert field in fields, f'{name}: no {field!r} in {fields}'
        value = float(fields[field])
        assert math.isfinite(value) and value > 0, f'{name}: {field}={fields[field]}'
  for name, model in (('resnet18_cifar10', 'resnet20'), ('resnet50_imagenet', 'resnet50')):
    assert lines[name][0]['dtype'] == 'float32' and lines[name][0]['model'] == model
    if 'backend cpu' in completed.stdout:  # bfloat16 only off the CPU, with a note instead
      assert [fields['dtype'] for fields in lines[name]] == ['float32']
      assert f'# {name}: bfloat16 is skipped on CPU' in completed.stdout
  bottlenecks = {fields['dataset']: fields for fields in lines['bottleneck']}
  assert set(bottlenecks) == {'cifar10', 'imagenet2012'}
  assert all(fields['limited_by'] in ('model', 'pipeline') for fields in bottlenecks.values())
  assert bottlenecks['imagenet2012']['jpeg_limited_by'] in ('model', 'pipeline')
  assert bottlenecks['cifar10']['batch'] == lines['pipeline_cifar10'][0]['batch']
  assert bottlenecks['imagenet2012']['batch'] == lines['pipeline_imagenet2012'][0]['batch']

  written = json.loads(output.read_text())
  assert written['quick'] is True
  assert [figure['figure'] for figure in written['figures']] == printed_order(completed.stdout)
  for figure in written['figures']:
    for field in EXPECTED_FIELDS[figure['figure']]:
      assert math.isfinite(figure[field]) and figure[field] > 0, (figure['figure'], field, figure[field])

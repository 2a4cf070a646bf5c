"""A config's train programs compiled for a TPU slice or for many simulated CPU devices, without them.

    python -m experiments.benchmarks.compile_at_scale --target=v4-8 [--config=configs/resnet50_imagenet.py]
        [--batch_size=N] [--cohorts=2] [--largest_cohort] [--output=PATH]
    python -m experiments.benchmarks.compile_at_scale --readme_table [--output=PATH]

TPU targets need libtpu (`pip install -e ".[tpu-aot]"`): `jax.experimental.topologies` describes the
slice and libtpu compiles for it on this machine. `cpu-N` targets simulate N CPU devices
(`--xla_force_host_platform_device_count`, in a subprocess). Nothing is trained, put on a device or read
from a dataset (ImageNet's splits are stand-ins of its sizes): these are the compiler's figures, a
prediction, not a measurement.

One line per program (`lth_jax.training.compiled`: the Trainer's own train program, one step):
  program      `run` (one run over the whole mesh), `cohort_K` (K runs side by side on a ('members',
               'data') mesh laid out as the library lays it), `sweep_K` (the same with a start step per
               member: a sweep's shared program). Per device: argument, output, temporary and peak memory
               (`memory_analysis`) against the device's memory; FLOPs and bytes accessed
               (`cost_analysis`); the collectives of the optimized HLO (count, MiB, device-group sizes);
               the step time at the chip's published peak FLOP/s and at its peak bandwidth, the larger of
               the two as the predicted step (and images/s), with the peak and its source. A program
               that does not fit prints `fits=no` with the memory needed and available.
  largest_cohort
               with --largest_cohort: cohorts of 1, 2, 4, ... runs compiled until one does not fit.
  table        with --readme_table: the README's table (ResNet-50 on ImageNet at batch 1024 on v4-8,
               v5e-8 and v3-8, and Figure 5's full-size sweep in chip-hours, from `experiments.sweep_cost`).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import re
import sys
import time
from typing import Any

import jax

from lth_jax import config as config_lib
from lth_jax import data as data_lib
from lth_jax import models as models_lib
from lth_jax import optim
from lth_jax import tasks as tasks_lib
from lth_jax.models import calling
from lth_jax.training import compiled
from lth_jax.training import feeds
from lth_jax.training import memory
from lth_jax.training import parallel
from lth_jax.training import steps

from experiments import sweep_cost
from experiments.benchmarks import chips
from experiments.benchmarks import harness

DEFAULT_CONFIG = 'configs/resnet50_imagenet.py'
FIGURE_NAMES = ('program', 'largest_cohort', 'table')
TABLE_TARGETS = ('v4-8', 'v5e-8', 'v3-8')
STREAMED_SPLITS = {'imagenet2012': (1_281_167, 50_000)}  # tfds sizes of (train, validation)
# The TPU compiler's out-of-memory messages, (needed, unit, available, unit).
_NEEDED = (
    re.compile(r'Used ([\d.]+)([KMGT]?) of ([\d.]+)([KMGT]?) hbm', re.I),
    re.compile(r'required for HLO temporaries \(([\d.]+)([KMGT]?)\) exceeds available HBM \(([\d.]+)([KMGT]?)\)', re.I),
)
_UNITS = {'': 1, 'K': 2**10, 'M': 2**20, 'G': 2**30, 'T': 2**40}


@dataclasses.dataclass(frozen=True)
class Setup:
  """What every program of one config on one target is built from."""

  target: chips.Target
  devices: list[Any]
  spec: Any  # lth_jax.config.RunSpec
  model: Any
  dataset: Any
  task: Any


class _Unread:
  """A split of a dataset that is not here: its size, and no records."""

  def __init__(self, length: int) -> None:
    self.length = length

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int) -> Any:
    raise RuntimeError('compile_at_scale reads no data')


def load_config(path: str, batch_size: int | None) -> Any:
  """The config file at `path` (`PATH:VARIANT` as lth_jax.main takes it), the global batch overridden."""
  file_path, _, variant = path.partition(':')
  location = harness.REPO_ROOT / file_path if not os.path.isabs(file_path) else file_path
  module_spec = importlib.util.spec_from_file_location('compiled_config', location)
  if module_spec is None or module_spec.loader is None or not os.path.isfile(location):
    raise SystemExit(f'--config={path}: no such config file')
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(variant) if variant else module.get_config()
  if batch_size:
    config.training.batch_size = batch_size
  return config


def _dataset(config: Any) -> Any:
  """The config's dataset: a streamed tfds dataset that is not here by its sizes, else the real one."""
  name = config.dataset.name
  if name in STREAMED_SPLITS:
    num_train, num_test = STREAMED_SPLITS[name]
    return data_lib.StreamingDataset(name, _Unread(num_train), _Unread(num_test), data_lib.PREPROCESSING[name])
  return data_lib.build(config_lib.data_spec(config))


def target_devices(target: chips.Target) -> list[Any]:
  """The devices of `target`: a TPU topology's (not attached), or this process's CPU devices."""
  if target.platform == 'cpu':
    devices = jax.devices('cpu')
    if len(devices) != target.devices:
      raise RuntimeError(f'{target.name} needs {target.devices} CPU devices, this process has {len(devices)}')
    return devices
  try:
    import libtpu  # pylint: disable=import-outside-toplevel,unused-import  # noqa: F401
  except ImportError:
    raise SystemExit(f'{target.name}: TPU targets need libtpu: pip install -e ".[tpu-aot]"') from None
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel

  description = topologies.get_topology_desc(
      platform='tpu',
      topology_name=target.topology,
      chip_config_name=target.chip_config,
      chips_per_host_bounds=target.chips_per_host,
      num_slices=1,
  )
  return list(description.devices)


def setup(config: Any, target: chips.Target) -> Setup:
  """Resolves `config` for the target's devices (the checks a run makes first)."""
  config_lib.check_config(config)
  devices = target_devices(target)
  dataset = _dataset(config)
  model = models_lib.build(config_lib.model_spec(config), dataset.num_outputs)
  task = tasks_lib.from_names(dataset.task, **dataclasses.asdict(config_lib.task_spec(config)))
  params, _ = steps.split_variables(calling.variable_shapes(model, feeds.input_example(dataset)))
  spec = config_lib.resolve(config, len(devices), dataset.num_train, params)
  return Setup(target, devices, spec, model, dataset, task)


def _gib(count: float) -> float:
  return count / 2**30


def _needed_bytes(message: str) -> tuple[float, float] | None:
  """(needed, available) bytes from the TPU compiler's out-of-memory message, where it says them."""
  match = next((found for found in (pattern.search(message) for pattern in _NEEDED) if found), None)
  if match is None:
    return None
  return float(match[1]) * _UNITS[match[2].upper()], float(match[3]) * _UNITS[match[4].upper()]


def _device_memory(target: chips.Target) -> int:
  """One device's memory: the chip's HBM, or the host's memory shared by the simulated CPU devices
  (`memory.device_memory_bytes`, as the library weighs cohorts)."""
  if target.chip is not None:
    return target.chip.memory_bytes
  return memory.device_memory_bytes() or 0


def compile_program(run: Setup, members: int, start_steps: bool) -> dict[str, Any]:
  """Compiles one program (1 member: one run over the whole mesh) and returns its figure's fields."""
  batch = run.spec.training.batch_size
  kind = compiled.ProgramKind(members, start_steps)
  layout = parallel.member_layout(members, len(run.devices), batch) if members > 1 else (1, 1)
  if layout is None:
    raise ValueError(f'{kind.name}: no layout of {members} runs at batch {batch} on {len(run.devices)} devices')
  groups, slots = layout
  mesh = parallel.mesh_of(run.devices, groups)
  optimizer = optim.from_config(run.spec.training, run.spec.training.num_steps)
  available = _device_memory(run.target)
  fields: dict[str, Any] = {
      'target': run.target.name,
      'program': kind.name if slots == members else f'{kind.name}(slots={slots})',
      'devices': len(run.devices),
      'mesh': f'{groups}x{len(run.devices) // groups}',
      'batch_per_run': batch,
      'examples_per_device': batch * slots // len(run.devices),
  }
  started = time.perf_counter()
  try:
    lowered = compiled.lower_train_program(
        run.model, run.dataset, optimizer, mesh, run.task, batch, compiled.ProgramKind(slots, start_steps)
    )
    program = lowered.compile()
  except Exception as error:  # pylint: disable=broad-except  (the compiler's out-of-memory error)
    found = _needed_bytes(str(error))
    if found is None and 'RESOURCE_EXHAUSTED' not in str(error):
      raise
    needed, said_available = found if found else (float('nan'), float(available))
    return {
        **fields,
        'fits': 'no',
        'needed_gib': _gib(needed),
        'available_gib': _gib(said_available),
        'compiler_says': str(error).strip().splitlines()[0][:200].replace(' ', '_'),
    }
  fields['compile_s'] = time.perf_counter() - started
  return {**fields, **_program_fields(compiled.stats(program), run.target, available, batch * members)}


def _program_fields(stats: Any, target: chips.Target, available: int, images: int) -> dict[str, Any]:
  """A compiled program's figure fields (see the module docstring)."""
  fields: dict[str, Any] = {
      'fits': 'yes' if stats.peak_bytes <= available else 'no',
      'peak_gib': _gib(stats.peak_bytes),
      'available_gib': _gib(available),
      'argument_gib': _gib(stats.argument_bytes),
      'output_gib': _gib(stats.output_bytes),
      'temp_gib': _gib(stats.temp_bytes),
      'alias_gib': _gib(stats.alias_bytes),
      'tflop_per_device': stats.flops / 1e12,
      'gb_accessed_per_device': stats.bytes_accessed / 1e9,
  }
  for name, collective in sorted(stats.collectives.items()):
    key = name.replace('-', '_')
    fields[f'{key}_count'] = collective.count
    fields[f'{key}_mib'] = collective.bytes / 2**20
    fields[f'{key}_groups'] = ','.join(str(size or 'all') for size in collective.group_sizes)
  chip = target.chip
  if chip is None:
    return {**fields, 'step_s_at_peak': 'n/a', 'peak_source': 'n/a'}  # no published peak for CPU devices
  at_flops, at_bandwidth = stats.flops / chip.peak_flops, stats.bytes_accessed / chip.bandwidth
  step = max(at_flops, at_bandwidth)
  return {
      **fields,
      'step_s_at_peak_flops': at_flops,
      'step_s_at_peak_bandwidth': at_bandwidth,
      'predicted_step_s': step,
      'predicted_images_per_s': images / step,
      'compiler_estimate_s': stats.compiler_seconds if stats.compiler_seconds is not None else 'n/a',
      'peak_tflops_per_device': chip.peak_flops / 1e12,
      'peak_source': chip.source,
  }


def largest_cohort(run: Setup, report: harness.Report, single: dict[str, Any], limit: int = 64) -> dict[str, Any]:
  """Compiles cohorts of 2, 4, ... runs until one does not fit (`single`: the figure of one run alone,
  which counts as a cohort of 1); emits and returns the finding."""
  fits, first_not = 0, None
  members = 1
  if single['fits'] == 'yes':
    fits, members = 1, 2
  else:
    first_not = single
  while members <= limit and first_not is None:
    fields = compile_program(run, members, False)
    report.emit('program', **fields)
    if fields['fits'] != 'yes':
      first_not = fields
      break
    fits = members
    members *= 2
  result: dict[str, Any] = {'target': run.target.name, 'largest_cohort_that_fits': fits}
  if first_not is not None:
    result.update(
        does_not_fit=members,
        needed_gib=first_not.get('peak_gib', first_not.get('needed_gib')),
        available_gib=first_not['available_gib'],
    )
  report.emit('largest_cohort', **result)
  return result


def run_target(args: argparse.Namespace, report: harness.Report) -> list[dict[str, Any]]:
  """Every program of `args.config` on `args.target` (this process's devices)."""
  target = chips.target(args.target)
  run = setup(load_config(args.config, args.batch_size), target)
  print(f'# {args.config} on {target.name}: {len(run.devices)} devices, batch {run.spec.training.batch_size}')
  figures = [report.emit('program', **compile_program(run, 1, False))]
  for members in args.cohorts:
    figures.append(report.emit('program', **compile_program(run, members, False)))
    figures.append(report.emit('program', **compile_program(run, members, True)))
  if args.largest_cohort:
    figures.append(largest_cohort(run, report, figures[0]))
  return figures


def table_rows(figures: list[dict[str, Any]], cost: sweep_cost.Figure5Cost) -> list[dict[str, Any]]:
  """One row per target of the README table from the `program` and `largest_cohort` figures of one
  run of `--readme_table`: the single run's memory, step and Figure 5's sweep in chip-hours."""
  rows = []
  for name in dict.fromkeys(figure['target'] for figure in figures):
    target = chips.target(name)
    assert target.chip is not None
    single = next(figure for figure in figures if figure['target'] == name and figure.get('program') == 'run')
    cohort = next(figure for figure in figures if figure['target'] == name and 'largest_cohort_that_fits' in figure)
    chip_count = target.devices // target.chip.devices_per_chip
    step = single['predicted_step_s']
    rows.append(
        {
            'target': name,
            'chips': chip_count,
            'memory': f'{single["peak_gib"]:.1f} of {single["available_gib"]:.0f}',
            'largest_cohort': cohort['largest_cohort_that_fits'],
            'step_ms': 1000 * step,
            'step_ms_at_peak_flops': 1000 * single['step_s_at_peak_flops'],
            'bound': 'FLOPs' if single['step_s_at_peak_flops'] >= single['step_s_at_peak_bandwidth'] else 'bandwidth',
            'images_per_s': single['predicted_images_per_s'],
            'figure5_chip_hours': cost.trainings(True) * cost.steps_per_training * step * chip_count / 3600,
        }
    )
  return rows


def table_markdown(rows: list[dict[str, Any]], cost: sweep_cost.Figure5Cost) -> str:
  """The README table of `table_rows`."""
  lines = [
      '| slice | chips | memory per device, one run (GiB of HBM) | largest cohort that fits '
      '| step at peak FLOP/s (ms) | predicted step (ms) | bound by | images/s | Figure 5 sweep (chip-hours) |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ]
  for row in rows:
    lines.append(
        f'| {row["target"]} | {row["chips"]} | {row["memory"]} | {row["largest_cohort"]} '
        f'| {row["step_ms_at_peak_flops"]:.0f} | {row["step_ms"]:.0f} '
        f'| {row["bound"]} | {row["images_per_s"]:,.0f} | {row["figure5_chip_hours"]:,.0f} |'
    )
  lines.append(
      f'\nFigure 5 at full size: {cost.trainings(True):.1f} trainings of {cost.steps_per_training:,} steps as one sweep '
      '(`experiments.sweep_cost`), one run at a time at the predicted step.'
  )
  return '\n'.join(lines)


def readme_table(args: argparse.Namespace, report: harness.Report) -> list[dict[str, Any]]:
  """Every table target's run program and largest cohort, then the table."""
  figures: list[dict[str, Any]] = []
  for name in TABLE_TARGETS:
    target = chips.target(name)
    run = setup(load_config(DEFAULT_CONFIG, 1024), target)
    single = report.emit('program', **compile_program(run, 0, False))
    figures += [single, largest_cohort(run, report, single)]
  cost = sweep_cost.figure5_cost(8)
  for row in table_rows(figures, cost):
    figures.append(report.emit('table', **row))
  print(table_markdown(table_rows(figures, cost), cost))
  return figures


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--target', default='cpu-64', help=f'one of: {", ".join(chips.TARGETS)}')
  parser.add_argument('--config', default=DEFAULT_CONFIG, help='a config file (PATH or PATH:VARIANT)')
  parser.add_argument('--batch_size', type=int, default=0, help="each run's global batch (0: the config's)")
  parser.add_argument(
      '--cohorts', default='2', help='comma-separated cohort sizes compiled as cohort_K and sweep_K ("": none)'
  )
  parser.add_argument(
      '--largest_cohort', action='store_true', help='compile cohorts of 1, 2, 4, ... until one does not fit'
  )
  parser.add_argument('--readme_table', action='store_true', help="the README's table (v4-8, v5e-8, v3-8)")
  parser.add_argument('--output', default='', help='also write every figure as JSON to this path')
  args = parser.parse_args(argv)
  args.cohorts = [int(size) for size in args.cohorts.split(',') if size]
  return args


def main(argv: list[str] | None = None) -> int:
  """Compiles and prints (see the module docstring)."""
  args = parse_args(argv)
  try:
    target = chips.target(args.target)
  except ValueError as error:
    print(f'compile_at_scale: {error}', file=sys.stderr)
    return 2
  if target.platform == 'cpu' and not args.readme_table:
    harness.set_host_device_count(target.devices)  # before JAX starts its CPU backend
  run = harness.Run()
  report = harness.Report(FIGURE_NAMES)
  if args.readme_table:
    readme_table(args, report)
  else:
    run_target(args, report)
  run.finish()
  if args.output:
    if args.readme_table:
      run.write(args.output, False, report, readme_table=True, targets=list(TABLE_TARGETS), config=DEFAULT_CONFIG)
    else:
      run.write(args.output, False, report, readme_table=False, targets=[args.target], config=args.config)
  return 0


if __name__ == '__main__':
  sys.exit(main())

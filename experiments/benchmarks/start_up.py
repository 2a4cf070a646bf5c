"""How fast a run starts on prepared tfds data: the decoded cache against record-by-record decoding.

    python -m experiments.benchmarks.start_up [--quick] [--repeats=N] [--output=PATH] [--workdir=DIR]

Prepares its own data: synthetic MNIST-sized (60,000 train + 10,000 test, 28x28x1) and CIFAR-10-sized
(50,000 + 10,000, 32x32x3) images, PNG-encoded in tfds's array_record layout, written without
TensorFlow (`lth_jax.data.synthetic_tfds`), so `tfds.data_source` reads them as it reads
`tfds build --file_format=array_record` output. `--quick`: a twentieth of the examples, 100 iterations, one repeat.

Prints one line per figure, `name key=value ...` (lines starting with '#' are context):

  build_mnist, build_cifar10
      `data.build` in this process (imports done beforehand), medians of --repeats runs:
      record_by_record_s  the path before the cache: every record read and decoded by tfds one at a
                          time, then normalized to float32 on the host;
      cold_s              the decoded cache's first build: a parallel decode (one process per core)
                          into a new cache file (a fresh, empty $LTH_JAX_CACHE each repeat);
      warm_s              a later build: the cache file checked and memory-mapped;
      cold_speedup, warm_speedup   record_by_record_s over cold_s and warm_s (per repeat, median).
  process_cold, process_warm
      wall time of the whole process `python -m lth_jax.main --config=configs/lenet_mnist.py` on the
      MNIST-sized data, 2,000 iterations (--quick: 100) at batch 128, SGD 0.1, pruning.levels=0,
      branches=(), evaluation every 469 steps: with an empty $LTH_JAX_CACHE (no decoded data, no
      compiled programs), then again with what the first process left there (a re-run).
      wall_s is the median over --repeats, min_s the fastest.
  process_warm_phases
      where the warm process's time goes, from inside it (`process_phases.py` runs lth_jax.main and notes
      when each phase starts and ends; another warm process, timed after the plain one of each repeat),
      each figure the median over --repeats: imports_s (interpreter start and imports), config_s (flags,
      config checks, the JAX backend), data_s (`data.build`: the decoded cache checked and mapped),
      setup_s (model, Trainer, workdir, initial weights and checkpoint), training_s (the training loop
      with its evaluations), end_s (records, the level's checkpoint, tables and the interpreter's exit;
      exit_s is the part after `main` returned), each without the compile time inside it; compile_s
      (every JAX tracing, lowering and XLA compile or compilation-cache load; cache_hits of the
      persistent compilation cache); total_s (start to exit: the phases and compile_s add up to it).
  process_before_cold, process_before_warm
      (with --compare_with=PATH, a checkout of lth_jax without the decoded cache) the same two processes
      run from that checkout.

`--output=PATH` also writes every figure and the raw repetition times as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from experiments.benchmarks import harness
from experiments.benchmarks import process_phases

REPO_ROOT = harness.REPO_ROOT
SIZES = {'mnist': (60_000, 10_000), 'cifar10': (50_000, 10_000)}


def prepare(data_dir: pathlib.Path, fraction: float) -> None:
  """Writes the synthetic MNIST- and CIFAR-10-sized datasets under `data_dir` (tfds layout)."""
  from lth_jax.data import synthetic_tfds  # pylint: disable=import-outside-toplevel

  for name, (num_train, num_test) in SIZES.items():
    splits = {
        'train': synthetic_tfds.synthetic_images(name, int(num_train * fraction), 0),
        'test': synthetic_tfds.synthetic_images(name, int(num_test * fraction), 1),
    }
    synthetic_tfds.write_tfds_dataset(data_dir, name, splits, num_shards=1)


def record_by_record_build(name: str, data_dir: str) -> tuple[Any, ...]:
  """What `data.build` did before the decoded cache: tfds decodes record by record, host float32."""
  from lth_jax.data import tfds_source  # pylint: disable=import-outside-toplevel

  spec = tfds_source.IMAGE_DATASETS[name]
  arrays = []
  for split in ('train', 'test'):
    source = tfds_source.open_split(name, split, data_dir)
    images, labels = tfds_source.read_images_and_labels(source, len(source))
    arrays += [tfds_source.normalize_images(images, spec), labels]
  return tuple(arrays)


def time_builds(name: str, data_dir: str, cache_root: pathlib.Path, repeats: int) -> dict[str, Any]:
  """Record-by-record, cold and warm build times of one dataset (interleaved per repeat)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from lth_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from lth_jax import data  # pylint: disable=import-outside-toplevel

  config = config_lib.data_spec({'name': name, 'data_dir': data_dir})
  times: dict[str, list[float]] = {'record_by_record_s': [], 'cold_s': [], 'warm_s': []}
  for repeat in range(repeats):
    start = time.perf_counter()
    before = record_by_record_build(name, data_dir)
    times['record_by_record_s'].append(time.perf_counter() - start)
    os.environ['LTH_JAX_CACHE'] = str(cache_root / f'{name}_{repeat}')
    start = time.perf_counter()
    cold = data.build(config)
    times['cold_s'].append(time.perf_counter() - start)
    start = time.perf_counter()
    warm = data.build(config)
    times['warm_s'].append(time.perf_counter() - start)
    if not isinstance(warm.train_inputs, np.memmap):
      raise SystemExit(f'{name}: the second build did not come from the cache')
    if not (
        np.array_equal(before[1], cold.train_targets)
        and np.array_equal(before[3], warm.test_targets)
        and np.allclose(before[0][:1000], warm.model_inputs(warm.train_inputs[:1000]), atol=1e-5)
    ):
      raise SystemExit(f'{name}: the cached data differs from the record-by-record data')
    shutil.rmtree(cache_root / f'{name}_{repeat}')
  figures = {key: harness.median(values) for key, values in times.items()}
  for kind in ('cold', 'warm'):
    figures[f'{kind}_speedup'] = harness.median(
        old / new for old, new in zip(times['record_by_record_s'], times[f'{kind}_s'])
    )
  figures['num_train'], figures['num_test'] = int(warm.num_train), int(warm.num_test)
  return {'figures': figures, 'times': times}


def child_environment(cache: pathlib.Path, python_path: pathlib.Path) -> dict[str, str]:
  """The environment of a timed lth_jax process: its own cache, the host's own CPU device count."""
  env = dict(os.environ, LTH_JAX_CACHE=str(cache), PYTHONPATH=str(python_path))
  env['XLA_FLAGS'] = harness.xla_flags_with_device_count(env.get('XLA_FLAGS', ''), None)
  return env


def lth_main_arguments(repo: pathlib.Path, data_dir: str, workdir: pathlib.Path, num_steps: int) -> list[str]:
  """The flags of the timed `lth_jax.main` run: LeNet on the MNIST-sized data, dense only."""
  return [
      f'--config={repo / "configs" / "lenet_mnist.py"}',
      f'--workdir={workdir}',
      f'--config.dataset.data_dir={data_dir}',
      f'--config.training.num_steps={num_steps}',
      '--config.training.batch_size=128',
      '--config.training.optimizer=sgd',
      '--config.training.learning_rate=0.1',
      '--config.training.eval_every=469',
      '--config.pruning.levels=0',
      '--config.branches=()',
  ]


def time_process(
    repo: pathlib.Path,
    data_dir: str,
    workdir: pathlib.Path,
    cache: pathlib.Path,
    num_steps: int,
    marks_path: pathlib.Path | None = None,
) -> tuple[float, dict[str, float] | None]:
  """Wall time of one whole `lth_jax.main` process (start to exit) on the MNIST-sized data, and with
  `marks_path` its phase times (run through `process_phases.py`, which writes its marks there)."""
  shutil.rmtree(workdir, ignore_errors=True)
  if marks_path is None:
    launcher = ['-m', 'lth_jax.main']
  else:
    launcher = [process_phases.__file__, str(marks_path)]
  command = [sys.executable, *launcher, *lth_main_arguments(repo, data_dir, workdir, num_steps)]
  started, start = time.time(), time.perf_counter()
  completed = subprocess.run(
      command, cwd=repo, env=child_environment(cache, repo), capture_output=True, text=True, check=False
  )
  elapsed, exited = time.perf_counter() - start, time.time()
  if completed.returncode != 0:
    raise SystemExit(f'lth_jax.main failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}')
  if marks_path is None:
    return elapsed, None
  marks = json.loads(marks_path.read_text())
  return elapsed, process_phases.phase_times(marks, started, exited) | {'cache_hits': marks['cache_hits']}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--quick', action='store_true', help='a twentieth of the data, 100 iterations, one repeat')
  parser.add_argument('--repeats', type=int, default=0, help='repeats of each timing (default 3; --quick 1)')
  parser.add_argument('--output', default='', help='also write the figures as JSON here')
  parser.add_argument('--workdir', default='', help='folder for the data, caches and runs (default: a temp folder)')
  parser.add_argument('--compare_with', default='', help='a checkout without the cache, timed as process_before')
  args = parser.parse_args()
  repeats = args.repeats or (1 if args.quick else 3)
  fraction, num_steps = (0.05, 100) if args.quick else (1.0, 2000)
  workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix='lth_start_up_'))
  data_dir = workdir / 'tfds'
  if not (data_dir / 'cifar10').exists() or args.quick:
    shutil.rmtree(data_dir, ignore_errors=True)
    start = time.perf_counter()
    prepare(data_dir, fraction)
    print(f'# prepared synthetic tfds data under {data_dir} in {time.perf_counter() - start:.1f} s', flush=True)
  from lth_jax.data import decoded_cache  # pylint: disable=import-outside-toplevel  (imports tfds, lth_jax)

  print(f'# {decoded_cache.available_workers()} decode processes; repeats={repeats}', flush=True)
  results: dict[str, Any] = {}
  for name in SIZES:
    result = time_builds(name, str(data_dir), workdir / 'caches', repeats)
    results[f'build_{name}'] = result
    print(
        f'build_{name} '
        + ' '.join(
            f'{key}={value:.3g}' if isinstance(value, float) else f'{key}={value}'
            for key, value in result['figures'].items()
        ),
        flush=True,
    )
  processes: dict[str, list[float]] = {
      'process_cold': [],
      'process_warm': [],
      'process_before_cold': [],
      'process_before_warm': [],
  }
  phases: list[dict[str, float]] = []
  checkouts = [('process', REPO_ROOT)]
  if args.compare_with:
    checkouts.append(('process_before', pathlib.Path(args.compare_with).resolve()))
  for repeat in range(repeats):
    for prefix, repo in checkouts:
      cache = workdir / 'caches' / f'{prefix}_{repeat}'  # empty: no decoded data, no compiled programs
      shutil.rmtree(cache, ignore_errors=True)
      for kind in ('cold', 'warm'):
        wall_s, _ = time_process(repo, str(data_dir), workdir / 'run', cache, num_steps)
        processes[f'{prefix}_{kind}'].append(wall_s)
      if prefix == 'process':
        _, phase_times = time_process(repo, str(data_dir), workdir / 'run', cache, num_steps, workdir / 'marks.json')
        phases.append(phase_times or {})
      shutil.rmtree(cache, ignore_errors=True)
  for key, values in processes.items():
    if values:
      figures = {'wall_s': harness.median(values), 'min_s': min(values), 'num_steps': num_steps}
      results[key] = {'figures': figures, 'times': values}
      print(f'{key} wall_s={figures["wall_s"]:.3g} min_s={figures["min_s"]:.3g} num_steps={num_steps}', flush=True)
  phase_figures = {name: harness.median(times[name] for times in phases) for name in phases[0]}
  results['process_warm_phases'] = {'figures': phase_figures, 'times': phases}
  print(
      'process_warm_phases '
      + ' '.join(
          f'{name}={int(value)}' if name == 'cache_hits' else f'{name}={value:.3g}'
          for name, value in phase_figures.items()
      ),
      flush=True,
  )
  if args.output:
    harness.write_text(args.output, json.dumps(results, indent=2))
  if not args.workdir:
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
  main()

"""A sweep against one lottery run per variant, measured side by side in one process.

    python -m experiments.benchmarks.sweep [--quick] [--steps=2000] [--levels=2] [--trials=2]
        [--pairs=3] [--output=PATH]

1. `late_reset ...`: a late-reset sweep of 4 reset points x --trials trials of the default config's
   model and data (LeNet-300-100 on MNIST-1D, the reinit control beside each ticket), --levels levels
   of --steps steps, on every device (8 simulated CPU devices unless XLA_FLAGS says otherwise): one
   `lth_jax.run` per reset point (each trains its own dense networks) against one `lth_jax.sweep` (one
   dense run per trial, shared by the reset points, whose pruned levels train side by side in one
   program, each member from its own reset point). Figures: dense trainings of each way (counted from
   the level-0 records each trained), the median wall seconds of each, and old / sweep: the median and
   the range of the ratios of --pairs pairs run interleaved (A B B A A B ...), each ratio from two runs
   next to each other in time, so that load which comes and goes hits both ways alike.
2. `learning_rate ...`: 4 learning rates, the same two ways. Another learning rate is another dense
   training, so the sweep trains as many steps as the runs one by one; its gain is that the variants
   train side by side, each member of one program with its own learning rate, level 0 included.

Both ways run with the persistent compilation cache, warmed first by a run of each at a few steps, so
that the figures compare training rather than compilation. Each variant is the same computation both
ways (tests/test_sweeps.py checks that their records agree).
3. `late_reset_profile ...`: the late-reset figure's two ways once more, each dispatch waited for
   (`profiling.DispatchProfile`): seconds in compiled train programs and evaluations against the
   host's, the Trainers built, the train programs that ran and their dispatches.
"""

from __future__ import annotations

import os

if 'xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):  # before jax starts
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()

import glob
import itertools
import shutil
import tempfile
import time
from typing import Any, Callable, Mapping, Sequence

from absl import app
from absl import flags
import jax
import ml_collections

import lth_jax
from lth_jax import results as results_lib
from lth_jax.search import sweep_plan
from experiments import common
from experiments.benchmarks import profiling
from experiments.benchmarks.harness import interleaved
from experiments.benchmarks.harness import median
from experiments.benchmarks.harness import Report
from experiments.benchmarks.harness import Run

_QUICK = flags.DEFINE_bool('quick', False, 'Few steps: a smoke test of the benchmark itself.')
_STEPS = flags.DEFINE_integer('steps', 2000, 'Training steps of each level.')
_LEVELS = flags.DEFINE_integer('levels', 2, 'Pruning levels after the dense level 0.')
_TRIALS = flags.DEFINE_integer('trials', 2, 'Trials of every variant.')
_PAIRS = flags.DEFINE_integer('pairs', 3, 'Interleaved pairs of the two ways (the ratio: their median and range).')
_OUTPUT = flags.DEFINE_string('output', None, 'Also write the figures as JSON here.')
FIGURES = ('late_reset', 'learning_rate', 'late_reset_profile')
REWIND_FRACTIONS = (0.0, 0.01, 0.05, 0.2)  # the late-reset points, as fractions of training
LEARNING_RATE_FACTORS = (0.25, 0.5, 1.0, 2.0)  # of the default config's learning rate


def base_config(steps: int, levels: int, trials: int) -> ml_collections.ConfigDict:
  """The default config at this size, one reinit control per ticket, quiet progress."""
  config = common.embedded_config(quick=False, trials=trials)
  config.training.num_steps = steps
  config.training.eval_every = steps
  config.pruning.levels = levels
  config.branches = ('reinit',)
  config.report.progress_every_seconds = 1e9
  config.checkpointing.tensorboard = False
  return config


def dense_trainings(workdirs: Sequence[str]) -> int:
  """Level-0 records (dense trainings) in the results files of these lottery workdirs."""
  return sum(
      record['level'] == 0
      for workdir in workdirs
      for record in results_lib.read_records(os.path.join(workdir, results_lib.RESULTS_FILE))
  )


def one_run_per_variant(base: ml_collections.ConfigDict, axes: Mapping[str, Sequence[Any]], workdir: str) -> int:
  """Today's way: one lottery run per variant, each in its own workdir; returns its dense trainings."""
  ((field, values),) = axes.items()
  workdirs = []
  for index, value in enumerate(values):
    config = sweep_plan.Variant(((field, value),)).config(base)
    workdirs.append(os.path.join(workdir, f'variant_{index}'))
    lth_jax.run(config, workdirs[-1], log=lambda line: None)
  return dense_trainings(workdirs)


def one_sweep(base: ml_collections.ConfigDict, axes: Mapping[str, Sequence[Any]], workdir: str) -> int:
  """The sweep: one search; returns its dense trainings (its shared dense runs' and those of variants
  that share their level 0 with no other; a record taken from a dense run names it under 'dense_run')."""
  results = lth_jax.sweep(base, axes, workdir, log=lambda line: None)
  alone = sum(record['level'] == 0 and 'dense_run' not in record for record in results.records)
  return alone + dense_trainings(glob.glob(os.path.join(workdir, 'dense', '*')))


def compare(
    report: Report, name: str, base: ml_collections.ConfigDict, axes: Mapping[str, Sequence[Any]], pairs: int
) -> None:
  """Times both ways on `axes` in `pairs` interleaved pairs (after a warm-up of each at a few steps, each
  run in a fresh workdir) and emits the figure."""
  warm = ml_collections.ConfigDict(base.to_dict())
  warm.training.num_steps = warm.training.eval_every = 20
  # Steps inside the warm-up's 20 (reset points 0, 1, 2, ...); other values as they are.
  warm_axes = {
      field: tuple(range(len(values))) if field.endswith('_step') else values for field, values in axes.items()
  }
  dense: dict[str, int] = {}
  with tempfile.TemporaryDirectory(prefix='lth_sweep_benchmark_') as folder:
    one_run_per_variant(warm, warm_axes, os.path.join(folder, 'warm_runs'))
    one_sweep(warm, warm_axes, os.path.join(folder, 'warm_sweep'))
    runs = itertools.count()

    def timed(way: str, train: Callable[..., int]) -> Callable[[], float]:
      def measure() -> float:
        workdir = os.path.join(folder, f'{way}_{next(runs)}')
        started = time.perf_counter()
        dense[way] = train(base, axes, workdir)
        seconds = time.perf_counter() - started
        shutil.rmtree(workdir)
        return seconds

      return measure

    times = interleaved({'old': timed('old', one_run_per_variant), 'sweep': timed('sweep', one_sweep)}, pairs)
  ratios = [old / sweep for old, sweep in zip(times['old'], times['sweep'])]
  report.emit(
      name,
      variants=len(next(iter(axes.values()))),
      trials=int(base.trials),
      devices=jax.device_count(),
      pairs=pairs,
      dense_runs_old=dense['old'],
      dense_runs_sweep=dense['sweep'],
      old_s=median(times['old']),
      sweep_s=median(times['sweep']),
      speedup=median(ratios),
      speedup_min=min(ratios),
      speedup_max=max(ratios),
  )


def profile(report: Report, name: str, base: ml_collections.ConfigDict, axes: Mapping[str, Sequence[Any]]) -> None:
  """Runs both ways once more, waiting for every dispatch (`profiling.DispatchProfile`), and emits each
  one's seconds in compiled programs and on the host, its Trainers, train programs and dispatches."""
  for way, train in (('old', one_run_per_variant), ('sweep', one_sweep)):
    recorded = profiling.DispatchProfile(synchronous=True)
    with tempfile.TemporaryDirectory(prefix='lth_sweep_profile_') as workdir, recorded.recording():
      train(base, axes, workdir)
    report.emit(name, way=way, devices=jax.device_count(), **recorded.fields())


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  common.quiet_logging()
  run = Run()
  jax.config.update('jax_compilation_cache_dir', tempfile.mkdtemp(prefix='lth_sweep_benchmark_xla_'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  steps, levels, trials = (100, 1, 2) if _QUICK.value else (_STEPS.value, _LEVELS.value, _TRIALS.value)
  pairs = 1 if _QUICK.value else _PAIRS.value
  base = base_config(steps, levels, trials)
  print(
      f'# {steps} steps per level, {levels} level(s), {trials} trial(s), {jax.device_count()} device(s), '
      f'{pairs} interleaved pair(s)'
  )
  report = Report(FIGURES)
  rewind_steps = tuple(sorted({round(fraction * steps) for fraction in REWIND_FRACTIONS}))
  learning_rates = tuple(base.training.learning_rate * factor for factor in LEARNING_RATE_FACTORS)
  run.sections(
      [
          (
              'late-reset sweep',
              lambda: compare(report, 'late_reset', base, {'pruning.rewind_step': rewind_steps}, pairs),
          ),
          (
              'learning-rate sweep',
              lambda: compare(report, 'learning_rate', base, {'training.learning_rate': learning_rates}, pairs),
          ),
          (
              'late-reset profile',
              lambda: profile(report, 'late_reset_profile', base, {'pruning.rewind_step': rewind_steps}),
          ),
      ]
  )
  run.finish()
  if _OUTPUT.value:
    run.write(_OUTPUT.value, _QUICK.value, report, steps=steps, levels=levels, trials=trials)


if __name__ == '__main__':
  app.run(main)

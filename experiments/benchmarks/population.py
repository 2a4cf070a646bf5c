"""Population search against one run at a time, measured in one process.

    python -m experiments.benchmarks.population [--quick] [--members=1,2,4,8] [--batch_size=N] [--steps=N]
        [--level_steps=N] [--drift_levels=N]

1. `population K=...`: K LeNet-300-100s (MNIST-1D-shaped random data) trained by one Trainer of K
   members (one `jax.vmap`-ed step) against the same K trained one after the other, each by a Trainer of
   one member (a run alone), on one device.
2. `lottery_level ...`: one whole lottery level of the default config (LeNet-300-100 on MNIST-1D),
   4 trials x (ticket + reinit) = 8 runs, in cohort mode (`parallel.members_per_program=0`, auto: on a
   CPU device at most one run per device) and one run at a time (`=1`), on 1 device and on all (8
   simulated CPU devices unless XLA_FLAGS says otherwise), and on 1 device also forced into one program
   of 8 (`=8`, what auto did there before it packed by device count): wall seconds of level 1 and examples/s over its 8 runs, each mode run twice with the persistent
   compilation cache so that the figure is the warm one.
3. `mask_drift ...` (with --drift_levels=N > 0): the same search for N levels in cohort mode on all
   devices and one run at a time on 1 device; for each level, the fraction of the ticket's kept
   weights that the two modes' masks do not share (their float rounding differs).
"""

from __future__ import annotations

import os

if 'xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):  # before jax starts
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()

import contextlib
import tempfile
import time
from typing import Callable

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np

from lth_jax import config as config_lib
from lth_jax import masks as masks_lib
from lth_jax import models as models_lib
from lth_jax import optim
from lth_jax.search import loop as loop_lib
from lth_jax.search import lottery
from lth_jax.search import workdir as workdir_lib
from lth_jax.training import checkpoints
from lth_jax.training import parallel
from lth_jax.training import steps as steps_lib
from lth_jax.training import trainer as trainer_lib
from experiments import common
from experiments.benchmarks.builders import DEFAULT_CONFIG
from experiments.benchmarks.builders import classification_data
from experiments.benchmarks.builders import load_config
from experiments.benchmarks.harness import interleaved
from experiments.benchmarks.harness import median

_QUICK = flags.DEFINE_bool('quick', False, 'Few steps: a smoke test of the benchmark itself.')
_MEMBERS = flags.DEFINE_list('members', ['1', '2', '4', '8'], 'Population sizes K.')
_STEPS = flags.DEFINE_integer('steps', 1000, 'Training steps per member.')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Batch size per member.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Repetitions; the median is reported.')
_LEVEL_STEPS = flags.DEFINE_integer('level_steps', 3000, 'Training steps per run in the lottery-level figure.')
_DRIFT_LEVELS = flags.DEFINE_integer('drift_levels', 0, 'Levels of the mask-drift figure (0: skip it).')
_DRIFT_STEPS = flags.DEFINE_integer('drift_steps', 1000, 'Training steps per level in the mask-drift figure.')
_FIGURES = flags.DEFINE_list('figures', ['population', 'level', 'drift'], 'Which figures to measure.')


def _timer(function: Callable[[], None]) -> Callable[[], float]:
  """A measurement: seconds of one call of `function`."""

  def measure() -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started

  return measure


def measure(members: int, steps: int, batch_size: int, repeats: int) -> dict[str, float]:
  """Median seconds of a K-member vmapped run and of K sequential runs of `steps` steps each."""
  dataset = classification_data((40,), num_train=4000, num_test=1000)  # MNIST-1D-shaped
  model = models_lib.build(
      config_lib.model_spec(ml_collections.ConfigDict({'name': 'lenet', 'hidden_sizes': (300, 100)})), 10
  )
  optimizer = optim.from_config(config_lib.training_spec({'optimizer': 'adam', 'learning_rate': 1e-3}), steps)
  mesh = parallel.create_mesh(1)  # one device: the K-member step against a run alone's, nothing else
  single = trainer_lib.Trainer(model, dataset, optimizer, mesh, batch_size, steps_per_dispatch=64)  # one member
  population = trainer_lib.Trainer(
      model, dataset, optimizer, mesh, batch_size, steps_per_dispatch=64, population_size=members
  )
  starts = [single.init_variables(seed) for seed in range(members)]
  keep_mask = masks_lib.ones_like(starts[0][0])
  host_mask = jax.tree_util.tree_map(np.asarray, keep_mask)

  def run_population():
    state = population.create_state(
        steps_lib.stack_members([start[0] for start in starts]),
        steps_lib.stack_members([start[1] for start in starts]),
        steps_lib.stack_members([host_mask] * members),
        0,
    )
    jax.block_until_ready(population.train(state, steps, list(range(members))).state.params)

  def run_sequential():
    for seed, (params, model_state) in enumerate(starts):
      state = single.create_state(*(steps_lib.stack_members([tree]) for tree in (params, model_state, host_mask)), 0)
      jax.block_until_ready(single.train(state, steps, [seed]).state.params)

  run_population(), run_sequential()  # compile both before timing
  times = interleaved({'vmapped': _timer(run_population), 'sequential': _timer(run_sequential)}, repeats)
  examples = members * steps * batch_size
  return {
      'vmapped_examples_per_s': examples / median(times['vmapped']),
      'sequential_examples_per_s': examples / median(times['sequential']),
  }


def level_config(
    steps: int, levels: int, trials: int, members_per_program: int, num_devices: int
) -> ml_collections.ConfigDict:
  """The default config (LeNet-300-100 on MNIST-1D) with ticket + reinit per level."""
  config = load_config(DEFAULT_CONFIG)
  config.training.num_steps = steps
  config.training.eval_every = steps
  config.pruning.levels = levels
  config.trials = trials
  config.branches = ('reinit',)
  config.parallel.members_per_program = members_per_program
  config.parallel.num_devices = num_devices
  config.checkpointing.tensorboard = False
  return config


@contextlib.contextmanager
def _level_timer(seconds: dict[int, float]):
  """Times each level's populations (`loop._train_population`, by level) while the block runs."""
  original = loop_lib._train_population  # pylint: disable=protected-access

  def timed(shape, progress, level, *args, **kwargs):
    started = time.perf_counter()
    try:
      return original(shape, progress, level, *args, **kwargs)
    finally:
      seconds[level] = seconds.get(level, 0.0) + time.perf_counter() - started

  loop_lib._train_population = timed  # pylint: disable=protected-access
  try:
    yield
  finally:
    loop_lib._train_population = original  # pylint: disable=protected-access


def measure_level(steps: int, members_per_program: int, num_devices: int, runs: int = 2) -> dict[str, float]:
  """Seconds of level 1 (4 trials x ticket + reinit) of a fresh lottery run, the last of `runs`
  (the first fills the persistent compilation cache)."""
  seconds = []
  for _ in range(runs):
    levels: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix='lth_population_') as workdir, _level_timer(levels):
      lottery.run(level_config(steps, 1, 4, members_per_program, num_devices), workdir, log=lambda message: None)
    seconds.append(levels[1])
  examples = 8 * steps * 64
  return {'seconds': seconds[-1], 'examples_per_s': examples / seconds[-1]}


def level_figures(steps: int, runs: int) -> None:
  """Prints cohort mode (auto) against one run at a time on 1 device and on all devices, and on 1 device
  the 8 runs forced into one vmapped program (what auto no longer does on a CPU device)."""
  devices = jax.device_count()
  figures = {}
  for label, cap, count in (
      ('sequential_1_device', 1, 1),
      ('cohort_1_device', 0, 1),
      ('packed_1_device', 8, 1),
      (f'sequential_{devices}_devices', 1, 0),
      (f'cohort_{devices}_devices', 0, 0),
  ):
    figures[label] = measure_level(steps, cap, count, runs)
    print(
        f'lottery_level mode={label} runs=8 steps={steps} seconds={figures[label]["seconds"]:.2f} '
        f'examples_per_s={figures[label]["examples_per_s"]:.0f}',
        flush=True,
    )
  base = figures['sequential_1_device']['seconds']
  print(
      f'lottery_level_ratio cohort_{devices}_devices_vs_sequential_1_device='
      f'{base / figures[f"cohort_{devices}_devices"]["seconds"]:.2f} '
      f'cohort_1_device_vs_sequential_1_device={base / figures["cohort_1_device"]["seconds"]:.2f} '
      f'packed_1_device_vs_sequential_1_device={base / figures["packed_1_device"]["seconds"]:.2f} '
      f'cohort_{devices}_devices_vs_sequential_{devices}_devices='
      f'{figures[f"sequential_{devices}_devices"]["seconds"] / figures[f"cohort_{devices}_devices"]["seconds"]:.2f}',
      flush=True,
  )


def mask_drift(levels: int, steps: int) -> None:
  """Prints, per level, the share of the ticket's kept weights whose keep bit differs from one run at a
  time on 1 device: in cohort mode on all devices, and (for scale) one run at a time on 2 devices,
  whose only difference is also float rounding (the gradient summed over 2 devices)."""
  masks = {}
  for label, cap, count in (('sequential_1_device', 1, 1), ('cohort', 0, 0), ('sequential_2_devices', 1, 2)):
    if count > jax.device_count():
      continue
    with tempfile.TemporaryDirectory(prefix=f'lth_drift_{label}_') as workdir:
      lottery.run(level_config(steps, levels, 1, cap, count), workdir, log=lambda message: None)
      masks[label] = [
          jax.tree_util.tree_leaves(checkpoints.restore_tree(workdir_lib.level_directory(workdir, 0, level))['mask'])
          for level in range(1, levels + 1)
      ]
  reference = masks.pop('sequential_1_device')
  for label, compared in masks.items():
    for level, (ours, theirs) in enumerate(zip(compared, reference), start=1):
      kept = sum(int(np.sum(leaf)) for leaf in theirs)
      differing = sum(int(np.sum(np.asarray(a, bool) & ~np.asarray(b, bool))) for a, b in zip(ours, theirs))
      print(
          f'mask_drift mode={label} level={level} kept={kept} differing={differing} '
          f'fraction={differing / max(kept, 1):.5f}',
          flush=True,
      )


def main(argv):
  del argv
  common.quiet_logging()
  # The persistent compilation cache, as `lth_jax.main` keeps it: a second run of a mode compiles nothing.
  jax.config.update('jax_compilation_cache_dir', os.path.join(tempfile.gettempdir(), 'lth_population_benchmark_xla'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  steps = 64 if _QUICK.value else _STEPS.value
  repeats = 1 if _QUICK.value else _REPEATS.value
  print(
      f'device={jax.devices()[0].platform} devices={jax.device_count()} model=lenet300_100 '
      f'batch={_BATCH.value} steps={steps}'
  )
  for members in (int(value) for value in _MEMBERS.value if 'population' in _FIGURES.value):
    figures = measure(members, steps, _BATCH.value, repeats)
    ratio = figures['vmapped_examples_per_s'] / figures['sequential_examples_per_s']
    print(
        f'population K={members} vmapped_examples_per_s={figures["vmapped_examples_per_s"]:.0f} '
        f'sequential_examples_per_s={figures["sequential_examples_per_s"]:.0f} ratio={ratio:.2f}',
        flush=True,
    )
  if 'level' in _FIGURES.value:
    level_figures(100 if _QUICK.value else _LEVEL_STEPS.value, 1 if _QUICK.value else 2)
  if _DRIFT_LEVELS.value and 'drift' in _FIGURES.value:
    mask_drift(_DRIFT_LEVELS.value, _DRIFT_STEPS.value)


if __name__ == '__main__':
  app.run(main)

"""Population search against one run at a time, measured in one process.

    python -m experiments.benchmarks.population [--quick] [--members=1,2,4,8] [--batch_size=N] [--steps=N]
        [--level_steps=N] [--level_modes=...] [--pairs=N] [--profiled_modes=...] [--drift_levels=N]

1. `population K=...`: K LeNet-300-100s (MNIST-1D-shaped random data) trained by one Trainer of K
   members (one `jax.vmap`-ed step) against the same K trained one after the other, each by a Trainer of
   one member (a run alone), on one device.
2. `lottery_level ...`: one whole lottery level of the default config (LeNet-300-100 on MNIST-1D),
   4 trials x (ticket + reinit) = 8 runs, in the --level_modes: cohort mode (`parallel.members_per_program=0`,
   auto: on a CPU device at most one run per device) and one run at a time (`=1`), on 1 device and on
   all (8 simulated CPU devices unless XLA_FLAGS says otherwise), and on 1 device also forced into one
   program of 8 (`=8`, what auto did there before it packed by device count). Each mode runs once to
   fill the persistent compilation cache, then --pairs rounds interleaved (A B C, C B A, ...): the
   median and range of its level-1 seconds and of its per-round speed-up over one run at a time on 1
   device, and the Trainers it built (population size x count), the train programs that ran, their
   dispatches and member-steps of its last run (`profiling.DispatchProfile`). `lottery_level_profile ...`: one
   more run of each --profiled_modes whose level 1 waits for every dispatch: seconds in compiled train
   programs, in evaluation, building items, and the rest on the host.
3. `mask_drift ...` (with --drift_levels=N > 0): the same search for N levels in cohort mode on all
   devices and one run at a time on 1 device; for each level, the fraction of the ticket's kept
   weights that the two modes' masks do not share (their float rounding differs).
"""

from __future__ import annotations

import os

if 'xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):  # before jax starts
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()

import contextlib
import functools
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
from experiments.benchmarks import profiling

_QUICK = flags.DEFINE_bool('quick', False, 'Few steps: a smoke test of the benchmark itself.')
_MEMBERS = flags.DEFINE_list('members', ['1', '2', '4', '8'], 'Population sizes K.')
_STEPS = flags.DEFINE_integer('steps', 1000, 'Training steps per member.')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Batch size per member.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Repetitions; the median is reported.')
_LEVEL_STEPS = flags.DEFINE_integer('level_steps', 3000, 'Training steps per run in the lottery-level figure.')
_DRIFT_LEVELS = flags.DEFINE_integer('drift_levels', 0, 'Levels of the mask-drift figure (0: skip it).')
_DRIFT_STEPS = flags.DEFINE_integer('drift_steps', 1000, 'Training steps per level in the mask-drift figure.')
_LEVEL_MODES = flags.DEFINE_list(
    'level_modes',
    ['sequential_1_device', 'cohort_1_device', 'packed_1_device', 'sequential_all_devices', 'cohort_all_devices'],
    'Modes of the lottery-level figure (sequential_1_device is the base of its ratios).',
)
_PAIRS = flags.DEFINE_integer('pairs', 3, 'Interleaved rounds of the lottery-level modes.')
_PROFILED_MODES = flags.DEFINE_list(
    'profiled_modes', ['sequential_1_device', 'cohort_all_devices'], 'Lottery-level modes profiled (compiled vs host).'
)
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
def _level_timer(seconds: dict[int, float], level_profile: profiling.DispatchProfile | None = None):
  """Times each level's populations (`loop._train_population`, by level) while the block runs; level 1's
  also recorded in `level_profile`."""
  original = loop_lib._train_population  # pylint: disable=protected-access

  def timed(shape, progress, level, *args, **kwargs):
    recording = level_profile.recording() if level_profile is not None and level == 1 else contextlib.nullcontext()
    started = time.perf_counter()
    try:
      with recording:
        return original(shape, progress, level, *args, **kwargs)
    finally:
      seconds[level] = seconds.get(level, 0.0) + time.perf_counter() - started

  loop_lib._train_population = timed  # pylint: disable=protected-access
  try:
    yield
  finally:
    loop_lib._train_population = original  # pylint: disable=protected-access


LEVEL_MODES = {  # name: (parallel.members_per_program, parallel.num_devices; 0: every device)
    'sequential_1_device': (1, 1),  # one run at a time
    'cohort_1_device': (0, 1),  # auto: at most one run per CPU device
    'packed_1_device': (8, 1),  # the 8 runs forced into one program (what auto did before)
    'sequential_all_devices': (1, 0),  # one run at a time, each batch split over every device
    'cohort_all_devices': (0, 0),  # auto
}


def measure_level(
    steps: int, mode: str, counts: profiling.DispatchProfile, level_profile: profiling.DispatchProfile | None = None
) -> float:
  """Seconds of level 1 (4 trials x ticket + reinit = 8 runs) of a fresh lottery run in `mode`; the whole
  run's Trainers and dispatches are counted in `counts`, level 1's profiled in `level_profile`."""
  levels: dict[int, float] = {}
  members_per_program, num_devices = LEVEL_MODES[mode]
  config = level_config(steps, 1, 4, members_per_program, num_devices)
  with tempfile.TemporaryDirectory(prefix='lth_population_') as workdir, counts.recording():
    with _level_timer(levels, level_profile):
      lottery.run(config, workdir, log=lambda message: None)
  return levels[1]


def level_figures(steps: int, modes: list[str], pairs: int, profiled: list[str]) -> None:
  """Prints each mode's level-1 seconds over `pairs` interleaved rounds (after a warm run of each that
  fills the persistent compilation cache), the median and range of each mode's per-round speed-up over
  one run at a time on 1 device, the programs and dispatches of each mode, and for the `profiled` modes
  one more run's level 1 with every dispatch waited for: its time in compiled programs against the host."""
  devices = jax.device_count()
  unknown = sorted(set(modes + profiled) - set(LEVEL_MODES))
  if unknown or 'sequential_1_device' not in modes:
    raise app.UsageError(f'level modes {unknown}: choose from {list(LEVEL_MODES)}, sequential_1_device among them')
  counts: dict[str, profiling.DispatchProfile] = {}  # each mode's last run

  def counted(mode: str) -> float:
    counts[mode] = profiling.DispatchProfile()
    return measure_level(steps, mode, counts[mode])

  for mode in modes:
    counted(mode)
  times = interleaved({mode: functools.partial(counted, mode) for mode in modes}, max(pairs, 1))
  examples = 8 * steps * 64
  rounds = len(times['sequential_1_device'])
  for mode in modes:
    label = mode.replace('all_devices', f'{devices}_devices')
    seconds = median(times[mode])
    ratios = [base / ours for base, ours in zip(times['sequential_1_device'], times[mode])]
    figures = counts[mode].fields()
    print(
        f'lottery_level mode={label} runs=8 steps={steps} rounds={rounds} seconds={seconds:.2f} '
        f'seconds_min={min(times[mode]):.2f} seconds_max={max(times[mode]):.2f} '
        f'examples_per_s={examples / seconds:.0f} vs_sequential_1_device={median(ratios):.2f} '
        f'vs_sequential_1_device_min={min(ratios):.2f} vs_sequential_1_device_max={max(ratios):.2f} '
        + ' '.join(f'{key}={value}' for key, value in figures.items()),
        flush=True,
    )
  for mode in profiled:
    profile = profiling.DispatchProfile(synchronous=True)
    measure_level(steps, mode, profiling.DispatchProfile(), profile)
    label = mode.replace('all_devices', f'{devices}_devices')
    fields = ' '.join(
        f'{key}={value:.3g}' if isinstance(value, float) else f'{key}={value}'
        for key, value in profile.fields().items()
    )
    print(f'lottery_level_profile mode={label} level=1 {fields}', flush=True)


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
    level_figures(
        100 if _QUICK.value else _LEVEL_STEPS.value,
        _LEVEL_MODES.value,
        1 if _QUICK.value else _PAIRS.value,
        _PROFILED_MODES.value,
    )
  if _DRIFT_LEVELS.value and 'drift' in _FIGURES.value:
    mask_drift(_DRIFT_LEVELS.value, _DRIFT_STEPS.value)


if __name__ == '__main__':
  app.run(main)

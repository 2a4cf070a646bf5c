"""Where one lottery level's time goes (trainer_speed's lottery_level and lottery_run figures).

`lottery.run(configs/default.py, levels=1)` in a fresh subprocess worker (cold caches, as a real run
starts), timed by monkeypatching library functions from here (the library is not changed): the wall
time of level 1 and of the whole run, split into training and what lies outside it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import shutil
import tempfile
import time
from typing import Any, Callable

import jax
import ml_collections

from lth_jax import branches as branches_lib
from lth_jax import pruning
from lth_jax.search import records as records_lib
from lth_jax.search import lottery
from lth_jax.training import checkpoints
from lth_jax.training import placement as placement_lib
from lth_jax.training import trainer as trainer_lib

from experiments.benchmarks.builders import DEFAULT_CONFIG
from experiments.benchmarks.builders import load_config
from experiments.benchmarks.harness import Report
from experiments.benchmarks.harness import Workers
from experiments.benchmarks.harness import median


@dataclasses.dataclass(frozen=True)
class Settings:
  """How much to measure."""

  lottery_steps: int | None  # None: the config's training.num_steps
  lottery_eval_every: int | None
  lottery_reps: int


class Timeline:
  """Records (kind, start, end, info) of calls to patched library functions; `restore` undoes patches."""

  def __init__(self) -> None:
    self.events: list[tuple[str, float, float, Any]] = []
    self._patches: list[tuple[Any, str, Any]] = []

  def wrap(
      self,
      owner: Any,
      attribute: str,
      kind: str,
      before: Callable[..., None] | None = None,
      info: Callable[..., Any] | None = None,
  ) -> None:
    """Times every call of `owner.attribute` (skipped, if the library no longer has it)."""
    if not hasattr(owner, attribute):
      print(f'# note: {getattr(owner, "__name__", owner)}.{attribute} not found; {kind} not timed', flush=True)
      return
    original = getattr(owner, attribute)

    @functools.wraps(original)
    def timed(*args, **kwargs):
      if before is not None:
        before(*args, **kwargs)
      started = time.perf_counter()
      try:
        return original(*args, **kwargs)
      finally:
        self.events.append((kind, started, time.perf_counter(), info(*args, **kwargs) if info else None))

    self._patches.append((owner, attribute, original))
    setattr(owner, attribute, timed)

  def first_call_timed(self, program: Callable[..., Any], kind: str) -> Callable[..., Any]:
    """`program` (a jitted function) with only its first call timed (trace + compile + dispatch)."""
    called = []

    def first_timed(*args, **kwargs):
      if called:
        return program(*args, **kwargs)
      called.append(True)
      started = time.perf_counter()
      try:
        return program(*args, **kwargs)
      finally:
        self.events.append((kind, started, time.perf_counter(), None))

    return first_timed

  def restore(self) -> None:
    """Puts back every patched function."""
    for owner, attribute, original in reversed(self._patches):
      setattr(owner, attribute, original)
    self._patches.clear()

  def total(self, kind: str, start: float, end: float) -> float:
    """Seconds of `kind` calls that started in [start, end)."""
    return sum(stop - begin for name, begin, stop, _ in self.events if name == kind and start <= begin < end)


def breakdown(timeline: Timeline, start: float, end: float) -> dict[str, float]:
  """Where [start, end) went: pure training (Trainer.train minus the evaluations and first-call
  compilations inside it) and everything outside it."""
  wall = end - start
  parts = {
      kind: timeline.total(kind, start, end)
      for kind in ('train', 'evaluate', 'compile_train', 'compile_eval', 'checkpoint', 'prune', 'reset', 'create_state')
  }
  # Trainer.evaluate contains the evaluation program's first call (its compilation).
  training = parts['train'] - parts['evaluate'] - parts['compile_train']
  other = wall - parts['train'] - parts['checkpoint'] - parts['prune'] - parts['reset'] - parts['create_state']
  return {
      'wall_s': wall,
      'training_s': training,
      'outside_training_s': wall - training,
      'outside_training_share': (wall - training) / wall if wall > 0 else float('nan'),
      'evaluate_s': parts['evaluate'] - parts['compile_eval'],
      'compile_s': parts['compile_train'] + parts['compile_eval'],
      'checkpoint_s': parts['checkpoint'],
      'prune_s': parts['prune'],
      'reset_s': parts['reset'],
      'create_state_s': parts['create_state'],
      'other_s': other,
  }


def one_lottery_run(config: ml_collections.ConfigDict) -> tuple[dict[str, float], dict[str, float], float]:
  """Runs the config once in a fresh workdir; returns (level-1 breakdown, whole-run breakdown, sum of
  the records' wall_seconds)."""
  timeline = Timeline()
  trainer_class = trainer_lib.Trainer
  original_init = trainer_class.__init__

  def init_and_instrument(self, *args, **kwargs):
    original_init(self, *args, **kwargs)
    placement = getattr(self, 'placement', None)  # the Trainer's programs on the mesh (lth_jax.training.placement)
    if placement is None:
      print('# note: Trainer.placement not found; compilation not timed', flush=True)
      return
    programs = placement.programs
    self.placement = dataclasses.replace(
        placement,
        programs=dataclasses.replace(
            programs,
            train_chunk=timeline.first_call_timed(programs.train_chunk, 'compile_train'),
            evaluate=timeline.first_call_timed(programs.evaluate, 'compile_eval'),
        ),
    )

  workdir = tempfile.mkdtemp(prefix='lth_trainer_speed_')
  try:
    trainer_class.__init__ = init_and_instrument
    timeline.wrap(trainer_class, 'train', 'train')
    # Wait for the state first, so that outstanding training is not billed to evaluation.
    timeline.wrap(
        placement_lib.Placement,
        'evaluate',
        'evaluate',
        before=lambda self, state, *args, **kwargs: jax.block_until_ready(state.params),
    )
    timeline.wrap(trainer_class, 'create_state', 'create_state')
    timeline.wrap(checkpoints, 'save_tree', 'checkpoint')
    timeline.wrap(pruning, 'next_mask', 'prune')
    timeline.wrap(branches_lib, 'start', 'reset')
    timeline.wrap(
        records_lib,
        'build',
        'record',
        info=lambda search, member, *args, **kwargs: member.level,
    )
    started = time.perf_counter()
    results = lottery.run(config, workdir, log=lambda message: None)
    finished = time.perf_counter()
  finally:
    trainer_class.__init__ = original_init
    timeline.restore()
    shutil.rmtree(workdir, ignore_errors=True)
  record_ends = {}
  for kind, _, end, level in timeline.events:
    if kind == 'record':
      record_ends[level] = max(record_ends.get(level, 0.0), end)
  level0_end, level1_end = record_ends[0], record_ends[max(record_ends)]
  level = breakdown(timeline, level0_end, level1_end)
  whole = breakdown(timeline, started, finished)
  whole['level0_wall_s'] = level0_end - started
  whole['records'] = len(results.records)
  return level, whole, sum(record['wall_seconds'] for record in results.records)


def lottery_config(settings: Settings) -> ml_collections.ConfigDict:
  """configs/default.py for one level on one device, with the settings' steps and evaluation interval."""
  config = load_config(DEFAULT_CONFIG)
  config.pruning.levels = 1
  config.parallel.num_devices = 1
  if settings.lottery_steps is not None:
    config.training.num_steps = settings.lottery_steps
  if settings.lottery_eval_every is not None:
    config.training.eval_every = settings.lottery_eval_every
  return config


def lottery_worker(settings: Settings, output: str) -> None:
  """Runs in a fresh subprocess (cold caches, as a real run starts): one instrumented lottery run."""
  level, whole, records_wall = one_lottery_run(lottery_config(settings))
  pathlib.Path(output).write_text(json.dumps({'level': level, 'whole': whole, 'records_wall_s': records_wall}))


def lottery_figures(report: Report, settings: Settings, workers: Workers) -> None:
  """Emits lottery_level and lottery_run: medians over `settings.lottery_reps` 'lottery' workers."""
  config = lottery_config(settings)
  runs = [workers.run('lottery', 1)[0] for _ in range(settings.lottery_reps)]
  common = {
      'config': 'configs/default.py',
      'levels': 1,
      'steps': config.training.num_steps,
      'eval_every': config.training.eval_every,
      'branches': '+'.join(['ticket', *config.branches]),
      'reps': settings.lottery_reps,
  }

  def medians(parts: list[dict[str, float]]) -> dict[str, float]:
    return {key: median([part[key] for part in parts]) for key in parts[0]}

  level = medians([run['level'] for run in runs])
  report.emit('lottery_level', raw=[run['level'] for run in runs], level=1, **common, **level)
  whole = medians([run['whole'] for run in runs])
  whole['records'] = int(whole['records'])
  report.emit(
      'lottery_run',
      raw=[run['whole'] for run in runs],
      **common,
      **whole,
      records_wall_seconds_sum=median([run['records_wall_s'] for run in runs]),
  )

"""One `python -m lth_jax.main` process that also notes when each of its phases starts and ends.

    python experiments/benchmarks/process_phases.py MARKS_JSON [lth_jax.main flags ...]

Runs `lth_jax.main` as `python -m lth_jax.main` does (same flags, same exit status) and writes
MARKS_JSON as it exits: wall-clock times (`time.time()`, the clock JAX's compile events use, so a
parent process can add its own start and exit times) of

  imported       `lth_jax.main` imported (with JAX, flax, optax, ...);
  data_start, data_end               the dataset built (`lth_jax.data.build`);
  train_start, train_end             the first `Trainer.train` loop starts, the last one ends;
  main_returned  `lth_jax.main.main` returned (what follows is the interpreter's exit);

and `compile_spans`: [start, end] of every JAX tracing, lowering to MLIR and XLA compile or
compilation-cache load (`jax.monitoring`'s compile events), with `cache_hits` and `cache_misses`.
`phase_times` turns them, with the parent's start and exit times, into the phase times.

Run as a script (not `-m experiments...`) so that nothing but lth_jax's own imports is timed. It wraps
`lth_jax.data.build` and `TrainLoop.run` only to note the time around them: the run itself is
`lth_jax.main`'s, unchanged.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

MARK_NAMES = ('imported', 'data_start', 'data_end', 'train_start', 'train_end', 'main_returned')
PHASES = ('imports', 'config', 'data', 'setup', 'training', 'end')  # in order; compile is taken out of each
COMPILE_EVENTS = (
    '/jax/core/compile/jaxpr_trace_duration',
    '/jax/core/compile/jaxpr_to_mlir_module_duration',
    '/jax/core/compile/backend_compile_duration',
)


def _merged(spans: list[list[float]]) -> list[tuple[float, float]]:
  """The union of `spans` as disjoint (start, end) intervals (a trace inside another counts once)."""
  merged: list[tuple[float, float]] = []
  for start, end in sorted(spans):
    if merged and start <= merged[-1][1]:
      merged[-1] = (merged[-1][0], max(merged[-1][1], end))
    else:
      merged.append((start, end))
  return merged


def phase_times(marks: dict[str, Any], started: float, exited: float) -> dict[str, float]:
  """Seconds of each phase of a process started at `started` and gone at `exited` (`time.time()`),
  from its MARKS_JSON: imports (interpreter start included), config (flags, config checks, JAX's
  backend), data, setup (model, Trainer, workdir, initial weights), training, end (after the last
  training loop: records, checkpoints, tables, the interpreter's exit), each without the compile
  time inside it; compile (every tracing, lowering and XLA compile or cache load); exit (the part
  of end after `main` returned); total (start to exit, the sum of the phases and compile)."""
  compiles = _merged(marks['compile_spans'])

  def compile_within(low: float, high: float) -> float:
    return sum(max(0.0, min(end, high) - max(start, low)) for start, end in compiles)

  bounds = [started, *(marks[name] for name in MARK_NAMES[:-1]), exited]
  times = {f'{name}_s': high - low - compile_within(low, high) for name, low, high in zip(PHASES, bounds, bounds[1:])}
  times['compile_s'] = compile_within(started, exited)
  times['exit_s'] = exited - marks['main_returned']
  times['total_s'] = exited - started
  order = ('imports_s', 'config_s', 'data_s', 'setup_s', 'compile_s', 'training_s', 'end_s', 'exit_s', 'total_s')
  return {name: times[name] for name in order}


def main() -> None:
  """Runs lth_jax.main with the flags after MARKS_JSON, noting its marks."""
  if sys.path and os.path.abspath(sys.path[0] or '.') == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]  # run as a script: its sibling modules must not shadow the packages lth_jax imports
  marks_path, argv = sys.argv[1], ['lth_jax.main', *sys.argv[2:]]
  import jax  # pylint: disable=import-outside-toplevel  (timed with lth_jax's imports)
  from absl import app  # pylint: disable=import-outside-toplevel
  from lth_jax import data  # pylint: disable=import-outside-toplevel
  from lth_jax import main as lth_main  # pylint: disable=import-outside-toplevel
  from lth_jax.training import train_loop  # pylint: disable=import-outside-toplevel

  times: dict[str, float] = {'imported': time.time()}
  spans: list[list[float]] = []
  counts = {'cache_hits': 0, 'cache_misses': 0}

  def on_span(event: str, start: float, end: float, **_: Any) -> None:
    if event in COMPILE_EVENTS:
      spans.append([start, end])

  def on_event(event: str, **_: Any) -> None:
    name = event.rpartition('/')[2]
    if event.startswith('/jax/compilation_cache/') and name in counts:
      counts[name] += 1

  jax.monitoring.register_event_time_span_listener(on_span)
  jax.monitoring.register_event_listener(on_event)
  build, run = data.build, train_loop.TrainLoop.run

  def timed_build(*args: Any, **kwargs: Any) -> Any:
    times.setdefault('data_start', time.time())
    try:
      return build(*args, **kwargs)
    finally:
      times['data_end'] = time.time()

  def timed_run(self: Any, *args: Any, **kwargs: Any) -> Any:
    times.setdefault('train_start', time.time())
    try:
      return run(self, *args, **kwargs)
    finally:
      times['train_end'] = time.time()

  data.build = timed_build
  train_loop.TrainLoop.run = timed_run

  def timed_main(arguments: list[str]) -> None:
    try:
      lth_main.main(arguments)
    finally:
      times['main_returned'] = time.time()
      with open(marks_path, 'w', encoding='utf-8') as file:
        json.dump({**times, 'compile_spans': spans, **counts}, file)

  sys.argv = argv
  lth_main.flags.mark_flags_as_required(['config'])
  app.run(timed_main, flags_parser=lth_main.parse_flags)


if __name__ == '__main__':
  main()

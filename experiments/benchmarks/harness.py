"""The benchmarks' shared harness: figure lines and their JSON output, timing helpers, simulated CPU devices.

A benchmark prints one line per figure, `name key=value ...` (lines starting with '#' are context),
through a `Report`, which keeps the figures for `--output=PATH`. Timings of variants that are compared
run `interleaved`; `paired_ratio` compares them round by round. `Workers` runs a benchmark module again
as a subprocess worker with its own simulated CPU device count.

Only the standard library is imported at module level: `start_up` imports lth_jax (and jax) only where it
needs it.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Iterable, Sequence

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEVICE_COUNT_FLAG = '--xla_force_host_platform_device_count'


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically (a temporary file in the same folder, then a rename), creating
  the folder; standard library only."""
  folder = pathlib.Path(path).resolve().parent
  folder.mkdir(parents=True, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=folder, prefix='.tmp-')
  try:
    with os.fdopen(handle, 'w') as file:
      file.write(text)
    os.replace(temporary, path)
  except BaseException:
    os.unlink(temporary)
    raise


# ------------------------------------------------------------------------------------------------
# Simulated CPU devices.


def xla_flags_with_device_count(xla_flags: str, count: int | None) -> str:
  """`xla_flags` with its simulated CPU device count replaced by `count` (with None, removed)."""
  flags = [flag for flag in xla_flags.split() if not flag.startswith(DEVICE_COUNT_FLAG)]
  if count is not None:
    flags.append(f'{DEVICE_COUNT_FLAG}={count}')
  return ' '.join(flags)


def set_host_device_count(count: int | None) -> None:
  """Sets (or, with None, removes) the simulated CPU device count in XLA_FLAGS. Effective only before
  JAX starts its CPU backend (the first computation), which importing jax does not do."""
  os.environ['XLA_FLAGS'] = xla_flags_with_device_count(os.environ.get('XLA_FLAGS', ''), count)


# ------------------------------------------------------------------------------------------------
# Figures and their output.


def _format(value: Any) -> str:
  if isinstance(value, float):
    return f'{value:.4g}'
  return str(value)


class Report:
  """Prints figures as `name key=value ...` lines and keeps them for the JSON output."""

  def __init__(self, figure_names: tuple[str, ...]) -> None:
    self.figure_names = figure_names
    self.figures: list[dict[str, Any]] = []
    self.raw: dict[str, Any] = {}

  def emit(self, name: str, raw: Any = None, **fields: Any) -> dict[str, Any]:
    """Prints one figure line and records it (with `raw` data for the JSON output)."""
    assert name in self.figure_names, name
    figure = {'figure': name, **fields}
    self.figures.append(figure)
    if raw is not None:
      self.raw[f'{name}:{len(self.figures) - 1}'] = raw
    print(' '.join([name, *(f'{key}={_format(value)}' for key, value in fields.items())]), flush=True)
    return figure


class Run:
  """One benchmark run's wall clock and host load average, from construction to `finish`."""

  def __init__(self) -> None:
    self.started = time.perf_counter()
    self.load_before = os.getloadavg()
    self.runtime_s = float('nan')
    self.load_after = self.load_before

  def sections(self, sections: Sequence[tuple[str, Callable[[], Any]]]) -> list[Any]:
    """Runs each (title, section) in turn, printing `# (title: N s)` after it; returns their results."""
    results = []
    for title, section in sections:
      section_started = time.perf_counter()
      results.append(section())
      print(f'# ({title}: {time.perf_counter() - section_started:.1f} s)', flush=True)
    return results

  def finish(self) -> None:
    """Stops the clock and prints the runtime and the load average at the end."""
    self.runtime_s = time.perf_counter() - self.started
    self.load_after = os.getloadavg()
    print(f'# runtime {self.runtime_s:.1f} s; load average {self.load_after[0]:.2f} at the end', flush=True)

  def write(self, path: str, quick: bool, report: Report, **context: Any) -> None:
    """Writes the figures, their raw data and the run's `context` to `path` as strict JSON."""
    from lth_jax import results as results_lib  # pylint: disable=import-outside-toplevel  (imports jax)

    payload = {
        'quick': quick,
        'runtime_s': self.runtime_s,
        **context,
        'load_average_start': self.load_before,
        'load_average_end': self.load_after,
        'figures': report.figures,
        'raw': report.raw,
    }
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    with results_lib.atomic_open(path) as file:
      file.write(results_lib.strict_json(payload, indent=2, default=str))


# ------------------------------------------------------------------------------------------------
# Timing.


def median(values: Iterable[float]) -> float:
  """The median, as a float."""
  return float(statistics.median(values))


def paired_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
  """Median over rounds of numerator/denominator, each ratio from runs adjacent in time (robust to
  load that changes between rounds, which a ratio of medians is not)."""
  return median([a / b for a, b in zip(times[numerator], times[denominator])])


def interleaved(measurements: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
  """Runs every measurement `reps` times round-robin, reversing the order every other round, so that
  background load and thermal drift hit every variant alike. Returns each run's result (seconds)."""
  names = list(measurements)
  results: dict[str, list[float]] = {name: [] for name in names}
  for rep in range(reps):
    for name in names if rep % 2 == 0 else names[::-1]:
      results[name].append(measurements[name]())
  return results


def parallel_map(function: Callable[[Any], Any], items: Iterable[Any], workers: int = 2) -> list[Any]:
  """`map` over two threads: XLA compiles with the GIL released, so two programs compile at once."""
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    return list(pool.map(function, items))


# ------------------------------------------------------------------------------------------------
# Subprocess workers.


class Workers:
  """Runs `python -m module --worker=KIND ...` subprocesses, each with its own simulated CPU device
  count, and deletes their files at `cleanup`."""

  def __init__(self, module: str, arguments: Sequence[str] = (), prefix: str = 'lth_benchmark_') -> None:
    self.module, self.arguments, self.prefix = module, list(arguments), prefix
    self._folders: list[str] = []

  def run(self, kind: str, devices: int) -> tuple[dict[str, Any], str, float]:
    """Runs a `kind` worker with `devices` simulated CPU devices; returns (its JSON result, the path
    prefix of its files (deleted at cleanup), the subprocess's wall seconds)."""
    folder = tempfile.mkdtemp(prefix=self.prefix)
    output = os.path.join(folder, 'result.json')
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    env['XLA_FLAGS'] = xla_flags_with_device_count(env.get('XLA_FLAGS', ''), devices)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get('PYTHONPATH')]))
    command = [
        sys.executable,
        '-m',
        self.module,
        f'--worker={kind}',
        f'--worker_devices={devices}',
        f'--worker_output={output}',
        *self.arguments,
    ]
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    process_s = time.perf_counter() - started
    if completed.returncode != 0 or not os.path.exists(output):
      sys.stderr.write(completed.stdout + completed.stderr)
      raise RuntimeError(f'{kind} worker with {devices} device(s) failed (exit {completed.returncode})')
    self._folders.append(folder)
    return json.loads(pathlib.Path(output).read_text()), output, process_s

  def cleanup(self) -> None:
    """Deletes the files of every worker run so far."""
    for folder in self._folders:
      shutil.rmtree(folder, ignore_errors=True)
    self._folders.clear()

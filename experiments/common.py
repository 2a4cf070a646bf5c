"""Shared pieces of the experiment scripts: the base config, late-reset points, their variants run as one
sweep, and atomic text outputs."""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
from typing import Any, Callable, Mapping, Sequence, TypeVar

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from lth_jax import config as config_lib
from lth_jax.config import errors
from lth_jax.config import schema
from lth_jax.data import tfds_source
from lth_jax.reporting import style
from lth_jax import results as results_lib
from lth_jax import search
from lth_jax.search import experiment as experiment_lib
from lth_jax.search import workdir as workdir_lib

Key = TypeVar('Key')  # a sweep's configs are keyed by variant name or reset point


def embedded_config(quick: bool, trials: int) -> ml_collections.ConfigDict:
  """The embedded default (LeNet-300-100 on MNIST-1D); `quick` shrinks it to a smoke test."""
  config = schema.base_config()
  config.trials = trials
  config.training.learning_rate = 2e-3
  config.training.num_steps = 300 if quick else 3000
  config.training.eval_every = 100 if quick else 500
  config.pruning.levels = 2 if quick else 8
  config.model.hidden_sizes = (64, 32) if quick else (300, 100)
  return config


def base_config(
    config_file: ml_collections.ConfigDict | None, quick: bool, trials: int | None, embedded_trials: tuple[int, int]
) -> ml_collections.ConfigDict:
  """The config a sweep starts from: `config_file` (from --config), or the embedded one (`quick`: the
  smoke-test size). `trials` overrides the trial count; by default the embedded config takes
  `embedded_trials` = (quick, full) and a config file its own. `quick` with a config file is a UsageError."""
  if config_file is not None:
    if quick:
      raise app.UsageError(
          '--quick shrinks the embedded config; with --config, override its fields instead '
          '(e.g. --config.training.num_steps=300 --config.pruning.levels=2)'
      )
    config = copy.deepcopy(config_file)
  else:
    config = embedded_config(quick, embedded_trials[0] if quick else embedded_trials[1])
  if trials is not None:
    if trials < 1:
      raise app.UsageError(f'--trials={trials}: must be at least 1')
    config.trials = trials
  return config


@dataclasses.dataclass(frozen=True)
class ResetPoint:
  """One late-reset point of a sweep: a step, or an epoch (converted to steps by the config's data)."""

  value: float
  unit: str = 'step'  # 'step' | 'epoch'

  @property
  def label(self) -> str:
    """The point as the tables write it: '25' (steps) or '2' / '2.5' (epochs)."""
    return f'{self.value:g}'

  def __str__(self) -> str:
    return f'reset {self.unit} {self.label}'

  @property
  def directory(self) -> str:
    """The point's variant in the sweep: its name, and its lottery workdir's (WORKDIR/variants/<name>)."""
    return f'reset_{self.label}' if self.unit == 'step' else f'reset_epoch_{self.label}'

  def apply(self, config: ml_collections.ConfigDict) -> None:
    """Sets the config's late-reset point (the other unit's field to 0)."""
    if self.unit == 'step':
      config.pruning.rewind_step, config.pruning.rewind_epoch = int(self.value), 0.0
    else:
      config.pruning.rewind_step, config.pruning.rewind_epoch = 0, float(self.value)


def reset_points(
    steps: Sequence[str] | None, epochs: Sequence[str] | None, default_steps: Sequence[int] | None
) -> list[ResetPoint]:
  """The points of --reset_steps or --reset_epochs (not both; `default_steps` when neither is given, a
  UsageError when there is no default)."""
  if steps and epochs:
    raise app.UsageError('give --reset_steps or --reset_epochs, not both')
  try:
    if epochs:
      points = [ResetPoint(float(value), 'epoch') for value in epochs]
    elif steps:
      points = [ResetPoint(int(value)) for value in steps]
    elif default_steps is not None:
      points = [ResetPoint(int(value)) for value in default_steps]
    else:
      raise app.UsageError('with --config, give the late-reset points: --reset_steps=... or --reset_epochs=...')
  except ValueError as error:
    raise app.UsageError(f'--reset_steps must be integers and --reset_epochs numbers: {error}') from error
  if any(point.value < 0 for point in points) or len(set(points)) != len(points):
    raise app.UsageError(f'late-reset points must be distinct and non-negative: {[point.label for point in points]}')
  return sorted(points, key=lambda point: point.value)


def lottery_base(base: ml_collections.ConfigDict, levels: int) -> ml_collections.ConfigDict:
  """The base config of the reset points' sweep: `base` with `levels` pruning levels and no control branch."""
  config = base.copy_and_resolve_references()
  config.pruning.levels = levels
  config.branches = ()
  return config


def lottery_configs(
    base: ml_collections.ConfigDict, points: Sequence[ResetPoint], levels: int
) -> dict[ResetPoint, ml_collections.ConfigDict]:
  """The lottery config of each reset point: `lottery_base` with late resetting to the point, and the
  control branch `reinit` at the first point only (the random-reinitialization row of the late-reset
  table). The late-reset and stability sweeps build the same runs, so they can share a workdir (the
  number of levels does not change a run's results)."""
  configs = {}
  for index, point in enumerate(points):
    config = lottery_base(base, levels)
    point.apply(config)
    config.branches = ('reinit',) if index == 0 else ()
    configs[point] = config
  return configs


@dataclasses.dataclass(frozen=True)
class VariantRun:
  """One variant of a sweep, run: its lottery workdir and its records."""

  directory: str
  records: list[dict[str, Any]]


def run_sweep(
    command: str,
    base: ml_collections.ConfigDict,
    configs: Mapping[Key, ml_collections.ConfigDict],
    workdir: str,
    name: Callable[[Key], str] = str,
) -> dict[Key, VariantRun]:
  """Runs (or resumes) the configs as the named variants (`name(key)`) of one sweep of `base` in
  `workdir` (`lth_jax.search.sweep_named`): variants that share their dense training share one dense run
  per trial, in WORKDIR/dense/, and each variant is a lottery workdir, WORKDIR/variants/<name>. Returns
  each one's workdir and records by key. Check the configs first (`prepare_all`); a workdir holding a
  sweep of another base config, or a variant of the same name with another config, exits naming it
  before anything trains."""
  refuse_per_variant_layout(command, workdir)
  names = {key: name(key) for key in configs}
  try:
    results = search.sweep_named(base, {names[key]: config for key, config in configs.items()}, workdir)
  except errors.ConfigError as error:
    sys.exit(f'{command}: {error}')
  variants = {variant.label: variant for variant in results.variants}
  runs = {}
  for key, variant_name in names.items():
    directory = workdir_lib.variant_directory(workdir, variants[variant_name])
    runs[key] = VariantRun(directory, results_lib.read_records(os.path.join(directory, results_lib.RESULTS_FILE)))
  return runs


def refuse_per_variant_layout(command: str, workdir: str) -> None:
  """Exits when `workdir` holds runs of the layout before sweeps (a lottery workdir per variant in
  WORKDIR/<variant>/, no sweep.json): those runs would not be found, so the command says what to do."""
  if not os.path.isdir(workdir) or os.path.isfile(os.path.join(workdir, workdir_lib.SWEEP_FILE)):
    return
  old = sorted(
      entry for entry in os.listdir(workdir) if os.path.isfile(os.path.join(workdir, entry, results_lib.RESULTS_FILE))
  )
  if old:
    sys.exit(
        f'{command}: {workdir} holds runs of one lottery workdir per variant ({", ".join(old)}), the layout '
        'before sweeps; use a new --workdir (those runs stay readable there with python -m lth_jax.report)'
    )


def prepare_all(script: str, configs: Mapping[Key, ml_collections.ConfigDict]) -> dict[Key, experiment_lib.Experiment]:
  """Checks every config of a sweep (keyed by variant name or reset point) before anything trains: a bad
  field, or a dataset not prepared yet, exits naming the script, the key and the problem."""
  experiments = {}
  for key, config in configs.items():
    try:
      experiments[key] = experiment_lib.prepare(config)
    except (errors.ConfigError, tfds_source.DatasetNotPreparedError) as error:
      raise SystemExit(f'{script}: {key}: {error}') from error
  return experiments


def setting(spec: config_lib.RunSpec) -> str:
  """The model and dataset of a resolved config as the figures' titles name them ('LeNet-300-100 on
  MNIST-1D', `style.setting_name`)."""
  return style.setting_name(spec.model.name, spec.dataset.name, spec.model.hidden_sizes)


def trial_count(records: Sequence[dict[str, Any]]) -> int:
  """How many trials `records` hold."""
  return len({record['trial'] for record in records})


def fraction_at_level(records: Sequence[dict[str, Any]], level: int) -> float | None:
  """The ticket's fraction of weights remaining at `level` (mean over the records there), or None."""
  fractions = [r['fraction_remaining'] for r in records if r['level'] == level and r['branch'] == 'ticket']
  return sum(fractions) / len(fractions) if fractions else None


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically (temporary file in the same folder, then rename)."""
  with results_lib.atomic_open(path) as file:
    file.write(text)


def write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
  """Writes a CSV file atomically (cells must not hold commas)."""
  write_text(path, '\n'.join(','.join(str(cell) for cell in row) for row in [header, *rows]) + '\n')


def define_reset_sweep_flags(trials_help: str) -> None:
  """The flags late_reset_sweep and stability_sweep share (defined when a sweep runs as a program, so
  both modules can be imported in one process): --workdir, --config, --reset_steps / --reset_epochs,
  --mode, --trials, --quick and --dpi."""
  flags.DEFINE_string('workdir', None, 'Output folder.', required=True)
  config_flags.DEFINE_config_file('config', None, 'Optional config file (default: the embedded one).')
  flags.DEFINE_list(
      'reset_steps',
      None,
      'Late-reset steps to compare (embedded default 0,25,100,500; --quick: 0,25,100; with --config required, '
      'or --reset_epochs).',
  )
  flags.DEFINE_list('reset_epochs', None, 'Late-reset points in epochs instead of steps.')
  flags.DEFINE_enum(
      'mode',
      None,
      ['iterative', 'one_shot'],
      "Pruning mode: iterative, or one_shot (level L prunes the dense network to L levels' density in one go); "
      "default: the config's own (embedded: iterative).",
  )
  flags.DEFINE_integer('trials', None, trials_help)
  flags.DEFINE_bool('quick', False, 'A smoke-test-sized run of the embedded config.')
  flags.DEFINE_integer('dpi', style.DPI, 'Resolution of the PNG figures (dots per inch).')


def reset_sweep_start(
    config_file: ml_collections.ConfigDict | None,
    quick: bool,
    trials: int | None,
    mode: str | None,
    reset_steps: Sequence[str] | None,
    reset_epochs: Sequence[str] | None,
) -> tuple[ml_collections.ConfigDict, list[ResetPoint]]:
  """The base config of a late-reset sweep (`base_config`; 1 trial quick, 3 full on the embedded data;
  `mode` overrides pruning.mode) and its reset points (embedded default 0, 25, 100 (quick) or 0, 25,
  100, 500; with a config file they must be given)."""
  quiet_logging()
  base = base_config(config_file, quick, trials, embedded_trials=(1, 3))
  if mode is not None:
    base.pruning.mode = mode
  embedded_default = None if config_file is not None else ([0, 25, 100] if quick else [0, 25, 100, 500])
  return base, reset_points(reset_steps, reset_epochs, embedded_default)


def quiet_logging() -> None:
  """Keeps checkpointing chatter out of the progress lines unless --verbosity was given."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)

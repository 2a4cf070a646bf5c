"""The lottery-ticket search from the command line: trains the network of a config, prunes it level by
level, trains each level's ticket and controls, and records every run in a workdir.

Usage: python -m lth_jax.main --config=CONFIG_FILE[:VARIANT] --workdir=DIR [--config.FIELD=VALUE ...]

    python -m lth_jax.main --config=configs/default.py --workdir=/tmp/lth_default --config.pruning.levels=5

--config and --workdir are required. --config.FIELD=VALUE overrides any field of the config (every field
and its default is in lth_jax/config/schema.py); an unknown field, a value of the wrong type and a value
out of range are each refused in one line naming the field, before anything is trained.
--sweep=FIELD=VALUE,VALUE,... runs every combination of values as one sweep.

Writes into --workdir: results.jsonl (one JSON record per finished level, branch and trial; printed as
tables at the end), config.json (the config, checked on a re-run), checkpoints/ (rewind point, each
level's weights and mask, the periodic checkpoints of the run in progress) and tensorboard/ (event
files); a sweep writes each variant into DIR/variants/<variant>. Run the same command again to resume.
`python -m lth_jax.report --workdir=DIR` makes the plots.

On a TPU pod slice (or any multi-host cluster) run the same command on every host with
--distributed=yes (Cloud TPU: JAX finds the coordinator itself; elsewhere also pass
--coordinator_address, --num_processes and --process_id, or launch under SLURM / Open MPI, which
'auto' detects).

Exit status: 0 done; 1 a bad config, config file, workdir, dataset or checkpoint, or a workdir that
cannot be written (disk full, permissions, read-only, I/O error), with a one-line message naming it;
3 done, but a ticket diverged (non-finite loss or weights: its record says "diverged": true, and its
trial stopped there); 143 (128 + SIGTERM) stopped by SIGTERM after checkpointing the current step: run
the same command again to continue.
"""

import gc
import importlib.machinery
import os
import sys
import traceback
import types
from typing import Any

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from lth_jax.config import errors
from lth_jax.data import embedded
from lth_jax.data import tfds_source
from lth_jax import results
from lth_jax.search import lottery
from lth_jax.search import sweep_plan
from lth_jax.search import sweeps
from lth_jax.training import checkpoints
from lth_jax.training import parallel
from lth_jax.training import run_state

PREEMPTED_EXIT_STATUS = 143  # 128 + SIGTERM, what a process killed by SIGTERM reports
DIVERGED_EXIT_STATUS = 3  # the run finished, but a ticket diverged

_WORKDIR = flags.DEFINE_string(
    'workdir',
    None,
    'Required. Folder for the results, the config and the checkpoints; created if missing. Running the '
    'same command again in it resumes where it stopped.',
    required=True,
)
_CONFIG = config_flags.DEFINE_config_file(
    'config',
    None,
    'Required. The config file, PATH[:VARIANT] (an ml_collections file with get_config(), e.g. '
    'configs/default.py or configs/resnet50_imagenet.py:one_shot); --config.FIELD=VALUE overrides its fields.',
    lock_config=True,
)
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    'allow_config_change',
    False,
    'Continue in a workdir whose config.json holds a config with different results-affecting fields '
    '(the records already there are kept as they are).',
)
_DISTRIBUTED = flags.DEFINE_enum(
    'distributed',
    'auto',
    list(parallel.DISTRIBUTED_MODES),
    'Join the other hosts of a multi-host run with jax.distributed.initialize(): yes, no, or auto '
    '(when --coordinator_address is given or a SLURM / Open MPI launch of several tasks is detected).',
)
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0, for --distributed (not needed on Cloud TPU).'
)
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir',
    None,
    'Keep compiled XLA programs here so that a re-run (a resumed run, the next level sweep) starts '
    'without recompiling; default: xla/ under $LTH_JAX_CACHE or ~/.cache/lth_jax; "" turns it off.',
)
_SWEEP = flags.DEFINE_multi_string(
    'sweep',
    [],
    'An axis of a sweep, FIELD=VALUE,VALUE,... (e.g. pruning.rewind_step=0,100,500; repeat the flag for '
    'more axes): every combination of values is a variant, all run as one search in --workdir '
    '(see README, "Sweeps"). The config file can name axes too, in its sweep section.',
)
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes, for --distributed.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, "This process's index, for --distributed.")


def enable_compilation_cache(directory: str | None) -> str | None:
  """Turns on JAX's persistent compilation cache in `directory` (None: the default folder, '': off)
  for every program, however quick to compile. Returns the folder used."""
  if directory is None:
    directory = os.path.join(os.environ.get(embedded.CACHE_ENV_VAR) or embedded.DEFAULT_CACHE_DIR, 'xla')
  if not directory:
    return None
  directory = os.path.expanduser(directory)
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return directory


def _run(config: Any, workdir: str, sweep_flags: list[str], allow_config_change: bool) -> Any:
  """The lottery run of `config`, or the sweep its sweep section and the --sweep flags name."""
  axes = dict(sweep_plan.axes_from_config(config))
  axes.update(sweep_plan.parse_axis(text) for text in sweep_flags)
  if not axes:
    return lottery.run(config, workdir, allow_config_change=allow_config_change)
  if allow_config_change:
    raise errors.ConfigError('--allow_config_change: not for sweeps (each variant keeps its own config)')
  return sweeps.run(config, axes, workdir)


def main(argv: list[str]) -> None:
  """Runs the lottery experiment of --config in --workdir, as the process's last work (see
  `leave_to_exit`)."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  try:
    _main()
  finally:
    leave_to_exit()


def leave_to_exit() -> None:
  """Leaves what the run holds in memory to the process's exit as it is: every object alive now moves
  out of the garbage collector's reach (`gc.freeze`), so that the interpreter's exit does not search
  the run's modules, traced programs and arrays for reference cycles (its slowest part). The exit still
  runs its atexit handlers and frees what is not in a cycle; whatever must reach disk (records,
  checkpoints, event files) is written and closed before `main` returns."""
  gc.freeze()


def _main() -> None:
  """`main` without its exit."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # keep checkpointing chatter out of the progress lines
  parallel.initialize_distributed(
      _DISTRIBUTED.value, _COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value, _PROCESS_ID.value
  )
  enable_compilation_cache(_COMPILATION_CACHE_DIR.value)
  try:
    outcome = _run(_CONFIG.value, _WORKDIR.value, _SWEEP.value, _ALLOW_CONFIG_CHANGE.value)
  except (
      errors.ConfigError,
      tfds_source.DatasetNotPreparedError,
      checkpoints.CheckpointError,
      results.CorruptResultsError,
      results.WriteError,
  ) as error:
    sys.exit(f'lth_jax: {error}')
  except run_state.Preempted as error:
    print(f'lth_jax: {error}', file=sys.stderr, flush=True)
    sys.exit(PREEMPTED_EXIT_STATUS)
  diverged = [record for record in outcome.records if record['branch'] == 'ticket' and results.is_diverged(record)]
  if diverged:
    print(
        'lth_jax: '
        + ', '.join(f'trial {record["trial"]} level {record["level"]}' for record in diverged)
        + ': the ticket diverged (see the warnings above); exit status 3',
        file=sys.stderr,
        flush=True,
    )
    sys.exit(DIVERGED_EXIT_STATUS)


def _config_argument(argv: list[str]) -> str | None:
  """The value of --config in `argv` (`--config=PATH[:VARIANT]` or `--config PATH[:VARIANT]`)."""
  for index, argument in enumerate(argv[1:], start=1):
    if argument.startswith('--config='):
      return argument[len('--config=') :]
    if argument == '--config' and index + 1 < len(argv):
      return argv[index + 1]
  return None


def _where(error: BaseException, path: str) -> str:
  """'PATH, line N' of the deepest frame of `error` in the file `path` (or of a syntax error in it)."""
  if isinstance(error, SyntaxError) and error.filename and os.path.abspath(error.filename) == path:
    return f'{path}, line {error.lineno}'
  frames = [frame for frame in traceback.extract_tb(error.__traceback__) if os.path.abspath(frame.filename) == path]
  return f'{path}, line {frames[-1].lineno}' if frames else path


def check_config_file(argument: str) -> str | None:
  """Loads the config file of `--config=PATH[:VARIANT]` as ml_collections will; returns a one-line
  message when it does not exist, fails to import (naming the file and line), has no `get_config`,
  or its `get_config` rejects the variant or fails; None when it gives a config."""
  path, _, variant = argument.partition(':')
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isfile(path):
    return f'lth_jax: --config={argument}: no config file at {path}'
  try:
    # As ml_collections loads a config: any file name, read as Python source.
    loader = importlib.machinery.SourceFileLoader('_lth_jax_checked_config', path)
    module = types.ModuleType(loader.name)
    module.__file__ = path
    loader.exec_module(module)
  except BaseException as error:  # pylint: disable=broad-except  (whatever the file raises)
    if isinstance(error, (KeyboardInterrupt, SystemExit)):
      raise
    message = error.msg if isinstance(error, SyntaxError) else str(error)
    return f'lth_jax: --config={argument}: {_where(error, path)}: {type(error).__name__}: {message}'
  if not callable(getattr(module, 'get_config', None)):
    return f'lth_jax: --config={argument}: {path} defines no get_config() function'
  try:
    module.get_config(variant) if variant else module.get_config()
  except Exception as error:  # pylint: disable=broad-except
    if variant and isinstance(error, TypeError) and 'argument' in str(error):
      return f'lth_jax: --config={argument}: {path} has no variants (its get_config takes no argument)'
    return f'lth_jax: --config={argument}: {_where(error, path)}: {type(error).__name__}: {error}'
  return None


def unknown_field_message(error: LookupError | AttributeError, argv: list[str]) -> str:
  """The one-line message for a --config.FIELD override that names no field: ml_collections raises
  a KeyError for a misspelt group (`--config.trainng.num_steps`), an AttributeError holding one for a
  misspelt leaf (`--config.training.num_step`), each with its "Did you mean", and a KeyError or an
  IndexError for a path that goes on below a leaf (`--config.training.num_steps.x`)."""
  cause = error.args[0] if isinstance(error, AttributeError) and error.args else error
  detail = cause.args[0] if isinstance(cause, KeyError) and cause.args else str(cause)
  overrides = ' '.join(argument for argument in argv[1:] if argument.startswith('--config.'))
  return (
      f'lth_jax: unknown config field {" ".join(str(detail).split())} (in {overrides}; every field is '
      'listed in lth_jax/config/schema.py)'
  )


HELP_FLAGS = ('-h', '-?', '-help', '--help', '-helpshort', '--helpshort')


def exit_on_help(argv: list[str]) -> None:
  """For --help (or -h, -?, --helpshort): the command's docstring and its flags on stdout, and exit
  status 0 (absl's own --help exits with 1); for --helpfull, every module's flags too."""
  arguments = set(argv[1 : argv.index('--')] if '--' in argv else argv[1:])
  if arguments & {'-helpfull', '--helpfull'}:
    app.usage(writeto_stdout=True, exitcode=0)
  if arguments & set(HELP_FLAGS):
    app.usage(shorthelp=True, writeto_stdout=True)
    print('\nTry --helpfull to get a list of all flags.')
    sys.exit(0)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with --help exiting 0, and one-line messages instead of tracebacks for a
  --config file that is missing, fails to load or rejects its variant, for a --config.FIELD override
  that names no field of the config (in a group or a leaf), and for a flag value absl refuses."""
  exit_on_help(argv)
  argument = _config_argument(argv)
  if argument is not None:
    message = check_config_file(argument)
    if message is not None:
      sys.exit(message)
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:  # a value of the wrong type, a missing required flag: one line, no usage dump
    sys.exit(f'lth_jax: {error}')
  except (AttributeError, LookupError) as error:
    sys.exit(unknown_field_message(error, argv))


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=parse_flags)

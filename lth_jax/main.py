"""Command-line entry point.

    python -m lth_jax.main --config=configs/default.py --workdir=/tmp/lth_default \
        --config.pruning.levels=5

On a TPU pod slice (or any multi-host cluster) run the same command on every host with
--distributed=yes (Cloud TPU: JAX finds the coordinator itself; elsewhere also pass
--coordinator_address, --num_processes and --process_id, or launch under SLURM / Open MPI, which
'auto' detects).

Exit status: 0 done; 1 a bad config, workdir, dataset or checkpoint (with a message naming it);
143 (128 + SIGTERM) stopped by SIGTERM after checkpointing the current step: run the same command
again to continue.
"""

import os
import sys

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from lth_jax import checkpoints
from lth_jax import data
from lth_jax.data import embedded
from lth_jax import lottery
from lth_jax import parallel
from lth_jax import results
from lth_jax import validation

PREEMPTED_EXIT_STATUS = 143  # 128 + SIGTERM, what a process killed by SIGTERM reports

_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for results, checkpoints and logs.', required=True)
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to an ml_collections config file.',
                                          lock_config=True)
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    'allow_config_change', False,
    'Continue in a workdir whose config.json holds a config with different results-affecting fields '
    '(the records already there are kept as they are).')
_DISTRIBUTED = flags.DEFINE_enum(
    'distributed', 'auto', list(parallel.DISTRIBUTED_MODES),
    'Join the other hosts of a multi-host run with jax.distributed.initialize(): yes, no, or auto '
    '(when --coordinator_address is given or a SLURM / Open MPI launch of several tasks is detected).')
_COORDINATOR_ADDRESS = flags.DEFINE_string('coordinator_address', None,
                                           'host:port of process 0, for --distributed (not needed on Cloud TPU).')
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir', None,
    'Keep compiled XLA programs here so that a re-run (a resumed run, the next level sweep) starts '
    'without recompiling; default: xla/ under $LTH_JAX_CACHE or ~/.cache/lth_jax; "" turns it off.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes, for --distributed.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process\'s index, for --distributed.')


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


def main(argv: list[str]) -> None:
  """Runs the lottery experiment of --config in --workdir."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # keep checkpointing chatter out of the progress lines
  parallel.initialize_distributed(_DISTRIBUTED.value, _COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value,
                                  _PROCESS_ID.value)
  enable_compilation_cache(_COMPILATION_CACHE_DIR.value)
  try:
    lottery.run(_CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value)
  except (validation.ConfigError, data.DatasetNotPreparedError, checkpoints.CheckpointError,
          results.CorruptResultsError) as error:
    sys.exit(f'lth_jax: {error}')
  except lottery.Preempted as error:
    print(f'lth_jax: {error}', file=sys.stderr, flush=True)
    sys.exit(PREEMPTED_EXIT_STATUS)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a one-line message instead of a traceback for a --config.FIELD
  override that names no field of the config (ml_collections raises AttributeError there)."""
  try:
    return app.parse_flags_with_usage(argv)
  except AttributeError as error:
    cause = error.args[0] if error.args else error
    detail = cause.args[0] if isinstance(cause, KeyError) and cause.args else str(cause)
    overrides = ' '.join(argument for argument in argv[1:] if argument.startswith('--config.'))
    sys.exit(f'lth_jax: unknown config field {" ".join(str(detail).split())} (in {overrides}; every field is '
             'listed in lth_jax/config_schema.py)')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=parse_flags)

"""The workdir of a lottery run or a sweep: where each thing in it lies (every path), that it can be
written, one run at a time (a lock), and that a re-run's config agrees with the one its records came from
(`config.json`).

    WORKDIR/results.jsonl  config.json  .lock  tensorboard/
    WORKDIR/checkpoints/trial_T/rewind                      the rewind point
    WORKDIR/checkpoints/trial_T/level_L                     a level's ticket: final weights and mask
    WORKDIR/checkpoints/trial_T/snapshots/step_S            the dense run's weights at a step asked for
    WORKDIR/checkpoints/trial_T/running/level_L_BRANCH      periodic checkpoints of a run trained alone
    WORKDIR/checkpoints/running/level_L_...                 periodic checkpoints of a program of several runs
    SWEEP/sweep.json  SWEEP/dense/<key>/  SWEEP/variants/<label>/   a sweep's file and lottery workdirs
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from typing import Callable, Iterator, Sequence

try:
  import fcntl
except ImportError:  # not on POSIX: runs sharing a workdir are not detected
  fcntl = None  # type: ignore[assignment]

import jax
import ml_collections

from lth_jax import config as config_lib
from lth_jax.config import compatibility
from lth_jax.config import errors
from lth_jax.config import schema
from lth_jax import results as results_lib
from lth_jax.config.compatibility import CONFIG_FILE
from lth_jax.results import RESULTS_FILE
from lth_jax.search import sweep_plan
from lth_jax.training import checkpoints
from lth_jax.training.checkpoints import CHECKPOINTS_DIRECTORY
from lth_jax.training.run_state import Preempted

LOCK_FILE = '.lock'
TENSORBOARD_DIRECTORY = 'tensorboard'
RUNNING_DIRECTORY = 'running'  # periodic checkpoints of the programs in progress
SWEEP_FILE = 'sweep.json'
DENSE_DIRECTORY = 'dense'
VARIANTS_DIRECTORY = 'variants'


def tensorboard_directory(workdir: str) -> str:
  """Where the TensorBoard event files of a run (or a sweep) are written."""
  return os.path.join(workdir, TENSORBOARD_DIRECTORY)


def checkpoints_directory(workdir: str) -> str:
  """The folder of every checkpoint of a run."""
  return os.path.join(workdir, CHECKPOINTS_DIRECTORY)


def trial_directory(workdir: str, trial: int) -> str:
  """The folder of one trial's checkpoints."""
  return os.path.join(workdir, CHECKPOINTS_DIRECTORY, f'trial_{trial}')


def level_directory(workdir: str, trial: int, level: int) -> str:
  """Where a level's ticket (final weights and mask) is checkpointed."""
  return os.path.join(trial_directory(workdir, trial), f'level_{level}')


def rewind_directory(workdir: str, trial: int) -> str:
  """Where a trial's rewind point (its weights at `pruning.rewind_step`) is checkpointed."""
  return os.path.join(trial_directory(workdir, trial), 'rewind')


def snapshot_directory(workdir: str, trial: int, step: int) -> str:
  """Where the dense run of a trial keeps its weights at `step` when asked to (`lottery.run(keep_snapshots=)`)."""
  return os.path.join(trial_directory(workdir, trial), 'snapshots', f'step_{step}')


def running_folder(workdir: str, trial: int | None = None) -> str:
  """The folder of the programs in progress: of one trial's runs trained alone (`trial`), or of the programs
  of several runs (None)."""
  parent = checkpoints_directory(workdir) if trial is None else trial_directory(workdir, trial)
  return os.path.join(parent, RUNNING_DIRECTORY)


def member_key(variant: str, trial: int, branch: str) -> str:
  """The name of the (variant, trial, branch) run in a program's checkpoint: 't0-ticket', 'VARIANT/t0-ticket'."""
  return f'{variant}/t{trial}-{branch}' if variant else f't{trial}-{branch}'


def running_directory(workdir: str, level: int, runs: Sequence[tuple[int, str]]) -> str:
  """Where the periodic checkpoints of a program in progress are kept, for its (trial, branch) runs of
  `level`: the single-run folder `checkpoints/trial_T/running/level_L_BRANCH` for one run, else
  `checkpoints/running/level_L_t<first trial>-<first branch>_<count>_<digest of all the runs>`."""
  if len(runs) == 1:
    ((trial, branch),) = runs
    return os.path.join(running_folder(workdir, trial), f'level_{level}_{branch}')
  keys = [f't{trial}-{branch}' for trial, branch in runs]
  digest = hashlib.sha1(','.join(keys).encode()).hexdigest()[:8]
  return os.path.join(running_folder(workdir), f'level_{level}_{keys[0]}_{len(keys)}_{digest}')


def population_directory(workdir: str, level: int, runs: Sequence[tuple[str, int, str]]) -> str:
  """Where a population of the (variant, trial, branch) `runs` of `level` keeps its periodic checkpoints:
  `running_directory` for one search's runs, `checkpoints/running/level_L_<count>_<digest>` for a
  population of a sweep's variants."""
  if not any(variant for variant, _, _ in runs):
    return running_directory(workdir, level, [(trial, branch) for _, trial, branch in runs])
  keys = [member_key(*run) for run in runs]
  digest = hashlib.sha1(','.join(keys).encode()).hexdigest()[:8]
  return os.path.join(running_folder(workdir), f'level_{level}_{len(keys)}_{digest}')


def variant_directory(workdir: str, variant: sweep_plan.Variant) -> str:
  """The lottery workdir of one variant of the sweep in `workdir`."""
  return os.path.join(workdir, VARIANTS_DIRECTORY, variant.label)


def dense_directory(workdir: str, key: str) -> str:
  """The lottery workdir of the dense run that the sweep's variants of `sweep_plan.dense_key` `key` share."""
  return os.path.join(workdir, DENSE_DIRECTORY, key)


def log_on_process_zero(message: str) -> None:
  """Prints `message` on process 0 (the one that writes the workdir)."""
  if jax.process_index() == 0:
    print(message, flush=True)


def check_writable(workdir: str) -> None:
  """Creates `workdir` if needed; a WorkdirError when it is a file or cannot be written."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise compatibility.WorkdirError(f'workdir {workdir}: exists and is not a folder')
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.lth_jax-write-test-{os.getpid()}-{jax.process_index()}')
    with open(probe, 'w') as file:
      file.write('ok')
    os.remove(probe)
  except OSError as error:
    raise compatibility.WorkdirError(f'workdir {workdir}: cannot create or write there ({error})') from error


@contextlib.contextmanager
def writes_named(workdir: str) -> Iterator[None]:
  """Turns a failure to write into `workdir` from anywhere below (orbax, tensorstore, tensorboardX, the
  OS) into a `results.WriteError`-style one-line error naming the path (`results.as_write_error`); a stop
  request, a config error and a damaged checkpoint pass as they are, as does any other error."""
  try:
    yield
  except (Preempted, errors.ConfigError, checkpoints.CheckpointError):
    raise
  except Exception as error:  # pylint: disable=broad-except
    written = results_lib.as_write_error(error, workdir)
    if written is None:
      raise
    raise written from error


@contextlib.contextmanager
def workdir_lock(workdir: str, log: Callable[[str], None] = log_on_process_zero) -> Iterator[None]:
  """Holds an exclusive lock on WORKDIR/.lock (process 0) while the block runs: a second run started
  on the same workdir fails at once with a WorkdirError naming the holder, instead of both writing
  checkpoints and records over each other. Released when the block ends or the process dies."""
  if jax.process_index() != 0 or fcntl is None:
    yield
    return
  path = os.path.join(workdir, LOCK_FILE)
  with open(path, 'a+') as file:
    try:
      fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      file.seek(0)
      holder = file.read().strip() or 'another process'
      raise compatibility.WorkdirError(
          f'workdir {workdir}: in use by another lth_jax run ({holder}); let it finish, stop it, or use '
          'another --workdir'
      ) from None
    except OSError as error:  # a file system without locks
      log(f'lth_jax: warning: cannot lock {path} ({error}); make sure no other run uses this workdir')
      yield
      return
    try:
      file.seek(0)
      file.truncate()
      file.write(f'pid {os.getpid()} on {socket.gethostname()}, since {time.strftime("%Y-%m-%d %H:%M:%S")}\n')
      file.flush()
      yield
    finally:
      fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def holds_runs(workdir: str) -> bool:
  """Whether `workdir` holds anything of a run: a record in results.jsonl or a checkpoint."""
  results_path = os.path.join(workdir, RESULTS_FILE)
  if os.path.exists(results_path) and os.path.getsize(results_path) > 0:
    return True
  return any(files for _, _, files in os.walk(checkpoints_directory(workdir)))


def recorded_packing(
    config: ml_collections.ConfigDict, workdir: str, log: Callable[[str], None]
) -> ml_collections.ConfigDict:
  """`config`, or with `parallel.members_per_program=0` (auto) a copy set to the cap the runs in `workdir`
  were recorded with, so that a resumed workdir trains its new runs in the mode of its old ones: the
  value in WORKDIR/config.json, or 1 (one run at a time) when that file predates the field. Says so."""
  path = os.path.join(workdir, CONFIG_FILE)
  if config.parallel.members_per_program != 0 or not os.path.isfile(path) or not holds_runs(workdir):
    return config
  try:
    with open(path) as file:
      parallel = json.load(file).get('parallel', {})
  except (OSError, ValueError):
    return config  # check_config_file names the problem
  recorded = parallel.get('members_per_program', compatibility.FORMER_VALUES['parallel.members_per_program'])
  if recorded == 0:
    return config
  config = config.copy_and_resolve_references()
  config.parallel.members_per_program = recorded
  why = (
      'before parallel.members_per_program existed: one run at a time' if 'members_per_program' not in parallel else ''
  )
  log(
      f'lth_jax: {workdir} was recorded with parallel.members_per_program={recorded}'
      + (f' ({why})' if why else '')
      + '; continuing in that mode'
  )
  return config


def check_workdir_config(
    config: ml_collections.ConfigDict,
    resolved: config_lib.RunSpec,
    workdir: str,
    log: Callable[[str], None] = log_on_process_zero,
) -> None:
  """A ConfigError when `workdir` holds runs of a config whose results would differ from `config`'s
  (`resolved`: the same config as `prepare` resolved it), as `run` checks before it continues them."""
  check_config_file(config, workdir, False, log, resolved)


def check_config_file(
    config: ml_collections.ConfigDict,
    workdir: str,
    allow_config_change: bool,
    log: Callable[[str], None],
    resolved: config_lib.RunSpec | None = None,
) -> None:
  """Compares `config` with the one in WORKDIR/config.json (refusing a change that would make the
  recorded runs disagree with the config, unless allowed) and writes it there (process 0).

  With `resolved` (the config with the global batch and the lengths in steps worked out for these
  devices and this dataset), those values are recorded under 'resolved' and compared too: the same
  `parallel.batch_per_device` on another number of devices is another global batch.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path) and holds_runs(workdir) and not allow_config_change:
    raise errors.ConfigError(
        f'{workdir} holds runs but no {CONFIG_FILE}, so their config cannot be checked against this one; '
        'put it back, use another --workdir, or --allow_config_change to record this config as theirs'
    )
  new = compatibility.config_to_json(config)
  if resolved is not None:
    new['resolved'] = compatibility.config_to_json(ml_collections.ConfigDict(resolved.resolved_fields()))
  if os.path.exists(path):
    try:
      with open(path) as file:
        old = json.load(file)
    except (OSError, ValueError) as error:
      raise errors.ConfigError(
          f'{path}: cannot read the config of the runs in this workdir ({error}); ' 'repair or delete it'
      ) from error
    defaults = compatibility.config_to_json(schema.base_config())
    changing, neutral = compatibility.config_differences(old, new, defaults)
    if changing and not holds_runs(workdir):
      log(f'lth_jax: {path} is from a run that recorded nothing; replacing it with this config')
      changing, neutral = [], []
    if changing and not allow_config_change:
      raise errors.ConfigError(
          f'{workdir} holds runs of a different config ({path}); fields that differ (old -> new):\n  '
          + '\n  '.join(changing)
          + '\nUse the same config, another --workdir, or --allow_config_change to '
          'continue anyway (records already there are kept as they are).'
      )
    if changing:
      log(f'lth_jax: warning: config changed from {path} (allowed): ' + '; '.join(changing))
    if neutral:
      log('lth_jax: config changes that do not affect results: ' + '; '.join(neutral))
    if old == new:
      return
  if jax.process_index() == 0:
    with results_lib.atomic_open(path) as file:
      file.write(results_lib.strict_json(new, indent=2, sort_keys=True) + '\n')

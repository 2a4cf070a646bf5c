"""Orbax checkpoints: rewind snapshots, each level's final weights and mask, and the periodic
checkpoints of the training run in progress.

Orbax writes each checkpoint into a temporary folder and renames it when complete, so a checkpoint
folder either holds a whole tree or does not exist. A checkpoint can still be damaged afterwards (a
disk error, a truncated copy); `RunCheckpoints.restore_latest` then falls back to the previous one.
Orbax's compressed chunks carry no checksum of their own, so every checkpoint also records a CRC-32
of each array (`tree_checksums`), checked on restore: a flipped bit is an error, not a changed weight.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import traceback
import zlib
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from lth_jax import results as results_lib
from lth_jax.training import parallel

_logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
  """A checkpoint the run needs is missing or cannot be restored."""


CHECKSUM_FILE = 'lth_jax_checksums.json'
# A workdir's folder of checkpoints; its layout is `lth_jax.search.workdir`'s (tickets, below search, reads it too).
CHECKPOINTS_DIRECTORY = 'checkpoints'


class _QuietStorageFailures(logging.Filter):
  """Drops orbax's log records (and their tracebacks) of a storage failure (a full disk, a read-only
  file system, ...) in its background threads: the failure reaches the caller of the save, which
  reports it in one line (`results.as_write_error`). Orbax's other records pass."""

  def filter(self, record: logging.LogRecord) -> bool:
    if 'orbax' not in record.pathname:
      return True
    error = record.exc_info[1] if record.exc_info and record.exc_info[1] else OSError(record.getMessage())
    return results_lib.as_write_error(error, '') is None


class _QuietClosedLoopCallbacks:
  """A `sys.unraisablehook` that drops the 'Event loop is closed' errors of tensorstore's callbacks
  into an orbax event loop that a failed save already closed (nobody waits for them), and hands
  every other unraisable error to the hook it replaced."""

  def __init__(self, previous: Callable[[Any], Any]):
    self.previous = previous

  def __call__(self, unraisable: Any) -> None:
    error, frames = unraisable.exc_value, unraisable.exc_traceback
    names = [frame.name for frame in traceback.extract_tb(frames)] if frames is not None else []
    if isinstance(error, RuntimeError) and str(error) == 'Event loop is closed' and 'call_soon_threadsafe' in names:
      _logger.debug('dropped a callback into a closed event loop (a failed asynchronous write)')
      return
    self.previous(unraisable)


def quiet_background_failures() -> None:
  """Keeps the storage failures of orbax's background threads to the caller's one-line error: no
  logged traceback from orbax, none from tensorstore's callbacks into closed loops. Idempotent."""
  absl_logger = logging.getLogger('absl')
  if not any(isinstance(existing, _QuietStorageFailures) for existing in absl_logger.filters):
    absl_logger.addFilter(_QuietStorageFailures())
  if not isinstance(sys.unraisablehook, _QuietClosedLoopCallbacks):
    sys.unraisablehook = _QuietClosedLoopCallbacks(sys.unraisablehook)


def leaf_checksum(leaf: Any) -> str:
  """A leaf's dtype, shape and CRC-32 of its bytes: 'float32[300, 100]:1a2b3c4d' (a device leaf is
  fetched first)."""
  array = np.ascontiguousarray(parallel.to_host(leaf))
  checksum = zlib.crc32(array.reshape(-1).view(np.uint8))  # type: ignore[arg-type]  # an ndarray is a buffer
  return f'{array.dtype.str}{list(array.shape)}:{checksum:08x}'


def tree_checksums(tree: Any) -> dict[str, str]:
  """Each leaf's dtype, shape and CRC-32 of its bytes, keyed by its path in the tree."""
  return {
      jax.tree_util.keystr(path): leaf_checksum(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def verify_checksums(tree: Any, expected: dict[str, str], where: str) -> None:
  """A CheckpointError naming the leaves of `tree` whose checksums differ from `expected`."""
  actual = tree_checksums(tree)
  differing = sorted(name for name in set(expected) | set(actual) if expected.get(name) != actual.get(name))
  if differing:
    raise CheckpointError(
        f'{where}: {len(differing)} array(s) differ from what was saved (checksum mismatch: '
        f'{", ".join(differing[:5])}{", ..." if len(differing) > 5 else ""}); the '
        'checkpoint is damaged'
    )


def save_tree(directory: str, tree: Any) -> None:
  """Saves a tree of host arrays to `directory` (replacing it), waiting until the write is committed,
  with the checksums of its arrays."""
  directory = os.path.abspath(directory)
  quiet_background_failures()
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(directory, tree, force=True)
  checkpointer.wait_until_finished()
  checkpointer.close()
  if jax.process_index() == 0:
    with results_lib.atomic_open(os.path.join(directory, CHECKSUM_FILE)) as file:
      json.dump(tree_checksums(tree), file)


def restore_tree(directory: str, like: Any | None = None) -> Any:
  """Restores the tree saved in `directory` (as numpy arrays shaped like `like`, when given) and
  checks it against the saved checksums (a CheckpointError when it differs)."""
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'no checkpoint at {directory}')
  checkpointer = ocp.StandardCheckpointer()
  try:
    tree = checkpointer.restore(directory, like) if like is not None else checkpointer.restore(directory)
  finally:
    checkpointer.close()
  checksum_path = os.path.join(directory, CHECKSUM_FILE)
  if os.path.exists(checksum_path):  # absent in checkpoints written before checksums were kept
    with open(checksum_path) as file:
      verify_checksums(tree, json.load(file), directory)
  return tree


def remove(directory: str) -> None:
  """Deletes a checkpoint folder (on process 0, the one that writes shared files), if it exists."""
  if jax.process_index() == 0 and os.path.isdir(directory):
    shutil.rmtree(directory)


class RunCheckpoints:
  """The periodic checkpoints of one training run: an orbax `CheckpointManager` over `directory`,
  one step folder per checkpoint (`directory/<step>/{arrays,metadata}`), the newest `max_to_keep` kept.

  Each checkpoint is an array tree (saved with `StandardSave`; device arrays keep their shardings,
  every process takes part) and a JSON metadata dict. Saves are asynchronous: the arrays are copied to
  the host before `save` returns and written in the background; `wait` or `close` waits for them.
  Every process must make the same calls (orbax synchronizes them).
  """

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self.max_to_keep = max_to_keep
    self._manager: ocp.CheckpointManager | None = None

  def _open(self, create: bool) -> ocp.CheckpointManager | None:
    if self._manager is None and (create or os.path.isdir(self.directory)):
      quiet_background_failures()
      options = ocp.CheckpointManagerOptions(
          max_to_keep=self.max_to_keep,
          create=True,
          cleanup_tmp_directories=True,
          # Do not read every step's metadata when opening: a damaged step must not stop the others.
          lightweight_initialize=True,
      )
      self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=('arrays', 'metadata'))
    return self._manager

  def _opened(self) -> ocp.CheckpointManager:
    """The manager, created (with its folder) if need be."""
    manager = self._open(create=True)
    assert manager is not None  # create=True always opens one
    return manager

  def steps(self) -> list[int]:
    """The steps checkpointed (complete ones: orbax ignores unfinished temporary folders)."""
    manager = self._open(create=False)
    return sorted(manager.all_steps()) if manager is not None else []

  def save(self, step: int, arrays: Any, metadata: dict[str, Any]) -> None:
    """Checkpoints `arrays` and `metadata` as `step` (replacing a damaged checkpoint of that step)."""
    manager = self._opened()
    if step in manager.all_steps():
      manager.delete(step)
    metadata = {**metadata, 'checksums': tree_checksums(arrays)}
    manager.save(
        step,
        args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays), metadata=ocp.args.JsonSave(metadata)),
        force=True,
    )

  def restore_latest(self, arrays_like: Callable[[dict[str, Any]], Any]) -> tuple[Any, dict[str, Any]] | None:
    """(arrays, metadata) of the newest checkpoint that restores, or None when there is none.

    `arrays_like(metadata)` gives the target tree (shapes, dtypes, shardings) for a checkpoint's
    arrays. A checkpoint that fails to restore (damaged, partial, or of another shape) is skipped with
    a warning naming it, and deleted, so that the run can write that step again.
    """
    steps = self.steps()
    if not steps:
      return None
    manager = self._opened()
    damaged = []
    restored = None
    for step in reversed(steps):
      path = os.path.join(self.directory, str(step))
      try:
        metadata = manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))['metadata']
        if not isinstance(metadata, dict) or metadata.get('step') != step:
          raise ValueError(f'its metadata names step {metadata.get("step") if isinstance(metadata, dict) else None}')
        arrays = manager.restore(step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(arrays_like(metadata))))[
            'arrays'
        ]
        if 'checksums' in metadata:
          verify_checksums(arrays, metadata.pop('checksums'), path)
      except Exception as error:  # pylint: disable=broad-except  (orbax and tensorstore raise many types)
        older = [s for s in steps if s < step]
        _logger.warning(
            'checkpoint %s cannot be restored (%s: %s); %s',
            path,
            type(error).__name__,
            str(error).splitlines()[0][:300] if str(error) else '',
            f'falling back to step {older[-1]}' if older else 'no older checkpoint: starting the run over',
        )
        damaged.append(step)
        continue
      restored = arrays, metadata
      break
    for step in damaged:
      manager.delete(step)
    return restored

  def wait(self) -> None:
    """Waits until every save has been written."""
    if self._manager is not None:
      self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    if self._manager is not None:
      self._manager.wait_until_finished()
      self._manager.close()
      self._manager = None

  def remove(self) -> None:
    """Closes and deletes every checkpoint of this run (the run is finished)."""
    self.close()
    remove(self.directory)

  def __enter__(self) -> 'RunCheckpoints':
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()

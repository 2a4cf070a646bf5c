"""Checkpoints: damage that orbax restores without complaint is caught by checksums; a full disk in a
background save is one error for the caller, with no traceback logged by orbax's threads."""

import asyncio
import gc
import logging
import os
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from lth_jax import results as results_lib
from lth_jax.training import checkpoints
from tests import helpers


def _tree(offset):
  return {
      'params': {'kernel': np.arange(12, dtype=np.float32).reshape(3, 4) + offset},
      'mask': {'kernel': np.arange(12).reshape(3, 4) % 2 == 0},
  }


def test_checksums_name_the_leaf_and_see_dtype_shape_and_bytes():
  sums = checkpoints.tree_checksums(_tree(0.0))
  assert set(sums) == {"['mask']['kernel']", "['params']['kernel']"}
  assert sums["['params']['kernel']"].startswith('<f4[3, 4]:')
  assert checkpoints.tree_checksums(_tree(0.0)) == sums
  changed = _tree(0.0)
  changed['params']['kernel'][1, 2] = np.nextafter(changed['params']['kernel'][1, 2], np.float32(100))
  assert checkpoints.tree_checksums(changed)["['params']['kernel']"] != sums["['params']['kernel']"]
  with pytest.raises(checkpoints.CheckpointError, match=r"where: 1 array\(s\) differ .*\['params'\]\['kernel'\]"):
    checkpoints.verify_checksums(changed, sums, 'where')


def test_a_saved_tree_whose_arrays_changed_is_refused(tmp_path):
  first, second = str(tmp_path / 'first'), str(tmp_path / 'second')
  checkpoints.save_tree(first, _tree(0.0))
  checkpoints.save_tree(second, _tree(5.0))
  restored = checkpoints.restore_tree(first, _tree(0.0))
  np.testing.assert_array_equal(restored['params']['kernel'], _tree(0.0)['params']['kernel'])
  helpers.swap_checkpoint_arrays(second, first)
  with pytest.raises(checkpoints.CheckpointError, match=f'{first}: 1 array.*checksum mismatch'):
    checkpoints.restore_tree(first, _tree(0.0))
  os.remove(os.path.join(first, checkpoints.CHECKSUM_FILE))  # as written before checksums were kept
  assert checkpoints.restore_tree(first, _tree(0.0))['params']['kernel'][0, 0] == 5.0


def test_a_periodic_checkpoint_whose_arrays_changed_falls_back_to_the_previous_one(tmp_path, caplog):
  directory = str(tmp_path / 'running')
  with checkpoints.RunCheckpoints(directory) as running:
    running.save(10, _tree(0.0), {'step': 10})
    running.save(20, _tree(5.0), {'step': 20})
  helpers.swap_checkpoint_arrays(os.path.join(directory, '10', 'arrays'), os.path.join(directory, '20', 'arrays'))
  with caplog.at_level(logging.WARNING), checkpoints.RunCheckpoints(directory) as running:
    arrays, metadata = running.restore_latest(lambda metadata: _tree(0.0))
  assert metadata == {'step': 10}
  np.testing.assert_array_equal(arrays['params']['kernel'], _tree(0.0)['params']['kernel'])
  assert 'checksum mismatch' in caplog.text and 'falling back to step 10' in caplog.text


async def _no_space_left(self, value, tspec, ts_context):
  """NumpyHandler's write of one array, on a full disk (what tensorstore raises there)."""
  del self, value, tspec, ts_context
  raise ValueError(
      'RESOURCE_EXHAUSTED: Error writing local file "/full/d/0": Failed to write 512 bytes: '
      "No space left on device [os_error_code='28']"
  )


def test_a_full_disk_in_a_background_save_is_one_error_and_no_logged_traceback(tmp_path, monkeypatch, capfd, caplog):
  monkeypatch.setattr(ocp.type_handlers.NumpyHandler, '_open_and_write', _no_space_left)
  directory = str(tmp_path / 'running')
  with caplog.at_level(logging.INFO), pytest.raises(Exception) as raised:
    with checkpoints.RunCheckpoints(directory) as running:
      running.save(10, _tree(0.0), {'step': 10})
      running.wait()
  message = str(results_lib.as_write_error(raised.value, directory))
  assert 'No space left on device. Nothing already recorded is lost' in message
  captured = capfd.readouterr()
  assert 'Traceback' not in captured.err + captured.out + caplog.text
  assert 'No space left' not in captured.err + caplog.text  # the caller's one line says it


def test_callbacks_into_a_closed_event_loop_are_dropped_and_other_unraisable_errors_pass(monkeypatch):
  seen = []
  monkeypatch.setattr(sys, 'unraisablehook', seen.append)
  checkpoints.quiet_background_failures()
  loop = asyncio.new_event_loop()
  loop.close()

  class LateCallback:

    def __init__(self, callback):
      self.callback = callback

    def __del__(self):
      self.callback()

  LateCallback(lambda: loop.call_soon_threadsafe(print))  # tensorstore's callback after orbax's loop closed
  gc.collect()
  assert seen == []
  LateCallback(lambda: 1 / 0)
  gc.collect()
  assert [type(unraisable.exc_value) for unraisable in seen] == [ZeroDivisionError]

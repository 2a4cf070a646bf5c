"""Checkpoint checksums: damage that orbax restores without complaint is caught."""

import logging
import os

import numpy as np
import pytest

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

"""A lottery run writes real TensorBoard event files: read them back record by record."""

import glob
import os
import struct

from tensorboardX.proto import event_pb2

from lth_jax.search import lottery
from tests import helpers


def read_scalars(path):
  """{tag: [(step, value), ...]} from one event file (TFRecord framing: length, crc, data, crc)."""
  scalars = {}
  with open(path, 'rb') as file:
    while header := file.read(12):
      (length,) = struct.unpack('<Q', header[:8])
      event = event_pb2.Event.FromString(file.read(length))
      file.read(4)
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return scalars


def test_run_writes_scalar_event_files(tmp_path):
  config = helpers.tiny_config(pruning__levels=1, branches=())
  lottery.run(config, str(tmp_path), log=lambda message: None)
  run_files = glob.glob(os.path.join(tmp_path, 'tensorboard', 'trial_0', 'level_1_ticket', 'events.out.*'))
  assert len(run_files) == 1
  scalars = read_scalars(run_files[0])
  steps = [step for step, _ in scalars['test_accuracy']]
  assert steps == [20, 40, 60]  # eval_every=20; level 1 trains from the rewind step 5 to 60
  assert all(0.0 <= value <= 1.0 for _, value in scalars['test_accuracy'])
  level_files = glob.glob(os.path.join(tmp_path, 'tensorboard', 'trial_0', 'levels*', 'events.out.*'))
  assert level_files, os.listdir(os.path.join(tmp_path, 'tensorboard', 'trial_0'))
  assert any(read_scalars(path) for path in level_files)


def test_tensorboard_can_be_switched_off(tmp_path):
  config = helpers.tiny_config(pruning__levels=1, branches=())
  config.checkpointing.tensorboard = False
  lottery.run(config, str(tmp_path), log=lambda message: None)
  assert not os.path.exists(os.path.join(tmp_path, 'tensorboard'))

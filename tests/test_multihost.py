"""Two processes joined by jax.distributed on CPU run one lottery: one set of results, written once,
equal to a single process driving the same number of devices — with the data in memory, and streamed
with each host reading only its half of every batch."""

import json
import os
import socket
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from lth_jax.search import lottery
from tests import helpers
from tests import multihost_driver

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPARED = ('trial', 'level', 'branch', 'fraction_remaining', 'kept_weights', 'nonzero_weights', 'steps')


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]


def _run_two_processes(workdir, *extra):
  """Runs the driver as two processes joined by jax.distributed; returns their stdout."""
  port = _free_port()
  environment = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=1')
  processes = [
      subprocess.Popen(
          [sys.executable, '-m', 'tests.multihost_driver', str(index), '2', str(port), str(workdir), *extra],
          cwd=REPO,
          env=environment,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for index in range(2)
  ]
  outputs = [process.communicate(timeout=600) for process in processes]
  for process, (stdout, stderr) in zip(processes, outputs):
    if process.returncode != 0 and 'gloo' in stderr.lower() and 'not' in stderr.lower():
      pytest.skip(f'this jaxlib has no CPU collectives: {stderr[-300:]}')
    assert process.returncode == 0, stderr[-3000:]
  return [stdout for stdout, _ in outputs]


def _assert_same_records(records, single_records):
  single = {(r['level'], r['branch']): r for r in single_records}
  for record in records:
    reference = single[(record['level'], record['branch'])]
    assert {field: record[field] for field in COMPARED} == {field: reference[field] for field in COMPARED}
    assert record['test_accuracy'] == pytest.approx(reference['test_accuracy'], abs=1e-6)
    assert record['test_loss'] == pytest.approx(reference['test_loss'], rel=1e-5)


@pytest.mark.slow
def test_two_processes_write_one_set_of_results_equal_to_one_process(tmp_path):
  workdir = tmp_path / 'two_processes'
  outputs = _run_two_processes(workdir)
  assert 'process 0 of 2 finished with 3 records' in outputs[0]
  assert 'process 1 of 2 finished with 3 records' in outputs[1]
  # Only process 0 printed the progress and the tables, and wrote each record once.
  assert 'test_accuracy against fraction' in outputs[0] and 'test_accuracy against' not in outputs[1]
  records = [json.loads(line) for line in open(workdir / 'results.jsonl')]
  assert sorted((r['level'], r['branch']) for r in records) == [(0, 'ticket'), (1, 'reinit'), (1, 'ticket')]
  assert (workdir / 'config.json').exists()

  # The same run on one process driving 2 devices (of the 8 the test session simulates).
  config = helpers.tiny_config(pruning__levels=1, branches=('reinit',))
  config.checkpointing.every_steps = 20
  config.parallel.num_devices = 2
  _assert_same_records(records, lottery.run(config, str(tmp_path / 'one'), log=lambda m: None).records)


def _streamed_records(workdir, mode):
  """The records two processes write streaming in `mode` (each reading half of every batch)."""
  outputs = _run_two_processes(workdir, mode)
  assert 'process 1 of 2 finished with 3 records' in outputs[1]
  return [json.loads(line) for line in open(workdir / 'results.jsonl')]


@pytest.mark.slow
def test_two_hosts_each_streaming_half_of_every_batch_equal_one_process(tmp_path):
  records = _streamed_records(tmp_path / 'two_processes', 'streaming')
  assert sorted((r['level'], r['branch']) for r in records) == [(0, 'ticket'), (1, 'reinit'), (1, 'ticket')]
  config = multihost_driver.streaming_config()
  config.parallel.num_devices = 2
  with tfds.testing.mock_data(num_examples=64):
    single_records = lottery.run(config, str(tmp_path / 'one'), log=lambda m: None).records
  _assert_same_records(records, single_records)


@pytest.mark.slow
def test_two_hosts_streaming_a_source_of_your_own_equal_one_process(tmp_path):
  records = _streamed_records(tmp_path / 'two_processes', 'own_stream')
  _assert_same_records(records, multihost_driver.own_stream_run(str(tmp_path / 'one'), num_devices=2).records)

"""One process of a multi-process lottery run on CPU, for test_multihost.py.

    python -m tests.multihost_driver PROCESS_ID NUM_PROCESSES PORT WORKDIR [streaming | own_stream]

Joins the other processes over loopback with `parallel.initialize_distributed` (as `lth_jax.main
--distributed=yes` does; gloo collectives, one CPU device per process), then runs a tiny config in
WORKDIR exactly as a pod host would: the in-memory digits config, or with `streaming` a cifar10 config
streamed from TFDS mock data, where each process reads only its half of every batch; with `own_stream`,
a module of your own on a source of your own streamed the same way (`data.stream_source`).
"""

import sys

import jax
import tensorflow_datasets as tfds

from lth_jax.training import parallel


def streaming_config():
  """Tiny streamed cifar10 config (each host reads its slice of every batch)."""
  from tests import helpers

  config = helpers.tiny_streaming_config(branches=('reinit',))
  config.checkpointing.every_steps = 4
  return config


def own_stream_run(workdir: str, num_devices: int = 0):
  """A module and a streamed source of your own (tests/test_own_model.py's), one level with reinit."""
  from lth_jax import data
  from lth_jax.search import lottery
  from tests import test_own_model

  tokens = test_own_model._token_data()
  source = data.stream_source(
      test_own_model._token_examples(tokens, 'train'),
      test_own_model._token_examples(tokens, 'test'),
      num_classes=3,
      input_key='tokens',
  )
  config = test_own_model._config(pruning__levels=1)
  config.parallel.num_devices = num_devices
  return lottery.run(config, workdir, lambda line: None, model=test_own_model.TokenMixer(), dataset=source)


def main() -> None:
  process_id, num_processes, port, workdir = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
  streaming, own_stream = sys.argv[5:] == ['streaming'], sys.argv[5:] == ['own_stream']
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  parallel.initialize_distributed('yes', f'127.0.0.1:{port}', num_processes, process_id)
  from lth_jax.search import lottery
  from tests import helpers

  if own_stream:
    results = own_stream_run(workdir)
  elif streaming:
    with tfds.testing.mock_data(num_examples=64):
      results = lottery.run(streaming_config(), workdir)
  else:
    config = helpers.tiny_config(pruning__levels=1, branches=('reinit',))
    config.checkpointing.every_steps = 20
    results = lottery.run(config, workdir)
  print(
      f'process {jax.process_index()} of {jax.process_count()} finished with {len(results.records)} records', flush=True
  )


if __name__ == '__main__':
  main()

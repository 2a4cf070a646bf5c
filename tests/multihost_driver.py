"""One process of a multi-process lottery run on CPU, for test_multihost.py.

    python -m tests.multihost_driver PROCESS_ID NUM_PROCESSES PORT WORKDIR

Joins `jax.distributed` over loopback (gloo collectives: one CPU device per process), then runs the
tiny test config in WORKDIR exactly as a pod host would.
"""

import sys

import jax


def main() -> None:
  process_id, num_processes, port, workdir = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=num_processes,
                             process_id=process_id)
  from lth_jax import lottery
  from tests import helpers

  config = helpers.tiny_config(pruning__levels=1, branches=('reinit',))
  config.checkpointing.every_steps = 20
  results = lottery.run(config, workdir)
  print(f'process {jax.process_index()} of {jax.process_count()} finished with {len(results.records)} records',
        flush=True)


if __name__ == '__main__':
  main()

"""Vmapped population vs sequential runs: examples/s of K members trained by one `jax.vmap`-ed step
against the same K members trained one after the other (the same steps, measured in one process).

    python -m experiments.benchmarks.population [--quick] [--members=1,2,4,8] [--batch_size=N] [--steps=N]

The members are LeNet-300-100s on MNIST-1D-shaped random data.

Prints one line per K: `population K=4 vmapped_examples_per_s=... sequential_examples_per_s=... ratio=...`.
"""

from __future__ import annotations

import time

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np

from lth_jax import data as data_lib
from lth_jax import masks as masks_lib
from lth_jax import models as models_lib
from lth_jax import optim
from lth_jax import parallel
from lth_jax import train as train_lib
from experiments import common

_QUICK = flags.DEFINE_bool('quick', False, 'Few steps: a smoke test of the benchmark itself.')
_MEMBERS = flags.DEFINE_list('members', ['1', '2', '4', '8'], 'Population sizes K.')
_STEPS = flags.DEFINE_integer('steps', 1000, 'Training steps per member.')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Batch size per member.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Repetitions; the median is reported.')


def synthetic_dataset(num_features: int = 40, num_train: int = 4000, num_test: int = 1000) -> data_lib.ArrayDataset:
  """MNIST-1D-shaped random classification data (40 features, 10 classes)."""
  rng = np.random.default_rng(0)
  return data_lib.ArrayDataset(
      name='synthetic', task='classification',
      train_inputs=rng.normal(size=(num_train, num_features)).astype(np.float32),
      train_targets=rng.integers(0, 10, num_train).astype(np.int32),
      test_inputs=rng.normal(size=(num_test, num_features)).astype(np.float32),
      test_targets=rng.integers(0, 10, num_test).astype(np.int32), num_classes=10)


def _timed(function) -> float:
  started = time.perf_counter()
  function()
  return time.perf_counter() - started


def measure(members: int, steps: int, batch_size: int, repeats: int) -> dict[str, float]:
  """Median seconds of a K-member vmapped run and of K sequential runs of `steps` steps each."""
  dataset = synthetic_dataset()
  model = models_lib.build(ml_collections.ConfigDict({'name': 'lenet', 'hidden_sizes': (300, 100)}), 10)
  optimizer = optim.from_config(ml_collections.ConfigDict({'optimizer': 'adam', 'learning_rate': 1e-3}), steps)
  mesh = parallel.create_mesh()
  single = train_lib.Trainer(model, dataset, optimizer, mesh, batch_size, steps_per_dispatch=64)
  population = train_lib.Trainer(model, dataset, optimizer, mesh, batch_size, steps_per_dispatch=64,
                                 population_size=members)
  starts = [single.init_variables(seed) for seed in range(members)]
  keep_mask = masks_lib.ones_like(starts[0][0])
  host_mask = jax.tree_util.tree_map(np.asarray, keep_mask)

  def run_population():
    state = population.create_state(train_lib.stack_members([start[0] for start in starts]),
                                    train_lib.stack_members([start[1] for start in starts]),
                                    train_lib.stack_members([host_mask] * members), 0)
    jax.block_until_ready(population.train(state, steps, list(range(members))).state.params)

  def run_sequential():
    for seed, (params, model_state) in enumerate(starts):
      state = single.create_state(params, model_state, host_mask, 0)
      jax.block_until_ready(single.train(state, steps, seed).state.params)

  run_population(), run_sequential()  # compile both before timing
  vmapped, sequential = [], []
  for _ in range(repeats):  # interleaved, so background load affects both alike
    vmapped.append(_timed(run_population))
    sequential.append(_timed(run_sequential))
  examples = members * steps * batch_size
  return {'vmapped_examples_per_s': examples / float(np.median(vmapped)),
          'sequential_examples_per_s': examples / float(np.median(sequential))}


def main(argv):
  del argv
  common.quiet_logging()
  steps = 64 if _QUICK.value else _STEPS.value
  repeats = 1 if _QUICK.value else _REPEATS.value
  print(f'device={jax.devices()[0].platform} devices={jax.device_count()} model=lenet300_100 '
        f'batch={_BATCH.value} steps={steps}')
  for members in (int(value) for value in _MEMBERS.value):
    figures = measure(members, steps, _BATCH.value, repeats)
    ratio = figures['vmapped_examples_per_s'] / figures['sequential_examples_per_s']
    print(f'population K={members} vmapped_examples_per_s={figures["vmapped_examples_per_s"]:.0f} '
          f'sequential_examples_per_s={figures["sequential_examples_per_s"]:.0f} ratio={ratio:.2f}', flush=True)


if __name__ == '__main__':
  app.run(main)

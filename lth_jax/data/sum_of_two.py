"""The toy regression task from the lottery-ticket blog post: predict y = x1 + x2.

Training inputs come from `train_range` and test inputs from a disjoint `test_range`, so the test
split measures extrapolation (a network that learned the sum exactly generalizes; one that
memorized the training range does not).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lth_jax.data.arrays import ArrayDataset
from lth_jax.data.arrays import read_positive_int
from lth_jax.data.arrays import read_range
from lth_jax.data.arrays import read_seed

DEFAULT_NUM_TRAIN = 10000
DEFAULT_NUM_TEST = 1000

# Independent random streams per split, so changing num_test never changes the train data.
_TRAIN_STREAM = 0
_TEST_STREAM = 1


def sample_pairs(seed: int, stream: int, num_examples: int, value_range: tuple[float, float]) -> np.ndarray:
  """float32 (num_examples, 2) inputs drawn uniformly from the half-open value_range [low, high)."""
  low, high = value_range
  rng = np.random.default_rng([seed, stream])
  inputs = rng.uniform(low, high, size=(num_examples, 2)).astype(np.float32)
  # Rounding to float32 can land exactly on `high`; keep the range half-open.
  largest_below_high = np.nextafter(np.float32(high), np.float32(low))
  return np.minimum(inputs, largest_below_high)


def sum_targets(inputs: np.ndarray) -> np.ndarray:
  """float32 (n, 1) targets x1 + x2, computed in float32."""
  return (inputs[:, 0] + inputs[:, 1]).astype(np.float32)[:, None]


def build_sum_of_two(dataset_config: Any) -> ArrayDataset:
  """Builds the sum-of-two regression dataset described by `dataset_config`."""
  seed = read_seed(dataset_config)
  num_train = read_positive_int(dataset_config, 'num_train') or DEFAULT_NUM_TRAIN
  num_test = read_positive_int(dataset_config, 'num_test') or DEFAULT_NUM_TEST
  train_range = read_range(dataset_config, 'train_range')
  test_range = read_range(dataset_config, 'test_range')
  train_inputs = sample_pairs(seed, _TRAIN_STREAM, num_train, train_range)
  test_inputs = sample_pairs(seed, _TEST_STREAM, num_test, test_range)
  return ArrayDataset(
      name='sum_of_two',
      task='regression',
      train_inputs=train_inputs,
      train_targets=sum_targets(train_inputs),
      test_inputs=test_inputs,
      test_targets=sum_targets(test_inputs),
      num_classes=None,
  )

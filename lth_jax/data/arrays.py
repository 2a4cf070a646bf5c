"""In-memory datasets, deterministic batch order, and shared config/preprocessing helpers."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Any

import numpy as np

TASKS = ('classification', 'regression')


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
  """An in-memory dataset: train and test arrays, preprocessed to model inputs, or uint8 images
  that become model inputs by per-channel normalization (`input_normalization`)."""

  name: str
  task: str  # "classification" or "regression"
  train_inputs: np.ndarray  # float32 (or uint8 images, see below), shape (num_train, *input_shape)
  train_targets: np.ndarray  # int32 labels (classification) or float32 (regression)
  test_inputs: np.ndarray
  test_targets: np.ndarray
  num_classes: int | None  # None for regression
  # (mean, std) per channel when the inputs are uint8 images: the model input is
  # (image / 255 - mean) / std, computed where the batch is used (inside the compiled step).
  input_normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None

  def __post_init__(self) -> None:
    if self.task not in TASKS:
      raise ValueError(f'ArrayDataset.task must be one of {TASKS}, got {self.task!r}')
    if (self.task == 'classification') != (self.num_classes is not None):
      raise ValueError(
          'ArrayDataset.num_classes must be set for classification and None for '
          f'regression, got task={self.task!r}, num_classes={self.num_classes!r}'
      )
    for split, inputs, targets in (
        ('train', self.train_inputs, self.train_targets),
        ('test', self.test_inputs, self.test_targets),
    ):
      if len(inputs) != len(targets):
        raise ValueError(
            f'ArrayDataset {self.name!r}: {split} inputs and targets differ in length '
            f'({len(inputs)} vs {len(targets)})'
        )
    if self.input_normalization is not None and not (
        self.train_inputs.dtype == np.uint8 and self.test_inputs.dtype == np.uint8
    ):
      raise ValueError(
          f'ArrayDataset {self.name!r}: input_normalization is for uint8 images, got '
          f'{self.train_inputs.dtype} / {self.test_inputs.dtype} inputs'
      )
    if self.train_inputs.shape[1:] != self.test_inputs.shape[1:]:
      raise ValueError(
          f'ArrayDataset {self.name!r}: train and test input shapes differ '
          f'({self.train_inputs.shape[1:]} vs {self.test_inputs.shape[1:]})'
      )

  @property
  def num_train(self) -> int:
    """Number of training examples."""
    return int(self.train_inputs.shape[0])

  @property
  def num_test(self) -> int:
    """Number of test examples."""
    return int(self.test_inputs.shape[0])

  @property
  def input_shape(self) -> tuple[int, ...]:
    """Shape of one input example (without the batch dimension)."""
    return tuple(int(size) for size in self.train_inputs.shape[1:])

  def model_inputs(self, inputs: np.ndarray) -> np.ndarray:
    """`inputs` (of this dataset) as float32 model inputs, normalized on the host if they are
    uint8 images."""
    if self.input_normalization is None:
      return inputs
    mean, std = (np.asarray(values, np.float32) for values in self.input_normalization)
    return ((np.asarray(inputs).astype(np.float32) / 255.0 - mean) / std).astype(np.float32)

  @property
  def num_outputs(self) -> int:
    """Model output width: num_classes, or the regression targets' trailing size (1 if scalar)."""
    if self.num_classes is not None:
      return int(self.num_classes)
    if self.train_targets.ndim <= 1:
      return 1
    return int(math.prod(self.train_targets.shape[1:]))


def _is_integer(value: Any) -> bool:
  """True for Python/NumPy integers, but not for bools."""
  return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


@functools.lru_cache(maxsize=8)
def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The (read-only, cached) example order of one epoch: a pure function of (seed, epoch)."""
  permutation = np.random.default_rng([seed, epoch]).permutation(num_examples).astype(np.int32)
  permutation.setflags(write=False)
  return permutation


def batch_indices(seed: int, start_step: int, num_steps: int, num_examples: int, batch_size: int) -> np.ndarray:
  """Example indices of shape (num_steps, batch_size) for steps start_step .. start_step+num_steps-1.

  A pure function of (seed, step): epoch e = step // steps_per_epoch uses the permutation
  np.random.default_rng([seed, e]).permutation(num_examples), where steps_per_epoch =
  num_examples // batch_size (the remainder is dropped); step s takes the slice
  (s % steps_per_epoch) * batch_size : +batch_size of it.
  """
  for field, value, minimum in (
      ('seed', seed, 0),
      ('start_step', start_step, 0),
      ('num_steps', num_steps, 0),
      ('num_examples', num_examples, 1),
  ):
    if not _is_integer(value) or value < minimum:
      raise ValueError(f'batch_indices: {field} must be an integer >= {minimum}, got {value!r}')
  if not _is_integer(batch_size) or batch_size < 1:
    raise ValueError(f'batch_indices: batch_size must be a positive integer, got {batch_size!r}')
  if batch_size > num_examples:
    raise ValueError(
        f'batch_indices: batch_size ({batch_size}) is larger than the number of ' f'examples ({num_examples})'
    )
  steps_per_epoch = num_examples // batch_size
  steps = np.arange(start_step, start_step + num_steps, dtype=np.int64)
  epochs = steps // steps_per_epoch
  offsets = (steps % steps_per_epoch) * batch_size
  result = np.empty((num_steps, batch_size), dtype=np.int32)
  for epoch in np.unique(epochs):
    permutation = epoch_permutation(int(seed), int(epoch), int(num_examples))
    for row in np.flatnonzero(epochs == epoch):
      result[row] = permutation[offsets[row] : offsets[row] + batch_size]
  return result


# ----------------------------------------------------------------------------------------------
# Readers of the dataset section shared by the dataset builders (`dataset` is a resolved section,
# `lth_jax.config.DataSpec`: every field present). Each raises a ValueError naming the field when its
# value is invalid.


def read_seed(dataset: Any) -> int:
  """Reads dataset.seed: a non-negative integer."""
  value = dataset.seed
  if not _is_integer(value) or value < 0:
    raise ValueError(f'dataset.seed must be a non-negative integer, got {value!r}')
  return int(value)


def read_positive_int(dataset: Any, field: str) -> int | None:
  """Reads dataset.<field>: a positive integer, or None when unset."""
  value = getattr(dataset, field)
  if value is None:
    return None
  if not _is_integer(value) or value < 1:
    raise ValueError(f'dataset.{field} must be a positive integer, got {value!r}')
  return int(value)


def first_examples(
    inputs: np.ndarray, targets: np.ndarray, dataset: Any, field: str, name: str
) -> tuple[np.ndarray, np.ndarray]:
  """The first dataset.<field> (num_train / num_test) examples, or all of them when it is unset."""
  limit = read_positive_int(dataset, field)
  if limit is None:
    return inputs, targets
  if limit > len(targets):
    raise ValueError(f'dataset.{field}={limit} exceeds the {len(targets)} examples of {name}')
  return inputs[:limit], targets[:limit]


def read_range(dataset: Any, field: str) -> tuple[float, float]:
  """Reads dataset.<field>: a (low, high) pair of finite numbers with low < high."""
  value = getattr(dataset, field)
  try:
    low, high = (float(bound) for bound in value)
  except (TypeError, ValueError):
    raise ValueError(f'dataset.{field} must be a (low, high) pair of numbers, got {value!r}') from None
  if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
    raise ValueError(f'dataset.{field} must be finite with low < high, got {value!r}')
  return low, high


def read_fraction(dataset: Any, field: str) -> float:
  """Reads dataset.<field>: a number strictly between 0 and 1."""
  value = getattr(dataset, field)
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not 0 < float(value) < 1:
    raise ValueError(f'dataset.{field} must be a number strictly between 0 and 1, got {value!r}')
  return float(value)


# ----------------------------------------------------------------------------------------------
# Preprocessing helpers.


def standardize_features(train_inputs: np.ndarray, test_inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Standardizes both splits per feature with the train split's mean/std (std 0 treated as 1)."""
  mean = train_inputs.mean(axis=0, dtype=np.float64)
  std = train_inputs.std(axis=0, dtype=np.float64)
  std = np.where(std > 0, std, 1.0)
  standardized_train = ((train_inputs - mean) / std).astype(np.float32)
  standardized_test = ((test_inputs - mean) / std).astype(np.float32)
  return standardized_train, standardized_test


def shuffled_split(num_examples: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Deterministic (train_indices, test_indices) split of range(num_examples); both non-empty."""
  num_test = int(round(num_examples * test_fraction))
  if not 0 < num_test < num_examples:
    raise ValueError(f'dataset.test_fraction={test_fraction} leaves an empty split of {num_examples} examples')
  permutation = np.random.default_rng(seed).permutation(num_examples)
  return permutation[num_test:], permutation[:num_test]

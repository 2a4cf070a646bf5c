"""Your own data as a dataset: numpy or jax arrays (`from_arrays`), or any random-access source of
examples (`from_source`: a list, a `tfds.data_source`, a grain source), read into memory as an
`ArrayDataset` that trains like the built-in ones (the batch order a pure function of (seed, step),
see `batch_indices`; every host reads its slice of each batch).

    dataset = data.from_arrays(x_train, y_train, x_test, y_test)   # task and classes inferred
    dataset = data.from_source(tfds.data_source('fashion_mnist', split='train'),
                               tfds.data_source('fashion_mnist', split='test'),
                               transform=lambda example: (example['image'] / 255, example['label']))

Bad input raises a ValueError of one line that names the argument and the problem, before anything
trains: arrays of different lengths, train and test examples of different shapes, an empty split, values
that are not numbers (or not finite), labels below 0 or not below `num_classes`, and examples (as a
source or a transform gives them) that differ in shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from lth_jax.data.arrays import TASKS
from lth_jax.data.arrays import ArrayDataset

NUMERIC_KINDS = 'biuf'  # NumPy dtype kinds of numbers: bool, signed and unsigned integers, floats
INTEGER_KINDS = 'biu'
# Images per chunk when the per-channel statistics of uint8 images are computed (bounded float64 memory).
_STATISTICS_CHUNK = 1024


def from_arrays(
    train_inputs: Any,
    train_targets: Any,
    test_inputs: Any,
    test_targets: Any,
    *,
    task: str | None = None,
    num_classes: int | None = None,
    name: str = 'arrays',
) -> ArrayDataset:
  """An in-memory dataset of numpy or jax arrays (anything `np.asarray` takes), one example per row.

  Inputs become float32, as given (no normalization), except integer ids (any integer dtype but uint8,
  such as tokens for an embedding), which become int32. `task=None` infers it from the targets: integer
  (or bool) targets in both splits make a 'classification' dataset of integer labels, one per example
  (int32), with `num_classes` = the largest label of both splits + 1 unless given; any other numbers
  make a 'regression' dataset of float32 targets. Raises a one-line ValueError naming the argument
  that is wrong.
  """
  given = {
      'train_inputs': train_inputs,
      'train_targets': train_targets,
      'test_inputs': test_inputs,
      'test_targets': test_targets,
  }
  arrays = {label: _as_array(label, value) for label, value in given.items()}
  return checked_dataset(name, arrays, task=task, num_classes=num_classes)


def from_source(
    train: Sequence[Any],
    test: Sequence[Any],
    *,
    transform: Callable[[Any], Any] | None = None,
    input_key: str = 'image',
    target_key: str = 'label',
    task: str | None = None,
    num_classes: int | None = None,
    name: str = 'source',
) -> ArrayDataset:
  """An in-memory dataset read from two random-access sources of examples (objects with `__len__` and
  `__getitem__`: lists, `tfds.data_source(...)`, grain sources).

  Every example of both sources is read into memory once, here (for a classification source too large
  for memory, `lth_jax.data.stream_source` streams it instead). `transform(example)`, when given, is applied to each example first. An example
  (after the transform) is an (input, target) pair or a mapping holding the input at `input_key` and the
  target at `target_key`; every input must have one shape. Inputs become float32 (integer ids int32), and the task and
  classes are inferred from the targets as `from_arrays` does. Raises a one-line ValueError naming the
  split and the example that is wrong.
  """
  train_inputs, train_targets = read_examples(train, 'train', transform, input_key, target_key)
  test_inputs, test_targets = read_examples(test, 'test', transform, input_key, target_key)
  arrays = {
      'train inputs': train_inputs,
      'train targets': train_targets,
      'test inputs': test_inputs,
      'test targets': test_targets,
  }
  return checked_dataset(name, arrays, task=task, num_classes=num_classes)


# ----------------------------------------------------------------------------------------------
# Reading examples from a random-access source.


def read_examples(
    source: Any,
    split: str,
    transform: Callable[[Any], Any] | None = None,
    input_key: str = 'image',
    target_key: str = 'label',
    count: int | None = None,
    shape_advice: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """The inputs and targets of the first `count` examples of `source` (all when None), stacked; `split`
  names the source in errors ('train', 'test'), which end with `shape_advice` when examples differ in
  shape (by default, advice on the transform)."""
  if isinstance(source, Mapping):
    keys = ', '.join(str(key) for key in source)
    raise ValueError(
        f'{split} is a mapping (keys: {keys}), not a sequence of examples: pass a list of examples, '
        f'or pass arrays of examples to lth_jax.data.from_arrays'
    )
  if not (hasattr(source, '__len__') and hasattr(source, '__getitem__')):
    raise ValueError(
        f'{split} must be a random-access source of examples (with __len__ and __getitem__: a list, '
        f'a tfds.data_source, a grain source), got a {type(source).__name__}'
    )
  count = len(source) if count is None else count
  if count == 0:
    raise ValueError(f'{split} has no examples')
  if shape_advice is None:
    shape_advice = (
        'a transform must give every example the same shape'
        if transform is not None
        else 'every example must have the same shape: give a transform that makes it so'
    )
  inputs: list[np.ndarray] = []
  targets: list[np.ndarray] = []
  for index in range(count):
    example = source[index]
    if transform is not None:
      example = transform(example)
    example_input, example_target = input_and_target(example, split, index, input_key, target_key)
    inputs.append(np.asarray(example_input))
    targets.append(np.asarray(example_target))
    _require_same_shape(split, index, 'input', inputs[0].shape, inputs[-1].shape, shape_advice)
    _require_same_shape(split, index, 'target', targets[0].shape, targets[-1].shape, shape_advice)
  return np.stack(inputs), np.stack(targets)


def input_and_target(example: Any, split: str, index: int, input_key: str, target_key: str) -> tuple[Any, Any]:
  """(input, target) of one example: a pair, or a mapping holding them at input_key and target_key."""
  if isinstance(example, Mapping):
    missing = [key for key in (input_key, target_key) if key not in example]
    if missing:
      keys = ', '.join(repr(key) for key in example)
      raise ValueError(
          f'{split} example {index} has no {" and no ".join(repr(key) for key in missing)} (its keys: {keys}); '
          f'set input_key and target_key to the keys of the input and the target'
      )
    return example[input_key], example[target_key]
  if isinstance(example, (tuple, list)) and len(example) == 2:
    return example[0], example[1]
  raise ValueError(
      f'{split} example {index} is of type {type(example).__name__}, neither an (input, target) pair nor a '
      f'mapping with the keys {input_key!r} and {target_key!r}'
  )


def _require_same_shape(
    split: str, index: int, part: str, first: tuple[int, ...], shape: tuple[int, ...], advice: str
) -> None:
  if shape != first:
    raise ValueError(f"{split} example {index}: {part} shape {shape} differs from example 0's {first} ({advice})")


# ----------------------------------------------------------------------------------------------
# Checking arrays and making the dataset.


def _as_array(label: str, value: Any) -> np.ndarray:
  """`value` as a NumPy array of at least one dimension (one row per example)."""
  try:
    array = np.asarray(value)
  except ValueError as error:  # e.g. nested lists of different lengths
    raise ValueError(f'{label} is not an array of examples: {str(error).splitlines()[0]}') from None
  if array.ndim == 0:
    raise ValueError(f'{label} must be an array of examples (one per row), got a scalar')
  return array


def checked_dataset(
    name: str,
    arrays: Mapping[str, np.ndarray],
    *,
    task: str | None,
    num_classes: int | None,
    normalize_uint8_images: bool = False,
) -> ArrayDataset:
  """The ArrayDataset of four arrays, given in the order train inputs, train targets, test inputs, test
  targets, keyed by how errors name them; checked, with the task and classes inferred as `from_arrays`
  documents. Inputs become float32 (integer ids other than uint8: int32), except that with `normalize_uint8_images` uint8 images (examples of
  shape (height, width, channels)) stay uint8 and are normalized per channel with the training split's
  mean and standard deviation (`ArrayDataset.input_normalization`)."""
  if not isinstance(name, str) or not name:
    raise ValueError(f'name must be a non-empty string, got {name!r}')
  labels = list(arrays)
  train_inputs, train_targets, test_inputs, test_targets = (arrays[label] for label in labels)
  for label, array in arrays.items():
    _require_numbers(label, array)
  for inputs_label, targets_label in ((labels[0], labels[1]), (labels[2], labels[3])):
    inputs, targets = arrays[inputs_label], arrays[targets_label]
    if len(inputs) != len(targets):
      raise ValueError(
          f'{inputs_label} has {len(inputs)} examples but {targets_label} has {len(targets)}: '
          f'each split needs one target per input'
      )
  for train_label, test_label in ((labels[0], labels[2]), (labels[1], labels[3])):
    train_shape, test_shape = arrays[train_label].shape[1:], arrays[test_label].shape[1:]
    if train_shape != test_shape:
      raise ValueError(
          f'{train_label} and {test_label} differ in the shape of an example: {train_shape} vs {test_shape}'
      )
  task = _resolve_task(task, train_targets, test_targets)
  if task == 'classification':
    num_classes = _resolve_classes(num_classes, {labels[1]: train_targets, labels[3]: test_targets})
    train_targets, test_targets = train_targets.astype(np.int32), test_targets.astype(np.int32)
  else:
    if num_classes is not None:
      raise ValueError(f'num_classes={num_classes!r} is for classification, but the task is {task!r}')
    train_targets, test_targets = train_targets.astype(np.float32), test_targets.astype(np.float32)
  input_normalization = None
  if normalize_uint8_images and _are_uint8_images(train_inputs) and _are_uint8_images(test_inputs):
    input_normalization = channel_statistics(train_inputs)
  else:
    train_inputs, test_inputs = _model_inputs(train_inputs), _model_inputs(test_inputs)
  return ArrayDataset(
      name=name,
      task=task,
      train_inputs=train_inputs,
      train_targets=train_targets,
      test_inputs=test_inputs,
      test_targets=test_targets,
      num_classes=num_classes,
      input_normalization=input_normalization,
  )


def _model_inputs(inputs: np.ndarray) -> np.ndarray:
  """Inputs as a model takes them: integer ids (any integer dtype but uint8, e.g. tokens for an
  embedding) as int32, everything else (uint8 pixels too) as float32."""
  if np.issubdtype(inputs.dtype, np.integer) and inputs.dtype != np.uint8:
    return inputs.astype(np.int32)
  return inputs.astype(np.float32)


def _require_numbers(label: str, array: np.ndarray) -> None:
  """A non-empty array of finite numbers."""
  if array.dtype.kind not in NUMERIC_KINDS:
    raise ValueError(f'{label} must hold numbers, got dtype {array.dtype}')
  if len(array) == 0:
    raise ValueError(f'{label} is empty: each split needs at least one example')
  if array.dtype.kind == 'f' and not np.isfinite(array).all():
    raise ValueError(f'{label} must be finite, found NaN or infinity')


def _resolve_task(task: str | None, train_targets: np.ndarray, test_targets: np.ndarray) -> str:
  """The task given, or inferred: integer targets in both splits make classification."""
  if task is None:
    integers = train_targets.dtype.kind in INTEGER_KINDS and test_targets.dtype.kind in INTEGER_KINDS
    return 'classification' if integers else 'regression'
  if task not in TASKS:
    raise ValueError(f'task must be one of {TASKS} (or None: inferred from the targets), got {task!r}')
  return task


def _resolve_classes(num_classes: int | None, targets: Mapping[str, np.ndarray]) -> int:
  """The number of classes given (checked against the labels), or the largest label + 1."""
  if num_classes is not None and (
      not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 1
  ):
    raise ValueError(f'num_classes must be a positive integer, got {num_classes!r}')
  largest = 0
  for label, labels in targets.items():
    if labels.ndim != 1:
      raise ValueError(
          f'{label} must hold one integer label per example (shape ({len(labels)},)) for classification, '
          f'got shape {labels.shape}'
      )
    if labels.dtype.kind == 'f' and not np.array_equal(labels, np.round(labels)):
      fraction = labels[labels != np.round(labels)][0]
      raise ValueError(f'{label} must hold integer labels for classification, found {fraction}')
    lowest, highest = labels.min(), labels.max()
    if lowest < 0:
      raise ValueError(f'{label} must hold labels 0, 1, 2, ... (non-negative integers), found {lowest}')
    if num_classes is not None and highest >= num_classes:
      raise ValueError(
          f'num_classes={num_classes} is too small: found the label {highest} in {label} '
          f'(labels must be below num_classes)'
      )
    if highest >= 2**31 - 1:
      raise ValueError(f'{label} must hold labels that fit in int32, found {highest}')
    largest = max(largest, int(highest))
  return int(num_classes) if num_classes is not None else largest + 1


def _are_uint8_images(inputs: np.ndarray) -> bool:
  """uint8 examples of shape (height, width, channels)."""
  return inputs.dtype == np.uint8 and inputs.ndim == 4


def channel_statistics(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(mean, std) per channel of uint8 images (N, H, W, C) scaled to [0, 1]; a constant channel's std
  is 1 (so normalizing it divides by 1)."""
  channels = images.shape[-1]
  total = np.zeros(channels, np.float64)
  squares = np.zeros(channels, np.float64)
  for start in range(0, len(images), _STATISTICS_CHUNK):
    chunk = np.asarray(images[start : start + _STATISTICS_CHUNK], np.float64).reshape(-1, channels) / 255.0
    total += chunk.sum(axis=0)
    squares += np.square(chunk).sum(axis=0)
  count = images.size // channels
  mean = total / count
  variance = np.maximum(squares / count - np.square(mean), 0.0)
  std = [math.sqrt(value) if value > 1e-12 else 1.0 for value in variance]
  return tuple(float(value) for value in mean), tuple(float(value) for value in std)

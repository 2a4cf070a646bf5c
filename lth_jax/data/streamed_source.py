"""A source of your own, streamed: examples read from a random-access source while training, never
loaded whole, for a classification source too large for memory (`from_source(..., streaming=True)`).

Every host reads its slice of each step's batch through the grain pipeline of `lth_jax.data.pipeline`;
the order is the same pure function of (seed, step) as for in-memory data, so resumed and replayed runs
see the same batches. An example (after the transform) is an (input, label) pair or a mapping with the
input and label keys; uint8 inputs are images, scaled to [0, 1] on the device; float inputs reach the
model as float32, integer inputs (token ids) as int32. The first example of each split fixes the input
shape: an example of another shape met while training stops the run with a one-line error naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import numpy as np

from lth_jax.data import pipeline
from lth_jax.data import user


class SourceExamples(Sequence):
  """The examples of a source as the streaming pipeline reads them: {'image': input, 'label': int}."""

  def __init__(
      self,
      source: Any,
      split: str,
      transform: Callable[[Any], Any] | None,
      input_key: str,
      target_key: str,
      input_dtype: str,
      input_shape: tuple[int, ...],
  ):
    self.source, self.split, self.transform = source, split, transform
    self.input_key, self.target_key = input_key, target_key
    self.input_dtype, self.input_shape = input_dtype, input_shape

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]  # one example, no slices
    example = self.source[index]
    if self.transform is not None:
      example = self.transform(example)
    example_input, label = user.input_and_target(example, self.split, index, self.input_key, self.target_key)
    example_input = np.asarray(example_input)
    if example_input.shape != self.input_shape:
      raise ValueError(
          f"{self.split} example {index}: input shape {example_input.shape} differs from example 0's "
          f'{self.input_shape} (a transform must give every example the same shape)'
      )
    return {'image': example_input.astype(self.input_dtype), 'label': int(np.asarray(label))}


def _input_dtype(example_input: np.ndarray, split: str) -> str:
  """How a split's inputs are sent: uint8 images as they are, other integers as int32, the rest float32."""
  if example_input.dtype == np.uint8:
    return 'uint8'
  if np.issubdtype(example_input.dtype, np.integer):
    return 'int32'
  if np.issubdtype(example_input.dtype, np.floating) or example_input.dtype == np.bool_:
    return 'float32'
  raise ValueError(f'{split} inputs must hold numbers, got dtype {example_input.dtype}')


def stream_source(
    train: Any,
    test: Any,
    *,
    num_classes: int | None,
    transform: Callable[[Any], Any] | None = None,
    input_key: str = 'image',
    target_key: str = 'label',
    name: str = 'source',
) -> pipeline.StreamingDataset:
  """The streamed classification dataset of two random-access sources (see the module docstring);
  `num_classes` is required (a stream is not read ahead to count its labels)."""
  if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
    raise ValueError(
        f'num_classes={num_classes!r}: a streamed source needs num_classes, a positive integer (it is not '
        'read ahead to count its labels)'
    )
  firsts = {}
  for split, source in (('train', train), ('test', test)):
    inputs, _ = user.read_examples(source, split, transform, input_key, target_key, count=1)
    firsts[split] = inputs[0]
  if firsts['train'].shape != firsts['test'].shape:
    raise ValueError(
        f'train and test inputs differ in the shape of an example: {firsts["train"].shape} vs {firsts["test"].shape}'
    )
  input_dtype = _input_dtype(firsts['train'], 'train')
  shape = tuple(int(size) for size in firsts['train'].shape)

  def examples(source: Any, split: str) -> SourceExamples:
    return SourceExamples(source, split, transform, input_key, target_key, input_dtype, shape)

  preprocessing = pipeline.Preprocessing(
      train=lambda example_input, rng: example_input,
      evaluate=lambda example_input: example_input,
      mean=(0.0,),
      std=(1.0,),  # uint8 images scaled to [0, 1]
      input_shape=shape,
      num_classes=num_classes,
      input_dtype=input_dtype,
  )
  return pipeline.StreamingDataset(
      name=name,
      train_records=examples(train, 'train'),
      test_records=examples(test, 'test'),
      preprocessing=preprocessing,
  )

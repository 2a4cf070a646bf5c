"""Datasets registered by name: `register('my_data', builder)` makes `dataset.name = 'my_data'` in a
config build the dataset `builder(dataset_spec)` returns, as the built-in names do.

    def my_data(spec: lth_jax.config.DataSpec) -> lth_jax.data.ArrayDataset:
      return lth_jax.data.from_arrays(*load_my_arrays(seed=spec.seed))

    lth_jax.data.register('my_data', my_data)

A registration lives in the Python process that made it: register in the program (or the config file)
that runs the search, on every host, before the search starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from lth_jax.data.arrays import ArrayDataset
from lth_jax.data.arrays import first_examples
from lth_jax.data.pipeline import StreamingDataset

TFDS_PREFIX = 'tfds:'  # `dataset.name = 'tfds:NAME'`: any tfds dataset by its tfds name

Builder = Callable[[Any], ArrayDataset | StreamingDataset]
_REGISTERED: dict[str, Builder] = {}


def register(name: str, builder: Builder, *, reserved: tuple[str, ...] = ()) -> None:
  """Registers `builder(DataSpec) -> ArrayDataset | StreamingDataset` under `name` (a registered name
  may be registered again, replacing its builder; `reserved` names may not be)."""
  if not isinstance(name, str) or not name:
    raise ValueError(f'register: the name must be a non-empty string, got {name!r}')
  if name in reserved:
    raise ValueError(f'register: {name!r} is a built-in dataset; register your dataset under another name')
  if name.startswith(TFDS_PREFIX):
    raise ValueError(f'register: names starting with {TFDS_PREFIX!r} name tfds datasets; got {name!r}')
  if not callable(builder):
    raise ValueError(f'register: the builder of {name!r} must be callable (DataSpec -> dataset), got {builder!r}')
  _REGISTERED[name] = builder


def unregister(name: str) -> None:
  """Removes the registration of `name` (if any)."""
  _REGISTERED.pop(name, None)


def registered_names() -> tuple[str, ...]:
  """The registered names, in the order they were first registered."""
  return tuple(_REGISTERED)


def is_registered(name: Any) -> bool:
  """Whether `name` is a registered dataset name."""
  return isinstance(name, str) and name in _REGISTERED


def build_registered(dataset_config: Any) -> ArrayDataset | StreamingDataset:
  """Builds the registered dataset `dataset_config.name` with its builder. An in-memory dataset is cut
  to its first `dataset.num_train` / `dataset.num_test` examples when those are set (a builder that
  already did so is left as it is)."""
  name = dataset_config.name
  dataset = _REGISTERED[name](dataset_config)
  if isinstance(dataset, StreamingDataset):
    return dataset
  if not isinstance(dataset, ArrayDataset):
    raise ValueError(
        f'dataset.name={name!r}: its registered builder returned a {type(dataset).__name__}, not an '
        f'ArrayDataset (make one with lth_jax.data.from_arrays or lth_jax.data.from_source)'
    )
  description = f'the registered dataset {name!r}'
  train_inputs, train_targets = first_examples(
      dataset.train_inputs, dataset.train_targets, dataset_config, 'num_train', f"{description}'s training split"
  )
  test_inputs, test_targets = first_examples(
      dataset.test_inputs, dataset.test_targets, dataset_config, 'num_test', f"{description}'s test split"
  )
  if len(train_targets) == dataset.num_train and len(test_targets) == dataset.num_test:
    return dataset
  return dataclasses.replace(
      dataset,
      train_inputs=train_inputs,
      train_targets=train_targets,
      test_inputs=test_inputs,
      test_targets=test_targets,
  )

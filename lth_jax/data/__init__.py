"""Datasets by name from a `dataset` config: in-memory arrays, or streamed from tfds files; and
datasets of your own data.

from lth_jax import data
dataset = data.build(spec.dataset)     # -> data.ArrayDataset, or data.StreamingDataset for
                                       #    imagenet2012 and `dataset.streaming=True`
indices = data.batch_indices(seed, start_step, num_steps, dataset.num_train, batch_size)

A config names a built-in dataset (`DATASET_NAMES`), any tfds dataset as 'tfds:NAME'
(`tfds_catalog`), or a name given to `register`. From Python, `from_arrays` and `from_source` make
datasets of your arrays and sources (`user`), and `stream_source` streams a source too large for memory
(`streamed_source`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lth_jax.data import registry
from lth_jax.data.arrays import ArrayDataset
from lth_jax.data.arrays import batch_indices
from lth_jax.data.embedded import build_digits
from lth_jax.data.embedded import build_mnist1d
from lth_jax.data.pipeline import PREPROCESSING
from lth_jax.data.pipeline import StreamingDataset
from lth_jax.data.pipeline import build_streaming
from lth_jax.data.streamed_source import stream_source
from lth_jax.data.sum_of_two import build_sum_of_two
from lth_jax.data.registry import TFDS_PREFIX
from lth_jax.data.registry import unregister
from lth_jax.data.tfds_catalog import build_tfds_dataset
from lth_jax.data.tfds_catalog import is_tfds_name
from lth_jax.data.tfds_catalog import stream_tfds_dataset
from lth_jax.data.tfds_source import DatasetNotPreparedError
from lth_jax.data.tfds_source import build_image_dataset
from lth_jax.data.user import from_arrays
from lth_jax.data.user import from_source

_BUILDERS: dict[str, Callable[[Any], ArrayDataset | StreamingDataset]] = {
    'sum_of_two': build_sum_of_two,
    'digits': build_digits,
    'mnist1d': build_mnist1d,
    'mnist': build_image_dataset,
    'cifar10': build_image_dataset,
    'imagenet2012': build_streaming,  # too large for memory: always streamed
}

DATASET_NAMES: tuple[str, ...] = tuple(_BUILDERS)  # the built-in names (`dataset_names()` adds registered ones)
STREAMING_NAMES: tuple[str, ...] = tuple(PREPROCESSING)
Dataset = ArrayDataset | StreamingDataset


def register(name: str, builder: Callable[[Any], Dataset]) -> None:
  """Makes `dataset.name = name` in a config build `builder(dataset_spec)`: an ArrayDataset (e.g. of
  `from_arrays` or `from_source`) or a StreamingDataset, from the resolved dataset section
  (`lth_jax.config.DataSpec`). An in-memory dataset is then cut to its first `dataset.num_train` /
  `dataset.num_test` examples when those are set.

  Registering a registered name again replaces its builder; built-in names and 'tfds:' names cannot
  be registered. A registration lives in the process that made it: register before the search starts,
  in the program or config file that runs it (on every host).
  """
  registry.register(name, builder, reserved=DATASET_NAMES)


def dataset_names() -> tuple[str, ...]:
  """Every dataset name a config may give: the built-in names, then the registered ones (and any
  tfds dataset as 'tfds:NAME')."""
  return DATASET_NAMES + registry.registered_names()


def is_dataset_name(name: Any) -> bool:
  """Whether `name` names a dataset: built-in, registered, or 'tfds:NAME'."""
  return isinstance(name, str) and (name in _BUILDERS or registry.is_registered(name) or is_tfds_name(name))


def build(dataset_config: Any) -> Dataset:
  """Builds the dataset named by `dataset_config.name` (a resolved dataset section,
  `lth_jax.config.DataSpec`; `lth_jax.config.data_spec({'name': ..., ...})` makes one from a mapping).

  With `dataset.streaming=True` (mnist, cifar10) the data is streamed through the grain pipeline,
  with augmentation for cifar10 (random crop with padding 4 and horizontal flip); otherwise it is
  loaded into memory once, without augmentation. 'tfds:NAME' reads any tfds dataset into memory
  (`tfds_catalog`), or streams a classification one with `dataset.streaming=True`; a registered name
  builds with its builder (`register`).
  """
  name = dataset_config.name
  if not is_dataset_name(name):
    raise ValueError(
        f'dataset.name must be one of {dataset_names()}, or {TFDS_PREFIX}NAME for a tfds dataset, got {name!r}'
    )
  if dataset_config.streaming:
    if is_tfds_name(name):
      return stream_tfds_dataset(dataset_config)
    if name not in STREAMING_NAMES:
      raise ValueError(
          f'dataset.streaming=True: no streaming pipeline for {name!r} ' f"(streamable: {', '.join(STREAMING_NAMES)})"
      )
    return build_streaming(dataset_config)
  if name in _BUILDERS:
    return _BUILDERS[name](dataset_config)
  if is_tfds_name(name):
    return build_tfds_dataset(dataset_config)
  return registry.build_registered(dataset_config)


__all__ = [
    'ArrayDataset',
    'DATASET_NAMES',
    'Dataset',
    'DatasetNotPreparedError',
    'STREAMING_NAMES',
    'StreamingDataset',
    'TFDS_PREFIX',
    'batch_indices',
    'build',
    'dataset_names',
    'from_arrays',
    'from_source',
    'is_dataset_name',
    'register',
    'stream_source',
    'unregister',
]

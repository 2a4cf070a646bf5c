"""Datasets by name from a `dataset` config: in-memory arrays, or streamed from tfds files.

from lth_jax import data
dataset = data.build(spec.dataset)     # -> data.ArrayDataset, or data.StreamingDataset for
                                       #    imagenet2012 and `dataset.streaming=True`
indices = data.batch_indices(seed, start_step, num_steps, dataset.num_train, batch_size)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lth_jax.data.arrays import ArrayDataset
from lth_jax.data.arrays import batch_indices
from lth_jax.data.embedded import build_digits
from lth_jax.data.embedded import build_mnist1d
from lth_jax.data.pipeline import PREPROCESSING
from lth_jax.data.pipeline import StreamingDataset
from lth_jax.data.pipeline import build_streaming
from lth_jax.data.sum_of_two import build_sum_of_two
from lth_jax.data.tfds_source import DatasetNotPreparedError
from lth_jax.data.tfds_source import build_image_dataset

_BUILDERS: dict[str, Callable[[Any], ArrayDataset | StreamingDataset]] = {
    'sum_of_two': build_sum_of_two,
    'digits': build_digits,
    'mnist1d': build_mnist1d,
    'mnist': build_image_dataset,
    'cifar10': build_image_dataset,
    'imagenet2012': build_streaming,  # too large for memory: always streamed
}

DATASET_NAMES: tuple[str, ...] = tuple(_BUILDERS)
STREAMING_NAMES: tuple[str, ...] = tuple(PREPROCESSING)
Dataset = ArrayDataset | StreamingDataset


def build(dataset_config: Any) -> Dataset:
  """Builds the dataset named by `dataset_config.name` (a resolved dataset section,
  `lth_jax.config.DataSpec`; `lth_jax.config.data_spec({'name': ..., ...})` makes one from a mapping).

  With `dataset.streaming=True` (mnist, cifar10) the data is streamed through the grain pipeline,
  with augmentation for cifar10 (random crop with padding 4 and horizontal flip); otherwise it is
  loaded into memory once, without augmentation.
  """
  name = dataset_config.name
  if not isinstance(name, str) or name not in _BUILDERS:
    raise ValueError(f'dataset.name must be one of {DATASET_NAMES}, got {name!r}')
  if dataset_config.streaming:
    if name not in STREAMING_NAMES:
      raise ValueError(
          f'dataset.streaming=True: no streaming pipeline for {name!r} ' f"(streamable: {', '.join(STREAMING_NAMES)})"
      )
    return build_streaming(dataset_config)
  return _BUILDERS[name](dataset_config)


__all__ = [
    'ArrayDataset',
    'DATASET_NAMES',
    'Dataset',
    'DatasetNotPreparedError',
    'STREAMING_NAMES',
    'StreamingDataset',
    'batch_indices',
    'build',
]

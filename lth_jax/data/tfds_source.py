"""MNIST and CIFAR-10 read through `tfds.data_source` (array_record files, no TensorFlow needed).

The data must already be prepared in array_record format, e.g.
`tfds build mnist --file_format=array_record --data_dir=DIR`; nothing is downloaded here. Each split is
decoded once into the decoded cache (`decoded_cache`) and memory-mapped from it afterwards, found
through a note of what tfds read (`source_notes`) without importing tfds.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from lth_jax.data import decoded_cache
from lth_jax.data import source_notes
from lth_jax.data.arrays import ArrayDataset
from lth_jax.data.arrays import read_positive_int


@dataclasses.dataclass(frozen=True)
class ImageDatasetSpec:
  """Static description of a tfds image-classification dataset."""

  name: str
  image_shape: tuple[int, int, int]
  num_classes: int
  channel_mean: tuple[float, ...]
  channel_std: tuple[float, ...]


IMAGE_DATASETS: dict[str, ImageDatasetSpec] = {
    'mnist': ImageDatasetSpec(
        name='mnist',
        image_shape=(28, 28, 1),
        num_classes=10,
        channel_mean=(0.1307,),
        channel_std=(0.3081,),
    ),
    'cifar10': ImageDatasetSpec(
        name='cifar10',
        image_shape=(32, 32, 3),
        num_classes=10,
        channel_mean=(0.4914, 0.4822, 0.4465),
        channel_std=(0.2470, 0.2435, 0.2616),
    ),
}


class DatasetNotPreparedError(FileNotFoundError):
  """The tfds dataset is not prepared (in array_record format) under the data_dir."""


def default_tfds_data_dir() -> str:
  """The folder tfds reads when no data_dir is given ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  from tensorflow_datasets.core import constants

  return os.fspath(constants.DATA_DIR)


def prepare_command(name: str, data_dir: str) -> str:
  """Shell command that prepares `name` for `tfds.data_source` under `data_dir`."""
  return f'tfds build {name} --file_format=array_record --data_dir={data_dir}'


def open_split(name: str, split: str, data_dir: str | None) -> Any:
  """Opens one split as a random-access tfds data source (a sequence of records with its
  `dataset_info`), without downloading anything.

  Raises DatasetNotPreparedError if the split is not prepared in array_record format.
  """
  import tensorflow_datasets as tfds  # Imported lazily: slow to import.

  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  # With download=False, tfds reports a missing dataset inconsistently: NotImplementedError
  # ("file format TFRECORD is not supported") for an empty folder or a TFRecord-only copy,
  # KeyError ("splits is empty") when array_record is forced, FileNotFoundError for missing files.
  except (NotImplementedError, KeyError, FileNotFoundError) as error:
    shown_dir = data_dir or default_tfds_data_dir()
    manual = (
        f'\n(ImageNet cannot be downloaded by tfds: put ILSVRC2012_img_train.tar and '
        f"ILSVRC2012_img_val.tar in {os.path.join(shown_dir, 'downloads', 'manual')} first.)"
        if name == 'imagenet2012'
        else ''
    )
    raise DatasetNotPreparedError(
        f'tfds dataset {name!r} (split {split!r}) is not prepared in array_record format under '
        f'data_dir={shown_dir!r}. Prepare it with:\n  {prepare_command(name, shown_dir)}{manual}\n'
        f'(the tfds error behind this, which may describe the format it expected: '
        f'{type(error).__name__}: {error})'
    ) from error


def read_images_and_labels(source: Sequence[Any], count: int) -> tuple[np.ndarray, np.ndarray]:
  """Reads the first `count` (>= 1) records as uint8 images (count, H, W, C) and int32 labels."""
  # Index records one by one: `source.__getitems__` breaks under tfds.testing.mock_data.
  image_shape = np.shape(source[0]['image'])
  images = np.empty((count, *image_shape), dtype=np.uint8)
  labels = np.empty((count,), dtype=np.int32)
  for index in range(count):
    record = source[index]
    images[index] = record['image']
    labels[index] = record['label']
  return images, labels


def normalize_images(images: np.ndarray, spec: ImageDatasetSpec) -> np.ndarray:
  """uint8 images -> float32 in [0, 1] -> normalized per channel with the spec's mean/std."""
  mean = np.asarray(spec.channel_mean, dtype=np.float32)
  std = np.asarray(spec.channel_std, dtype=np.float32)
  return ((images.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)


def read_split(
    spec: ImageDatasetSpec, split: str, data_dir: str | None, limit: int | None, limit_field: str
) -> tuple[np.ndarray, np.ndarray]:
  """Reads one split (the first `limit` records if given) as uint8 images and int32 labels.

  Array_record splits go through the decoded cache (`decoded_cache`): memory-mapped when cached,
  else decoded in parallel and cached. With a `limit` and no cache of the whole split yet, only the
  first `limit` records are decoded (in parallel, not cached). Sources without files (tfds's mock
  data) are read record by record. A cached split that an earlier read noted (`source_notes`) is
  memory-mapped without opening tfds at all.
  """
  note = source_notes.note_path(decoded_cache.cache_folder(), spec.name, split, data_dir)
  noted = _noted_split(spec, split, note)
  if noted is not None:
    count = _count(spec, split, data_dir, limit, limit_field, len(noted[1]))
    return noted[0][:count], noted[1][:count]
  source = open_split(spec.name, split, data_dir)
  count = _count(spec, split, data_dir, limit, limit_field, len(source))
  shards = decoded_cache.source_shards(source, split)
  if shards is None:
    images, labels = read_images_and_labels(source, count)
  else:
    stored_shape = tuple(source.dataset_info.features['image'].shape)
    if stored_shape != spec.image_shape:
      raise ValueError(f'{spec.name} {split!r} images have shape {stored_shape}, expected {spec.image_shape}')
    version = str(source.dataset_info.version)
    images, labels = decoded_cache.decode_split(
        spec.name, version, split, shards, spec.image_shape, prefix=None if limit is None else count
    )
    source_notes.write(note, version, source.dataset_info.data_dir, shards)
  if images.shape[1:] != spec.image_shape:
    raise ValueError(f'{spec.name} {split!r} images have shape {images.shape[1:]}, expected {spec.image_shape}')
  return images[:count], labels[:count]


def _count(
    spec: ImageDatasetSpec, split: str, data_dir: str | None, limit: int | None, limit_field: str, available: int
) -> int:
  """How many of the split's `available` records to read: all, or `limit` (a ValueError when the
  split is empty or holds fewer)."""
  if available == 0:
    raise ValueError(f"{spec.name}'s {split!r} split under data_dir={data_dir!r} is empty")
  if limit is not None and limit > available:
    raise ValueError(
        f'dataset.{limit_field}={limit} exceeds the {available} examples in ' f"{spec.name}'s {split!r} split"
    )
  return available if limit is None else limit


def _noted_split(spec: ImageDatasetSpec, split: str, note: pathlib.Path) -> tuple[np.ndarray, np.ndarray] | None:
  """The cached split that the note at `note` leads to, while the note and the cache hold; else None."""
  noted = source_notes.read(note)
  if noted is None:
    return None
  version, shards = noted
  try:
    return decoded_cache.cached_split(spec.name, version, split, shards, spec.image_shape)
  except OSError:  # a shard is gone: tfds reports it
    return None


def build_image_dataset(dataset_config: Any) -> ArrayDataset:
  """Builds mnist or cifar10 (by dataset.name) from tfds array_record files under dataset.data_dir:
  uint8 images, normalized per channel inside the compiled step (`ArrayDataset.input_normalization`)."""
  name = dataset_config.name
  if not isinstance(name, str) or name not in IMAGE_DATASETS:
    raise ValueError(f'dataset.name must be one of {tuple(IMAGE_DATASETS)} here, got {name!r}')
  spec = IMAGE_DATASETS[name]
  data_dir = dataset_config.data_dir or None
  if data_dir is not None:
    data_dir = os.path.expanduser(os.fspath(data_dir))
  num_train = read_positive_int(dataset_config, 'num_train')
  num_test = read_positive_int(dataset_config, 'num_test')
  train_inputs, train_labels = read_split(spec, 'train', data_dir, num_train, 'num_train')
  test_inputs, test_labels = read_split(spec, 'test', data_dir, num_test, 'num_test')
  return ArrayDataset(
      name=spec.name,
      task='classification',
      train_inputs=train_inputs,
      train_targets=train_labels,
      test_inputs=test_inputs,
      test_targets=test_labels,
      num_classes=spec.num_classes,
      input_normalization=(spec.channel_mean, spec.channel_std),
  )

"""Any tfds dataset by name: `dataset.name = 'tfds:NAME'` (NAME as tfds spells it, with a config or
version where tfds takes one: 'tfds:fashion_mnist', 'tfds:cifar10_corrupted/brightness_1',
'tfds:mnist:3.0.1'), read through `tfds.data_source` (array_record files, no TensorFlow needed) into
memory.

The dataset section says which splits are the training and test sets (`dataset.train_split`,
`dataset.test_split`: any tfds split, slices such as 'train[:90%]' included) and which features hold
the input and the target (`dataset.input_key`, `dataset.target_key`); `dataset.num_train` /
`dataset.num_test` take the first examples of each. As with mnist and cifar10 nothing is downloaded:
the data must be prepared under `dataset.data_dir`, e.g. `tfds build NAME --file_format=array_record`.

A ClassLabel target makes a classification dataset of its number of classes; other targets are read as
`lth_jax.data.from_arrays` reads them (integers: classification, other numbers: regression). uint8
image inputs stay uint8 and are normalized per channel, inside the compiled step, with the training
split's mean and standard deviation; other inputs become float32 as stored. Image-classification splits
(a PNG image feature of a fixed shape and a ClassLabel) go through the decoded cache (`decoded_cache`):
decoded in parallel once, memory-mapped after.
"""

from __future__ import annotations

import difflib
import os
from typing import Any

import numpy as np

from lth_jax.data import decoded_cache
from lth_jax.data import pipeline
from lth_jax.data import streamed_source
from lth_jax.data import user
from lth_jax.data.arrays import ArrayDataset
from lth_jax.data.arrays import read_positive_int
from lth_jax.data.registry import TFDS_PREFIX
from lth_jax.data.tfds_source import open_split


def is_tfds_name(name: Any) -> bool:
  """Whether `name` names a tfds dataset ('tfds:NAME')."""
  return isinstance(name, str) and name.startswith(TFDS_PREFIX)


def build_tfds_dataset(dataset_config: Any) -> ArrayDataset:
  """Builds the tfds dataset `dataset.name = 'tfds:NAME'` from the splits and features the dataset
  section names (see the module docstring)."""
  name, tfds_name, data_dir = _checked_fields(dataset_config)
  input_key, target_key = dataset_config.input_key, dataset_config.target_key
  limits = {field: read_positive_int(dataset_config, field) for field in ('num_train', 'num_test')}
  arrays: dict[str, np.ndarray] = {}  # how errors name them: "dataset.train_split's inputs", ...
  for field, limit_field in (('train_split', 'num_train'), ('test_split', 'num_test')):
    split = getattr(dataset_config, field)
    source = _open(name, tfds_name, split, field, data_dir)
    classes = _check_features(name, source, input_key, target_key)
    inputs, targets = _read(tfds_name, source, split, (input_key, target_key), limits[limit_field], limit_field)
    arrays[f"dataset.{field}'s inputs"], arrays[f"dataset.{field}'s targets"] = inputs, targets
  return user.checked_dataset(
      name,
      arrays,
      task='classification' if classes is not None else None,
      num_classes=classes,
      normalize_uint8_images=True,
  )


def stream_tfds_dataset(dataset_config: Any) -> pipeline.StreamingDataset:
  """`dataset.name = 'tfds:NAME'` with `dataset.streaming=True`: the splits streamed while training
  (`streamed_source.stream_source`), not read into memory; a classification dataset (a ClassLabel
  target), uint8 images scaled to [0, 1] on the device."""
  name, tfds_name, data_dir = _checked_fields(dataset_config)
  sources, classes = {}, None
  for field, limit_field in (('train_split', 'num_train'), ('test_split', 'num_test')):
    split = getattr(dataset_config, field)
    source = _open(name, tfds_name, split, field, data_dir)
    classes = _check_features(name, source, dataset_config.input_key, dataset_config.target_key)
    if classes is None:
      raise ValueError(
          f'dataset.streaming=True: {name!r} has no class-label target {dataset_config.target_key!r}; '
          'streamed datasets are classification datasets (set dataset.streaming=False to read it into memory)'
      )
    limit = read_positive_int(dataset_config, limit_field)
    sources[field] = pipeline.limited(source, limit, limit_field, tfds_name, split)
  return streamed_source.stream_source(
      sources['train_split'],
      sources['test_split'],
      num_classes=classes,
      input_key=dataset_config.input_key,
      target_key=dataset_config.target_key,
      name=name,
  )


def _checked_fields(dataset_config: Any) -> tuple[str, str, str | None]:
  """(dataset.name, the tfds name in it, the data_dir) once the dataset section's tfds fields are checked."""
  name = dataset_config.name
  tfds_name = name[len(TFDS_PREFIX) :]
  if not tfds_name:
    raise ValueError(f"dataset.name={name!r}: name a tfds dataset after {TFDS_PREFIX!r}, e.g. 'tfds:fashion_mnist'")
  for field in ('train_split', 'test_split', 'input_key', 'target_key'):
    value = getattr(dataset_config, field)
    if not isinstance(value, str) or not value:
      raise ValueError(f'dataset.{field} must be a non-empty string, got {value!r}')
  data_dir = dataset_config.data_dir or None
  return name, tfds_name, None if data_dir is None else os.path.expanduser(os.fspath(data_dir))


def _open(name: str, tfds_name: str, split: str, field: str, data_dir: str | None) -> Any:
  """The split as a tfds data source; a one-line ValueError for an unknown dataset or split (and the
  DatasetNotPreparedError of `open_split` for data that is not prepared)."""
  from tensorflow_datasets.core import registered  # Imported lazily: tfds is slow to import.

  try:
    return open_split(tfds_name, split, data_dir)
  except registered.DatasetNotFoundError:
    raise ValueError(f'dataset.name={name!r}: tfds has no dataset {tfds_name!r}{_close_match(tfds_name)}') from None
  except ValueError as error:  # an unknown split, or a malformed split expression
    raise ValueError(f'dataset.{field}={split!r}: {str(error).splitlines()[0]}') from None


def _close_match(tfds_name: str) -> str:
  """' (did you mean ...?)' naming the tfds dataset closest to `tfds_name`, or ''."""
  import tensorflow_datasets as tfds  # Imported lazily: slow to import.

  base_name = tfds_name.split('/')[0].split(':')[0]
  try:
    known = tfds.list_builders(with_community_datasets=False)
  except Exception:  # pylint: disable=broad-except  # a suggestion is optional
    return ''
  matches = difflib.get_close_matches(base_name, known, n=1)
  return f' (did you mean {TFDS_PREFIX}{matches[0]}?)' if matches else ''


def _check_features(name: str, source: Any, input_key: str, target_key: str) -> int | None:
  """Checks that the dataset has the input and target features; returns the target's number of
  classes when it is a ClassLabel, else None."""
  features = _features(source)
  if features is None:
    return None
  for field, key in (('input_key', input_key), ('target_key', target_key)):
    if key not in features:
      raise ValueError(
          f'dataset.{field}={key!r}: tfds dataset {name[len(TFDS_PREFIX):]!r} has no such feature '
          f'(its features: {", ".join(features)})'
      )
  return _num_classes(features[target_key])


def _features(source: Any) -> Any:
  """The top-level features (a FeaturesDict) of a tfds data source, or None if it does not say."""
  info = getattr(source, 'dataset_info', None)
  features = getattr(info, 'features', None)
  return features if features is not None and hasattr(features, 'keys') else None


def _num_classes(feature: Any) -> int | None:
  import tensorflow_datasets as tfds  # Imported lazily: slow to import.

  if isinstance(feature, tfds.features.ClassLabel) and feature.num_classes:
    return int(feature.num_classes)
  return None


def _read(
    tfds_name: str, source: Any, split: str, keys: tuple[str, str], limit: int | None, limit_field: str
) -> tuple[np.ndarray, np.ndarray]:
  """The inputs and targets (the features `keys`) of the split's first `limit` examples (all when None)."""
  available = len(source)
  if available == 0:
    raise ValueError(f'tfds dataset {tfds_name!r}: the {split!r} split is empty')
  if limit is not None and limit > available:
    raise ValueError(f"dataset.{limit_field}={limit} exceeds the {available} examples in {tfds_name}'s {split!r} split")
  count = available if limit is None else limit
  image_shape = _decodable_image_shape(source, keys)
  shards = decoded_cache.source_shards(source, split) if image_shape is not None else None
  if image_shape is None or shards is None:  # not a PNG image classification split, or no files (mock data)
    advice = (
        f'the examples of {TFDS_PREFIX}{tfds_name} differ in shape: read them with lth_jax.data.from_source and '
        f'a transform that gives them one shape, and register that under a name (lth_jax.data.register)'
    )
    return user.read_examples(
        source, f'{split!r}', input_key=keys[0], target_key=keys[1], count=count, shape_advice=advice
    )
  images, labels = decoded_cache.decode_split(
      tfds_name,
      str(source.dataset_info.version),
      split,
      shards,
      image_shape,
      prefix=None if limit is None else count,
      keys=keys,
  )
  return images[:count], labels[:count]


def _decodable_image_shape(source: Any, keys: tuple[str, str]) -> tuple[int, int, int] | None:
  """The (height, width, channels) of the split's input images when the decoded cache can read its
  records: a PNG-encoded uint8 Image of a fixed shape and a ClassLabel target; else None."""
  import tensorflow_datasets as tfds  # Imported lazily: slow to import.

  features = _features(source)
  if features is None:
    return None
  image, label = features[keys[0]], features[keys[1]]
  if not (isinstance(image, tfds.features.Image) and isinstance(label, tfds.features.ClassLabel)):
    return None
  shape = tuple(image.shape)
  if image.np_dtype != np.uint8 or image.encoding_format not in (None, 'png') or len(shape) != 3:
    return None
  if any(size is None for size in shape):
    return None
  return (int(shape[0]), int(shape[1]), int(shape[2]))

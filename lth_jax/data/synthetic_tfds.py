"""Writes synthetic image-classification data in tfds's array_record layout, without TensorFlow.

The folder it writes (`DATA_DIR/NAME/VERSION/` with dataset_info.json, features.json and
`NAME-SPLIT.array_record-0000X-of-0000N` shards of PNG-encoded tf.train.Example records) is read by
`tfds.data_source(NAME, data_dir=DATA_DIR)` exactly like data prepared with
`tfds build NAME --file_format=array_record`. Used by the tests and the start-up benchmark.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
from collections.abc import Mapping

import numpy as np

# The versions tfds's registered builders expect (tfds.data_source reads DATA_DIR/NAME/VERSION).
TFDS_VERSIONS: dict[str, str] = {'mnist': '3.0.1', 'cifar10': '3.0.2'}
IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {'mnist': (28, 28, 1), 'cifar10': (32, 32, 3)}
NUM_CLASSES = 10


def synthetic_images(name: str, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Random uint8 images of `name`'s shape (count, H, W, C) and int64 labels in [0, 10).

  The images are blocky like the real ones compress: mnist's are blobs of bright 4x4 blocks on a
  black background, cifar10's smooth blocks with pixel noise (PNG sizes near the real datasets').
  """
  rng = np.random.default_rng(seed)
  height, width, channels = IMAGE_SHAPES[name]
  images = np.empty((count, height, width, channels), np.uint8)
  for start in range(0, count, 5000):
    size = min(5000, count - start)
    blocks = rng.random((size, height // 4, width // 4, channels), dtype=np.float32)
    blocks = blocks.repeat(4, axis=1).repeat(4, axis=2)
    if name == 'mnist':
      chunk = np.where(blocks > 0.7, rng.integers(128, 256, blocks.shape, dtype=np.uint8), 0)
    else:
      chunk = blocks * 200 + rng.integers(0, 56, blocks.shape, dtype=np.uint8)
    images[start : start + size] = chunk.astype(np.uint8)
  labels = rng.integers(0, NUM_CLASSES, size=count, dtype=np.int64)
  return images, labels


def _png(image: np.ndarray) -> bytes:
  """PNG bytes of one uint8 HWC image (a single channel is stored as grayscale)."""
  from PIL import Image  # Pillow ships with matplotlib

  buffer = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format='PNG')
  return buffer.getvalue()


def _features(name: str):
  import tensorflow_datasets as tfds  # Imported lazily: slow to import.

  return tfds.features.FeaturesDict(
      {
          'image': tfds.features.Image(shape=IMAGE_SHAPES[name]),
          'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
      }
  )


def write_split_shards(
    folder: pathlib.Path, name: str, split: str, images: np.ndarray, labels: np.ndarray, num_shards: int
) -> tuple[list[int], int]:
  """Writes one split as `num_shards` array_record files; returns (shard lengths, total bytes)."""
  from array_record.python.array_record_module import ArrayRecordWriter
  from tensorflow_datasets.core import example_serializer

  serializer = example_serializer.ExampleSerializer(_features(name).get_serialized_info())
  bounds = np.linspace(0, len(labels), num_shards + 1).astype(int)
  shard_lengths, num_bytes = [], 0
  for shard in range(num_shards):
    path = folder / f'{name}-{split}.array_record-{shard:05d}-of-{num_shards:05d}'
    writer = ArrayRecordWriter(os.fspath(path), 'group_size:1')
    for index in range(bounds[shard], bounds[shard + 1]):
      writer.write(serializer.serialize_example({'image': _png(images[index]), 'label': int(labels[index])}))
    writer.close()
    shard_lengths.append(int(bounds[shard + 1] - bounds[shard]))
    num_bytes += path.stat().st_size
  return shard_lengths, num_bytes


def write_tfds_dataset(
    data_dir: str | os.PathLike[str],
    name: str,
    splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    num_shards: int = 1,
) -> pathlib.Path:
  """Writes `splits` ({split: (uint8 images, labels)}) of tfds dataset `name` (mnist or cifar10)
  under `data_dir` in array_record layout; returns the dataset's version folder."""
  if name not in TFDS_VERSIONS:
    raise ValueError(f'synthetic tfds data: name must be one of {tuple(TFDS_VERSIONS)}, got {name!r}')
  folder = pathlib.Path(data_dir) / name / TFDS_VERSIONS[name]
  folder.mkdir(parents=True, exist_ok=True)
  split_infos = []
  for split, (images, labels) in splits.items():
    shard_lengths, num_bytes = write_split_shards(folder, name, split, images, labels, num_shards)
    split_infos.append(
        {
            'name': split,
            'shardLengths': [str(length) for length in shard_lengths],
            'numBytes': str(num_bytes),
            'filepathTemplate': '{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}',
        }
    )
  _features(name).save_config(os.fspath(folder))
  info = {
      'name': name,
      'version': TFDS_VERSIONS[name],
      'fileFormat': 'array_record',
      'moduleName': f'tensorflow_datasets.image_classification.{name}',
      'splits': split_infos,
  }
  (folder / 'dataset_info.json').write_text(json.dumps(info, indent=2))
  return folder

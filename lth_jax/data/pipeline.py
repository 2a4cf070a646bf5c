"""Streaming input pipelines over `tfds.data_source` with grain: for datasets that do not fit in
device memory (imagenet2012) or that need per-step augmentation (cifar10, imagenet2012).

Every batch is a pure function of (seed, step): the example indices come from `batch_indices`, and
each example's augmentation draws from `np.random.default_rng([seed, step, position])`. A restarted
run, or the members of a stability population, therefore see identical batches. Each host reads and
augments only its slice of the global batch (`process_index`-th of `process_count` equal slices);
`parallel.put_local_batch` assembles the slices into one global sharded array.

Batches hold uint8 images (4x less to send to the devices than float32); the compiled step
normalizes them (`normalize_on_device`) with the dataset's per-channel mean and standard deviation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from lth_jax.data.arrays import batch_indices
from lth_jax.data.arrays import read_positive_int
from lth_jax.data.tfds_source import open_split

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """uint8 HWC image -> float32, scaled to [0, 1] and normalized per channel (on the host)."""
  return (image.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def normalize_on_device(images: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
  """uint8 images (..., C) -> float32 normalized per channel; traceable (runs inside jit)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  scale = 1.0 / (255.0 * np.asarray(std, np.float32))
  offset = np.asarray(mean, np.float32) / np.asarray(std, np.float32)
  return images.astype(jnp.float32) * scale - offset


def pad_crop_flip(image: np.ndarray, rng: np.random.Generator, padding: int = 4) -> np.ndarray:
  """CIFAR augmentation: zero-pad by `padding`, take a random crop of the original size, and flip
  horizontally with probability 1/2."""
  height, width = image.shape[:2]
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  top, left = rng.integers(0, 2 * padding + 1, size=2)
  crop = padded[top : top + height, left : left + width]
  return crop[:, ::-1] if rng.random() < 0.5 else crop


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize of a uint8 HWC image."""
  from PIL import Image  # Pillow ships with matplotlib

  bilinear = getattr(Image, 'Resampling', Image).BILINEAR  # Image.Resampling since Pillow 9.1
  return np.asarray(Image.fromarray(image).resize((width, height), bilinear))


def random_resized_crop(
    image: np.ndarray,
    rng: np.random.Generator,
    size: int = 224,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> np.ndarray:
  """Inception-style ImageNet training crop: a random area and aspect ratio, resized to `size`, then a
  random horizontal flip. Falls back to a center crop when no attempt fits."""
  height, width = image.shape[:2]
  for _ in range(attempts):
    area = height * width * rng.uniform(*area_range)
    aspect = np.exp(rng.uniform(np.log(aspect_range[0]), np.log(aspect_range[1])))
    crop_width = int(round(np.sqrt(area * aspect)))
    crop_height = int(round(np.sqrt(area / aspect)))
    if 0 < crop_width <= width and 0 < crop_height <= height:
      top = int(rng.integers(0, height - crop_height + 1))
      left = int(rng.integers(0, width - crop_width + 1))
      crop = image[top : top + crop_height, left : left + crop_width]
      break
  else:
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = image[top : top + side, left : left + side]
  crop = _resize(crop, size, size)
  return crop[:, ::-1] if rng.random() < 0.5 else crop


def resize_center_crop(image: np.ndarray, resize_to: int = 256, size: int = 224) -> np.ndarray:
  """ImageNet evaluation: resize the shorter side to `resize_to`, then crop the central `size` square."""
  height, width = image.shape[:2]
  scale = resize_to / min(height, width)
  new_height, new_width = max(size, int(round(height * scale))), max(size, int(round(width * scale)))
  resized = _resize(image, new_height, new_width)
  top, left = (new_height - size) // 2, (new_width - size) // 2
  return resized[top : top + size, left : left + size]


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How one dataset's examples become model inputs, for training and for evaluation."""

  train: Callable[[np.ndarray, np.random.Generator], np.ndarray]
  evaluate: Callable[[np.ndarray], np.ndarray]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  input_shape: tuple[int, ...]
  num_classes: int
  # The dtype of the inputs as the host sends them: uint8 images are normalized on the device with
  # `mean` and `std`; float32 or int32 inputs (a streamed source of your own) reach the model as they are.
  input_dtype: str = 'uint8'

  @property
  def model_input_dtype(self) -> np.dtype:
    """The dtype of the inputs the model sees."""
    return np.dtype(np.float32) if self.input_dtype == 'uint8' else np.dtype(self.input_dtype)

  def model_inputs(self, inputs: Any) -> Any:
    """A batch of inputs as the model takes them (traceable): uint8 images normalized per channel."""
    if self.input_dtype == 'uint8':
      return normalize_on_device(inputs, self.mean, self.std)
    return inputs


PREPROCESSING: dict[str, Preprocessing] = {
    'cifar10': Preprocessing(
        train=pad_crop_flip,
        evaluate=lambda image: image,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        input_shape=(32, 32, 3),
        num_classes=10,
    ),
    'imagenet2012': Preprocessing(
        train=random_resized_crop,
        evaluate=resize_center_crop,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_shape=(224, 224, 3),
        num_classes=1000,
    ),
    'mnist': Preprocessing(
        train=lambda image, rng: image,
        evaluate=lambda image: image,
        mean=(0.1307,),
        std=(0.3081,),
        input_shape=(28, 28, 1),
        num_classes=10,
    ),
}


@dataclasses.dataclass
class StepBatches:
  """Random access from a training step to this host's slice of that step's batch.

  `StepBatches(...)[step]` is {'inputs': uint8 (local_batch, H, W, C), 'targets': int32 (local_batch,)},
  augmented but not normalized (see `normalize_on_device`).
  """

  records: Sequence[Any]
  preprocessing: Preprocessing
  seed: int
  global_batch_size: int
  process_index: int = 0
  process_count: int = 1

  def __post_init__(self):
    if self.global_batch_size % self.process_count:
      raise ValueError(
          f'training.batch_size={self.global_batch_size} does not divide over ' f'{self.process_count} hosts'
      )
    self.local_batch_size = self.global_batch_size // self.process_count

  def example_indices(self, step: int) -> np.ndarray:
    """This host's example indices at `step`."""
    indices = batch_indices(self.seed, step, 1, len(self.records), self.global_batch_size)[0]
    start = self.process_index * self.local_batch_size
    return indices[start : start + self.local_batch_size]

  def __getitem__(self, step: int) -> dict[str, np.ndarray]:
    start = self.process_index * self.local_batch_size
    inputs, targets = [], []
    for offset, index in enumerate(self.example_indices(step)):
      record = self.records[int(index)]
      rng = np.random.default_rng([self.seed, step, start + offset])
      inputs.append(self.preprocessing.train(np.asarray(record['image']), rng))
      targets.append(int(record['label']))
    return {'inputs': np.stack(inputs), 'targets': np.asarray(targets, np.int32)}


def training_batches(
    step_batches: StepBatches, start_step: int, end_step: int, num_threads: int = 16, prefetch: int = 16
) -> Iterator[dict[str, np.ndarray]]:
  """Host batches for steps start_step .. end_step - 1, loaded ahead by grain's reader threads."""
  import grain  # Imported lazily: only streaming runs need it.

  dataset = grain.MapDataset.range(start_step, end_step).map(lambda step: step_batches[step])
  read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
  return iter(dataset.to_iter_dataset(read_options))


def evaluation_batch(
    records: Sequence[Any],
    preprocessing: Preprocessing,
    batch_size: int,
    batch: int,
    process_index: int = 0,
    process_count: int = 1,
) -> dict[str, np.ndarray]:
  """This host's slice of evaluation batch number `batch` (fixed-size batches over the whole split,
  in order; the last one padded, with 'weights' 0 on the padding). uint8 'inputs', like StepBatches."""
  if batch_size % process_count:
    raise ValueError(f'evaluation batch {batch_size} does not divide over {process_count} hosts')
  local = batch_size // process_count
  first = batch * batch_size + process_index * local
  inputs, targets, weights = [], [], []
  for position in range(first, first + local):
    valid = position < len(records)
    record = records[position if valid else 0]
    inputs.append(preprocessing.evaluate(np.asarray(record['image'])))
    targets.append(int(record['label']))
    weights.append(1.0 if valid else 0.0)
  return {
      'inputs': np.stack(inputs),
      'targets': np.asarray(targets, np.int32),
      'weights': np.asarray(weights, np.float32),
  }


def evaluation_batches(
    records: Sequence[Any],
    preprocessing: Preprocessing,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    num_threads: int = 16,
    prefetch: int = 16,
) -> Iterator[dict[str, np.ndarray]]:
  """Every `evaluation_batch` of the split in order, loaded ahead by grain's reader threads."""
  import grain  # Imported lazily: only streaming runs need it.

  num_batches = -(-len(records) // batch_size)
  dataset = grain.MapDataset.range(num_batches).map(
      lambda batch: evaluation_batch(records, preprocessing, batch_size, batch, process_index, process_count)
  )
  return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)))


def open_streaming(
    name: str, data_dir: str | None, seed: int, global_batch_size: int, process_index: int = 0, process_count: int = 1
) -> tuple[StepBatches, Sequence[Any]]:
  """The training StepBatches and the evaluation records of a tfds dataset (no download; a missing
  dataset raises DatasetNotPreparedError with the `tfds build` command that prepares it)."""
  dataset = streaming_dataset(name, data_dir)
  return dataset.step_batches(seed, global_batch_size, process_index, process_count), dataset.test_records


class _Prefix(Sequence):
  """The first `length` records of a random-access source."""

  def __init__(self, records: Sequence[Any], length: int):
    self.records, self.length = records, length

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int) -> Any:  # type: ignore[override]  # one record at a time, no slices
    if not 0 <= index < self.length:
      raise IndexError(index)
    return self.records[index]


@dataclasses.dataclass(frozen=True)
class StreamingDataset:
  """A classification dataset read from tfds files while training (never loaded whole): what the
  Trainer needs to know about it, and the records to stream from."""

  name: str
  train_records: Sequence[Any]
  test_records: Sequence[Any]
  preprocessing: Preprocessing
  task: str = 'classification'

  @property
  def num_train(self) -> int:
    """Number of training examples."""
    return len(self.train_records)

  @property
  def num_test(self) -> int:
    """Number of evaluation examples."""
    return len(self.test_records)

  @property
  def input_shape(self) -> tuple[int, ...]:
    """Shape of one model input."""
    return self.preprocessing.input_shape

  @property
  def num_classes(self) -> int:
    """Number of classes."""
    return self.preprocessing.num_classes

  @property
  def num_outputs(self) -> int:
    """Model output width."""
    return self.preprocessing.num_classes

  def step_batches(
      self, seed: int, global_batch_size: int, process_index: int = 0, process_count: int = 1
  ) -> StepBatches:
    """This host's training batches for batch-order `seed`."""
    return StepBatches(self.train_records, self.preprocessing, seed, global_batch_size, process_index, process_count)


def limited(records: Sequence[Any], limit: int | None, field: str, name: str, split: str) -> Sequence[Any]:
  """The first `limit` records (all of them when None; a ValueError naming dataset.<field> when there are fewer)."""
  if limit is None:
    return records
  if limit > len(records):
    raise ValueError(f"dataset.{field}={limit} exceeds the {len(records)} examples in {name}'s {split!r} split")
  return _Prefix(records, limit)


def build_streaming(dataset_config: Any) -> StreamingDataset:
  """Opens the tfds dataset `dataset_config.name` for streaming (no download; the first
  `dataset.num_train` / `dataset.num_test` examples when those are set)."""
  return streaming_dataset(
      dataset_config.name,
      dataset_config.data_dir or None,
      read_positive_int(dataset_config, 'num_train'),
      read_positive_int(dataset_config, 'num_test'),
  )


def streaming_dataset(
    name: str, data_dir: str | None, num_train: int | None = None, num_test: int | None = None
) -> StreamingDataset:
  """The tfds dataset `name` in `data_dir`, streamed (no download): its first `num_train` / `num_test`
  examples, or all of them where None."""
  if name not in PREPROCESSING:
    raise ValueError(f'dataset.name: no streaming pipeline for {name!r}; known: {", ".join(PREPROCESSING)}')
  evaluation_split = 'validation' if name == 'imagenet2012' else 'test'
  train_records = open_split(name, 'train', data_dir)
  test_records = open_split(name, evaluation_split, data_dir)
  return StreamingDataset(
      name=name,
      train_records=limited(train_records, num_train, 'num_train', name, 'train'),
      test_records=limited(test_records, num_test, 'num_test', name, evaluation_split),
      preprocessing=PREPROCESSING[name],
  )

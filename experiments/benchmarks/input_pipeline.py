"""The host input pipeline alone, no model (resnet_throughput's pipeline_* figures).

`data.pipeline`'s training and evaluation batches over mock tfds records, and over stand-in records
that decode a real-sized JPEG on every read: images/s after the first batch. `resnet_throughput`'s
docstring describes each figure.
"""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Sequence
from typing import Any, Iterator

import numpy as np

from lth_jax.data import pipeline

from experiments.benchmarks.harness import Report

MOCK_EXAMPLES = 10_000  # mock records are generated on each read, so the split length costs nothing
JPEG_SIZES = ((500, 375), (375, 500))  # (width, height): the most common ImageNet shapes


def images_per_second(batches: Iterator[dict[str, np.ndarray]], num_batches: int) -> dict[str, Any]:
  """Reads the first batch (warmup, not counted), then `num_batches` more; images/s over those."""
  started = time.perf_counter()
  first = next(batches)
  first_batch_s = time.perf_counter() - started
  started = previous = time.perf_counter()
  images, batch_times = 0, []
  for batch in itertools.islice(batches, num_batches):
    images += len(batch['targets'])
    now = time.perf_counter()
    batch_times.append(now - previous)
    previous = now
  seconds = previous - started
  fields = {
      'batch': len(first['targets']),
      'batches': len(batch_times),
      'images_per_s': images / seconds,
      'batch_ms': seconds / max(1, len(batch_times)) * 1e3,
      'first_batch_s': first_batch_s,
      'inputs_dtype': str(first['inputs'].dtype),
      'inputs_shape': 'x'.join(map(str, first['inputs'].shape)),
  }
  return {'fields': fields, 'raw': {'batch_seconds': batch_times, 'first_batch_seconds': first_batch_s}}


class JpegRecords(Sequence):
  """Stand-in imagenet2012 records that decode a real-sized JPEG with PIL on every read."""

  def __init__(self, length: int, seed: int = 0) -> None:
    from PIL import Image  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(seed)
    self.length, self.encoded = length, []
    for width, height in JPEG_SIZES:
      # Smooth noise (upsampled 8x) compresses to a realistic size (~50 KB), unlike pure noise.
      coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
      image = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
      buffer = io.BytesIO()
      image.save(buffer, 'JPEG', quality=90)
      self.encoded.append(buffer.getvalue())

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int) -> dict[str, Any]:
    from PIL import Image  # pylint: disable=import-outside-toplevel

    if not 0 <= index < self.length:
      raise IndexError(index)
    encoded = self.encoded[index % len(self.encoded)]
    return {'image': np.asarray(Image.open(io.BytesIO(encoded)).convert('RGB')), 'label': index % 1000}


def pipeline_figures(
    report: Report, cifar_batch: int, imagenet_batch: int, num_batches: int, num_threads: int
) -> dict[str, dict[str, Any]]:
  """Emits the pipeline lines; returns the training-pipeline figure of each dataset."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  training = {}
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    for dataset, batch_size in (('cifar10', cifar_batch), ('imagenet2012', imagenet_batch)):
      step_batches, evaluation_records = pipeline.open_streaming(dataset, None, seed=0, global_batch_size=batch_size)
      if dataset == 'imagenet2012':
        sides = [np.asarray(step_batches.records[index]['image']).shape[:2] for index in range(64)]
        print(
            f'# mock imagenet2012 records: mean image {np.mean(sides, 0)[0]:.0f}x{np.mean(sides, 0)[1]:.0f} '
            f'pixels (real ImageNet: ~400x350 JPEGs), not JPEG-decoded',
            flush=True,
        )
      result = images_per_second(
          pipeline.training_batches(step_batches, 0, num_batches + 1, num_threads=num_threads), num_batches
      )
      training[dataset] = report.emit(
          f'pipeline_{dataset}', raw=result['raw'], records='mock', threads=num_threads, **result['fields']
      )
      if dataset == 'imagenet2012':
        result = images_per_second(
            pipeline.evaluation_batches(
                evaluation_records, step_batches.preprocessing, batch_size, num_threads=num_threads
            ),
            num_batches,
        )
        report.emit(
            'pipeline_imagenet2012_eval', raw=result['raw'], records='mock', threads=num_threads, **result['fields']
        )
  step_batches = pipeline.StepBatches(
      JpegRecords(MOCK_EXAMPLES), pipeline.PREPROCESSING['imagenet2012'], 0, imagenet_batch
  )
  result = images_per_second(
      pipeline.training_batches(step_batches, 0, num_batches + 1, num_threads=num_threads), num_batches
  )
  training['imagenet2012_jpeg'] = report.emit(
      'pipeline_imagenet2012_jpeg',
      raw=result['raw'],
      records='jpeg_500x375',
      threads=num_threads,
      jpeg_kb=float(np.mean([len(encoded) for encoded in step_batches.records.encoded]) / 1e3),
      **result['fields'],
  )
  return training

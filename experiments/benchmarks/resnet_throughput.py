"""ResNet train-step throughput against the host input pipeline: which one limits a streaming run.

    python -m experiments.benchmarks.resnet_throughput [--quick] [--output=PATH] [--resnet50_batch=N]
        [--conv_kernel_gradient=auto|lax|patches] [--cifar_model=resnet20|resnet18|...]

Prints one line per figure, `name key=value ...` (lines starting with '#' are context), as
`experiments/benchmarks/trainer_speed.py` does:

  resnet18_cifar10      the model of configs/resnet18_cifar10.py (Frankle & Carbin's "Resnet-18": the
                        271K-weight CIFAR ResNet 'resnet20'; `--cifar_model=resnet18` for the 11M-weight
                        ImageNet-width one; `model=` on the line) on 32x32x3 at batch 128 (--quick: 16): one
                        jitted `train.train_step` with the library's masked optimizer (`optim.from_config`:
                        momentum SGD wrapped by `keep_pruned_at_zero`, 20%-density random mask) on random
                        device-resident data. Compiled once (compile_s: trace + lower + compile), one
                        warmup step, then the median of several steps, each timed with
                        `jax.block_until_ready`. One line per model dtype: float32 always, bfloat16 only
                        when the backend is not the CPU. `--conv_kernel_gradient=lax|patches` overrides
                        how convolution kernel gradients are computed (`kernel_gradient=` on each line).
  resnet50_imagenet     the same for ResNet-50 (1000 outputs) on 224x224x3: batch 32 on the CPU (--quick:
                        2), 256 on a GPU/TPU (--quick: 32); `--resnet50_batch` overrides both.
  pipeline_cifar10, pipeline_imagenet2012
                        the host input pipeline alone (no model): `data.pipeline.open_streaming` under
                        `tfds.testing.mock_data`, iterated with `pipeline.training_batches` at the models'
                        batch sizes; images/s after the first batch (warmup). Mock imagenet2012 records
                        are small random images (5-49 pixels a side) and nothing is JPEG-decoded, so this
                        is an upper bound for real data.
  pipeline_imagenet2012_eval
                        the same for `pipeline.evaluation_batches` (resize + center crop).
  pipeline_imagenet2012_jpeg
                        the training pipeline over stand-in records that PIL-decode a 500x375 or 375x500
                        JPEG on every read (as the tfds data source decodes real ImageNet records): closer
                        to the real cost per image.
  bottleneck            one line per dataset: the fastest model dtype's images/s against the training
                        pipeline's images/s, and which one is smaller (`limited_by=model|pipeline`).

`--output=PATH` also writes every figure (and the raw per-step / per-batch times) as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import itertools
import math
import os
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.benchmarks.builders import MASK_DENSITY
from experiments.benchmarks.builders import apply_mask
from experiments.benchmarks.builders import random_mask
from experiments.benchmarks.harness import Report
from experiments.benchmarks.harness import median
from experiments.benchmarks.harness import set_host_device_count
from lth_jax import masks as masks_lib
from lth_jax import models as models_lib
from lth_jax import optim
from lth_jax import results as results_lib
from lth_jax import train as train_lib
from lth_jax.data import pipeline
from lth_jax.models import convolution

FIGURE_NAMES = (
    'resnet18_cifar10',
    'resnet50_imagenet',
    'pipeline_cifar10',
    'pipeline_imagenet2012',
    'pipeline_imagenet2012_eval',
    'pipeline_imagenet2012_jpeg',
    'bottleneck',
)
MOCK_EXAMPLES = 10_000  # mock records are generated on each read, so the split length costs nothing
JPEG_SIZES = ((500, 375), (375, 500))  # (width, height): the most common ImageNet shapes


@dataclasses.dataclass(frozen=True)
class Settings:
  """How much to measure."""

  resnet18_batch: int
  resnet50_cpu_batch: int
  resnet50_accelerator_batch: int
  resnet18_cpu_steps: int  # timed steps after the warmup step (XLA:CPU: seconds per step)
  resnet50_cpu_steps: int
  accelerator_steps: int  # timed steps of either model on a GPU/TPU
  pipeline_batches: int  # timed batches after the first one


FULL = Settings(
    resnet18_batch=128,
    resnet50_cpu_batch=32,
    resnet50_accelerator_batch=256,
    resnet18_cpu_steps=5,
    resnet50_cpu_steps=3,
    accelerator_steps=20,
    pipeline_batches=100,
)
QUICK = Settings(
    resnet18_batch=16,
    resnet50_cpu_batch=2,
    resnet50_accelerator_batch=32,
    resnet18_cpu_steps=3,
    resnet50_cpu_steps=2,
    accelerator_steps=5,
    pipeline_batches=20,
)


def on_cpu() -> bool:
  """Whether the default backend is the CPU."""
  return jax.default_backend() == 'cpu'


# ------------------------------------------------------------------------------------------------
# Models: one jitted masked train step, compiled once, timed step by step.


def resnet_variables(model: Any, input_shape: tuple[int, ...], seed: int) -> tuple[Any, Any]:
  """Host (params, model_state) of the model's shapes, without compiling its initializer: kernels
  He-normal, batch-norm scales and running variances 1, everything else 0."""
  example = jnp.zeros((1, *input_shape), jnp.float32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), example, train=False))
  rng = np.random.default_rng(seed)

  def leaf(path, shape):
    name = masks_lib.path_to_names(path)[-1]
    if name == 'kernel':
      fan_in = math.prod(shape.shape[:-1])
      return (rng.standard_normal(shape.shape, np.float32) * math.sqrt(2.0 / fan_in)).astype(shape.dtype)
    if name in ('scale', 'var'):
      return np.ones(shape.shape, shape.dtype)
    return np.zeros(shape.shape, shape.dtype)

  return train_lib.split_variables(jax.tree_util.tree_map_with_path(leaf, shapes))


def masked_optimizer(total_steps: int) -> Any:
  """The library's masked optimizer as the ResNet configs describe it: momentum SGD 0.9, learning
  rate 0.1 with step decay, weight decay 1e-4; `update` takes `keep_mask=` and `step=`."""
  training = ml_collections.ConfigDict(
      {
          'optimizer': 'momentum',
          'momentum': 0.9,
          'learning_rate': 0.1,
          'weight_decay': 1e-4,
          'schedule': 'step',
          'decay_boundaries': (total_steps // 2, total_steps * 3 // 4),
          'decay_factor': 0.1,
      }
  )
  return optim.from_config(training, total_steps)


def time_train_step(
    model_name: str,
    num_outputs: int,
    input_shape: tuple[int, int, int],
    batch_size: int,
    dtype: str,
    timed_steps: int,
    conv_kernel_gradient: str = 'auto',
) -> dict[str, Any]:
  """Compiles one masked train step of `model_name` and times it on random device-resident data;
  returns the figure's fields and the raw step times."""
  model = models_lib.build(
      ml_collections.ConfigDict({'name': model_name, 'dtype': dtype, 'conv_kernel_gradient': conv_kernel_gradient}),
      num_outputs,
  )
  params, model_state = resnet_variables(model, input_shape, seed=0)
  keep_mask = random_mask(params, MASK_DENSITY, seed=1)
  params = apply_mask(params, keep_mask)
  optimizer = masked_optimizer(total_steps=100_000)
  rng = np.random.default_rng(2)
  inputs = jax.device_put(rng.standard_normal((batch_size, *input_shape), np.float32))
  targets = jax.device_put(rng.integers(0, num_outputs, batch_size).astype(np.int32))
  params = jax.device_put(params)
  state = train_lib.TrainState(
      step=jnp.asarray(0, jnp.int32),
      params=params,
      model_state=jax.device_put(model_state),
      opt_state=jax.jit(optimizer.init)(params),
      keep_mask=jax.device_put(keep_mask),
  )
  state = jax.block_until_ready(state)
  step = jax.jit(
      functools.partial(train_lib.train_step, model=model, optimizer=optimizer, task='classification'),
      donate_argnums=(0,),
  )

  started = time.perf_counter()
  compiled = step.lower(state, inputs, targets).compile()
  compile_s = time.perf_counter() - started

  def timed_step(state: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    state, sums = compiled(state, inputs, targets)
    jax.block_until_ready((state, sums))
    return state, time.perf_counter() - started

  state, warmup_s = timed_step(state)
  step_times = []
  for _ in range(timed_steps):
    state, seconds = timed_step(state)
    step_times.append(seconds)
  step_s = median(step_times)
  num_params = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
  fields = {
      'dtype': dtype,
      'kernel_gradient': convolution.resolve_kernel_gradient(conv_kernel_gradient),
      'batch': batch_size,
      'steps': timed_steps,
      'images_per_s': batch_size / step_s,
      'step_ms': step_s * 1e3,
      'min_step_ms': min(step_times) * 1e3,
      'compile_s': compile_s,
      'warmup_step_s': warmup_s,
      'params_m': num_params / 1e6,
      'mask_density': MASK_DENSITY,
  }
  return {'fields': fields, 'raw': {'step_seconds': step_times, 'warmup_seconds': warmup_s}}


def model_figures(
    report: Report,
    name: str,
    model_name: str,
    num_outputs: int,
    input_shape: tuple[int, int, int],
    batch_size: int,
    timed_steps: int,
    conv_kernel_gradient: str = 'auto',
) -> dict[str, Any]:
  """Emits the float32 (and, off the CPU, bfloat16) lines of one model; returns the fastest one."""
  dtypes = ['float32']
  if on_cpu():
    print(f'# {name}: bfloat16 is skipped on CPU (measured only on a GPU/TPU backend)', flush=True)
  else:
    dtypes.append('bfloat16')
  figures = []
  for dtype in dtypes:
    result = time_train_step(model_name, num_outputs, input_shape, batch_size, dtype, timed_steps, conv_kernel_gradient)
    figures.append(report.emit(name, raw=result['raw'], model=model_name, **result['fields']))
  return max(figures, key=lambda figure: figure['images_per_s'])


# ------------------------------------------------------------------------------------------------
# The host input pipeline alone.


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


def bottleneck_figure(
    report: Report, dataset: str, model: dict[str, Any], data: dict[str, Any], jpeg: dict[str, Any] | None = None
) -> None:
  """Emits which of the model and the training pipeline is slower on `dataset`."""
  model_rate, pipeline_rate = model['images_per_s'], data['images_per_s']
  fields = {
      'dataset': dataset,
      'model': model['model'],
      'model_dtype': model['dtype'],
      'batch': model['batch'],
      'model_images_per_s': model_rate,
      'pipeline_images_per_s': pipeline_rate,
      'model/pipeline': model_rate / pipeline_rate,
      'limited_by': 'model' if model_rate <= pipeline_rate else 'pipeline',
  }
  if jpeg is not None:
    fields.update(
        jpeg_pipeline_images_per_s=jpeg['images_per_s'],
        jpeg_limited_by='model' if model_rate <= jpeg['images_per_s'] else 'pipeline',
    )
  report.emit('bottleneck', **fields)


# ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  """Command-line flags."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--quick', action='store_true', help='a short run (smoke test; numbers are rough)')
  parser.add_argument('--output', help='also write the figures as JSON to this path')
  parser.add_argument(
      '--resnet50_batch',
      type=int,
      default=None,
      help='ResNet-50 (and imagenet pipeline) batch; default 32 on the CPU, 256 on a GPU/TPU ' '(--quick: 2 / 32)',
  )
  parser.add_argument(
      '--pipeline_threads',
      type=int,
      default=16,
      help="grain reader threads of the pipelines (the library's default: 16)",
  )
  parser.add_argument(
      '--cifar_model',
      default='resnet20',
      help="the model of the resnet18_cifar10 line (default: configs/resnet18_cifar10.py's, " 'resnet20)',
  )
  parser.add_argument(
      '--conv_kernel_gradient',
      default='auto',
      choices=convolution.KERNEL_GRADIENTS,
      help="the models' model.conv_kernel_gradient (lth_jax.models.convolution; 'auto': "
      'patches on the CPU, lax elsewhere)',
  )
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  """Runs every section, prints the figures, and writes --output."""
  args = parse_args(argv)
  settings = QUICK if args.quick else FULL
  set_host_device_count(None)  # one CPU device, whatever the caller's XLA_FLAGS (e.g. the tests')
  started = time.perf_counter()
  load_before = os.getloadavg()
  device = jax.devices()[0]
  cpu = on_cpu()
  print(
      f'# resnet_throughput{" --quick" if args.quick else ""}: jax {jax.__version__}, backend '
      f'{jax.default_backend()}, device kind {device.device_kind!r} ({len(jax.devices())} device), '
      f'{os.cpu_count()} CPU cores, load average {load_before[0]:.2f}',
      flush=True,
  )
  resnet50_batch = args.resnet50_batch or (settings.resnet50_cpu_batch if cpu else settings.resnet50_accelerator_batch)
  resnet18_steps = settings.resnet18_cpu_steps if cpu else settings.accelerator_steps
  resnet50_steps = settings.resnet50_cpu_steps if cpu else settings.accelerator_steps
  report = Report(FIGURE_NAMES)
  fastest: dict[str, dict[str, Any]] = {}
  data: dict[str, dict[str, Any]] = {}

  def resnet18_section() -> None:
    fastest['cifar10'] = model_figures(
        report,
        'resnet18_cifar10',
        args.cifar_model,
        10,
        (32, 32, 3),
        settings.resnet18_batch,
        resnet18_steps,
        args.conv_kernel_gradient,
    )

  def resnet50_section() -> None:
    fastest['imagenet2012'] = model_figures(
        report,
        'resnet50_imagenet',
        'resnet50',
        1000,
        (224, 224, 3),
        resnet50_batch,
        resnet50_steps,
        args.conv_kernel_gradient,
    )

  def pipeline_section() -> None:
    data.update(
        pipeline_figures(
            report, settings.resnet18_batch, resnet50_batch, settings.pipeline_batches, args.pipeline_threads
        )
    )

  sections: tuple[tuple[str, Callable[[], None]], ...] = (
      ('resnet18_cifar10', resnet18_section),
      ('resnet50_imagenet', resnet50_section),
      ('pipelines', pipeline_section),
  )
  for title, section in sections:
    section_started = time.perf_counter()
    section()
    print(f'# ({title}: {time.perf_counter() - section_started:.1f} s)', flush=True)

  if cpu:
    print(
        '# bottleneck: on this CPU host the model and the pipeline share the same cores, so a real run is '
        'slower than either figure alone',
        flush=True,
    )
  bottleneck_figure(report, 'cifar10', fastest['cifar10'], data['cifar10'])
  bottleneck_figure(report, 'imagenet2012', fastest['imagenet2012'], data['imagenet2012'], data['imagenet2012_jpeg'])
  runtime = time.perf_counter() - started
  load_after = os.getloadavg()
  print(f'# runtime {runtime:.1f} s; load average {load_after[0]:.2f} at the end', flush=True)
  if args.output:
    payload = {
        'quick': args.quick,
        'runtime_s': runtime,
        'jax_version': jax.__version__,
        'backend': jax.default_backend(),
        'device_kind': device.device_kind,
        'cpu_count': os.cpu_count(),
        'load_average_start': load_before,
        'load_average_end': load_after,
        'figures': report.figures,
        'raw': report.raw,
    }
    pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.output).write_text(results_lib.strict_json(payload, indent=2, default=str))
  return 0


if __name__ == '__main__':
  sys.exit(main())

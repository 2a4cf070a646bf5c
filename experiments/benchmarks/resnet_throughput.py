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
                        `jax.block_until_ready`. Each line carries the MFU fields (`chips.mfu_fields`:
                        device_kind, XLA's step_tflop, achieved_tflops, mfu against the device's published
                        peak and its source; `n/a` on a CPU), beside `compile_at_scale`'s prediction. One line per model dtype: float32 always, bfloat16 only
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
import os
import sys
from typing import Any, Callable

import jax

from lth_jax.models import convolution

from experiments.benchmarks import harness
from experiments.benchmarks import input_pipeline
from experiments.benchmarks import resnet_step

FIGURE_NAMES = (
    'resnet18_cifar10',
    'resnet50_imagenet',
    'pipeline_cifar10',
    'pipeline_imagenet2012',
    'pipeline_imagenet2012_eval',
    'pipeline_imagenet2012_jpeg',
    'bottleneck',
)


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


def bottleneck_figure(
    report: harness.Report,
    dataset: str,
    model: dict[str, Any],
    data: dict[str, Any],
    jpeg: dict[str, Any] | None = None,
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
  harness.set_host_device_count(None)  # one CPU device, whatever the caller's XLA_FLAGS (e.g. the tests')
  run = harness.Run()
  device = jax.devices()[0]
  cpu = resnet_step.on_cpu()
  print(
      f'# resnet_throughput{" --quick" if args.quick else ""}: jax {jax.__version__}, backend '
      f'{jax.default_backend()}, device kind {device.device_kind!r} ({len(jax.devices())} device), '
      f'{os.cpu_count()} CPU cores, load average {run.load_before[0]:.2f}',
      flush=True,
  )
  resnet50_batch = args.resnet50_batch or (settings.resnet50_cpu_batch if cpu else settings.resnet50_accelerator_batch)
  resnet18_steps = settings.resnet18_cpu_steps if cpu else settings.accelerator_steps
  resnet50_steps = settings.resnet50_cpu_steps if cpu else settings.accelerator_steps
  report = harness.Report(FIGURE_NAMES)
  fastest: dict[str, dict[str, Any]] = {}
  data: dict[str, dict[str, Any]] = {}

  def resnet18_section() -> None:
    fastest['cifar10'] = resnet_step.model_figures(
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
    fastest['imagenet2012'] = resnet_step.model_figures(
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
        input_pipeline.pipeline_figures(
            report, settings.resnet18_batch, resnet50_batch, settings.pipeline_batches, args.pipeline_threads
        )
    )

  sections: tuple[tuple[str, Callable[[], None]], ...] = (
      ('resnet18_cifar10', resnet18_section),
      ('resnet50_imagenet', resnet50_section),
      ('pipelines', pipeline_section),
  )
  run.sections(sections)

  if cpu:
    print(
        '# bottleneck: on this CPU host the model and the pipeline share the same cores, so a real run is '
        'slower than either figure alone',
        flush=True,
    )
  bottleneck_figure(report, 'cifar10', fastest['cifar10'], data['cifar10'])
  bottleneck_figure(report, 'imagenet2012', fastest['imagenet2012'], data['imagenet2012'], data['imagenet2012_jpeg'])
  run.finish()
  if args.output:
    run.write(
        args.output,
        args.quick,
        report,
        jax_version=jax.__version__,
        backend=jax.default_backend(),
        device_kind=device.device_kind,
        cpu_count=os.cpu_count(),
    )
  return 0


if __name__ == '__main__':
  sys.exit(main())

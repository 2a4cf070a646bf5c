"""How fast lth_jax trains, and where a lottery run spends its time (CPU-oriented).

    python -m experiments.benchmarks.trainer_speed [--quick] [--output=PATH]

Prints one line per figure, `name key=value ...` (lines starting with '#' are context):

  lenet300_100, conv4   time per train step with the library's masked optimizer
                        (`optim.keep_pruned_at_zero`, 20%-density random mask) and with the same optax
                        chain unwrapped (dense), both through `train.train_step` in the same kind of jit
                        program as the Trainer's chunk (LeNet: 64 steps per dispatch in a fori_loop over
                        device-resident data; Conv-4: one step per dispatch, no loop). Variants run
                        interleaved (round-robin, order reversed every other round); step times are
                        medians, masked/dense the median of the per-round ratios. The conv4 line also
                        times the dense step with XLA's own convolution kernel gradients
                        (`lax_gradient/patches`) and the masked step in a loop of 4 steps per dispatch
                        (`fused4/single`: step time in the loop over step time alone).
  matmul_peak           a jitted float32 NxN matmul, FLOP/s (median; interleaved with the LeNet runs).
  lenet300_100_flops    achieved FLOP/s of the LeNet train step, counted analytically (3x the forward
                        matmul FLOPs, i.e. backward = 2x forward), as a fraction of the matmul FLOP/s
                        measured next to it (median over rounds); XLA's own count
                        (`compiled.cost_analysis()['flops']`) and the fraction it gives are printed too.
  conv4_flops           the same for the Conv-4 step (analytic: 3x the forward FLOPs of its 3x3
                        convolutions and dense layers), against the matmul peak measured above.
                        Both lines also carry the MFU fields (`chips.mfu_fields`, the masked step):
                        device_kind, achieved_tflops, mfu against the device's published peak and its
                        source (`n/a` on a CPU), as `compile_at_scale` predicts them for a TPU.
  fusion_linear_2_200_1, fusion_lenet_mnist1d
                        steps/s of `train.Trainer.train` with steps_per_dispatch=1 vs 64 on tiny models.
  lottery_level, lottery_run
                        `lottery.run(configs/default.py, levels=1)` in a fresh subprocess (cold caches, as
                        a real run starts): the wall time of level 1 (ticket + reinit) and of the whole
                        run, and the share outside training (pruning, resetting, checkpointing,
                        evaluation, first-call compilation, the rest), timed by monkeypatching library
                        functions from this script (the library is not changed).
  data_parallel         one line per device count (1, 2, 4, 8 simulated CPU devices; --quick: 1 and 8),
                        one subprocess each with XLA_FLAGS=--xla_force_host_platform_device_count=N:
                        Trainer steps/s of LeNet-300-100 at global batch 64, and the max abs difference
                        of the params after 10 steps from the 1-device run (must be <= 1e-5, else the
                        script exits with status 1).

`--output=PATH` also writes every figure (and the raw repetition times) as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import jax

from experiments.benchmarks import data_parallel
from experiments.benchmarks import fusion
from experiments.benchmarks import harness
from experiments.benchmarks import lottery_timeline
from experiments.benchmarks import masked_step

WORKER_MODULE = 'experiments.benchmarks.trainer_speed'  # `--worker=...` runs this module again

# Every figure name this script prints (data_parallel once per device count).
FIGURE_NAMES = (
    'lenet300_100',
    'conv4',
    'matmul_peak',
    'lenet300_100_flops',
    'conv4_flops',
    'fusion_linear_2_200_1',
    'fusion_lenet_mnist1d',
    'lottery_level',
    'lottery_run',
    'data_parallel',
)


@dataclasses.dataclass(frozen=True)
class Settings:
  """How much to measure, section by section."""

  masked_step: masked_step.Settings
  fusion: fusion.Settings
  lottery: lottery_timeline.Settings
  data_parallel: data_parallel.Settings


FULL = Settings(
    masked_step=masked_step.Settings(
        lenet_reps=9,
        lenet_dispatches=4,
        conv_reps=5,
        conv_warmup=True,
        matmul_size=2048,
        flops_cost_analysis=True,
    ),
    fusion=fusion.Settings(fusion_steps=2048, fusion_reps=5),
    lottery=lottery_timeline.Settings(lottery_steps=None, lottery_eval_every=None, lottery_reps=3),
    data_parallel=data_parallel.Settings(parallel_steps=512, parallel_reps=5, device_counts=(1, 2, 4, 8)),
)
QUICK = Settings(
    masked_step=masked_step.Settings(
        lenet_reps=2,
        lenet_dispatches=1,
        conv_reps=1,
        conv_warmup=False,
        matmul_size=1024,
        flops_cost_analysis=False,
    ),
    fusion=fusion.Settings(fusion_steps=128, fusion_reps=1),
    lottery=lottery_timeline.Settings(lottery_steps=64, lottery_eval_every=32, lottery_reps=1),
    # --quick: the two ends of the device counts only
    data_parallel=data_parallel.Settings(parallel_steps=64, parallel_reps=1, device_counts=(1, 8)),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  """Command-line flags (the `--worker*` ones are for the subprocess workers this script starts)."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--quick', action='store_true', help='a short run (smoke test; numbers are rough)')
  parser.add_argument('--output', help='also write the figures as JSON to this path')
  parser.add_argument('--worker', choices=('parallel', 'lottery'), help=argparse.SUPPRESS)
  parser.add_argument('--worker_devices', type=int, default=1, help=argparse.SUPPRESS)
  parser.add_argument('--worker_output', help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  """Runs every section (or, with --worker, one subprocess worker's part), prints the figures and writes
  --output; returns 1 if the data-parallel parameters differ from the 1-device run's."""
  args = parse_args(argv)
  settings = QUICK if args.quick else FULL
  if args.worker:
    harness.set_host_device_count(args.worker_devices)
    if args.worker == 'parallel':
      data_parallel.parallel_worker(args.worker_devices, settings.data_parallel, args.worker_output)
    else:
      lottery_timeline.lottery_worker(settings.lottery, args.worker_output)
    return 0

  harness.set_host_device_count(None)  # one CPU device here, whatever the caller's XLA_FLAGS (e.g. the tests')
  run = harness.Run()
  print(
      f'# trainer_speed{" --quick" if args.quick else ""}: jax {jax.__version__} on '
      f'{jax.devices()[0].platform} ({len(jax.devices())} device), {os.cpu_count()} CPU cores, '
      f'load average {run.load_before[0]:.2f}',
      flush=True,
  )
  report = harness.Report(FIGURE_NAMES)
  workers = harness.Workers(WORKER_MODULE, ['--quick'] if args.quick else [], prefix='lth_trainer_speed_')
  sections = (
      (
          'masked vs dense, matmul peak, FLOP/s',
          lambda: masked_step.masked_vs_dense_figures(report, settings.masked_step),
      ),
      ('fused vs single dispatch', lambda: fusion.fusion_figures(report, settings.fusion)),
      ('lottery level', lambda: lottery_timeline.lottery_figures(report, settings.lottery, workers)),
      ('data parallel', lambda: data_parallel.parallel_figures(report, settings.data_parallel, workers)),
  )
  try:
    *_, params_match = run.sections(sections)
  finally:
    workers.cleanup()
  run.finish()
  if args.output:
    run.write(args.output, args.quick, report, jax_version=jax.__version__, cpu_count=os.cpu_count())
  if not params_match:
    print(
        f'# FAILED: data-parallel parameters differ from the 1-device run by more than '
        f'{data_parallel.PARAM_TOLERANCE}',
        file=sys.stderr,
        flush=True,
    )
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())

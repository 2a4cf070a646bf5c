"""Masked against dense train steps (trainer_speed's lenet300_100, conv4, matmul_peak and *_flops figures).

The library's masked optimizer and the same optax chain unwrapped, both through `train.train_step` in
jit programs built like the Trainer's chunk, timed interleaved with a float32 matmul whose FLOP/s is
the peak the steps' analytic FLOP/s are measured against. `trainer_speed`'s docstring describes each
figure.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax.data import arrays
from lth_jax import models as models_lib
from lth_jax.models import conv as conv_lib
from lth_jax.training import steps

from experiments.benchmarks import chips
from experiments.benchmarks.builders import FUSED_STEPS
from experiments.benchmarks.builders import LENET_SIZES
from experiments.benchmarks.builders import MASK_DENSITY
from experiments.benchmarks.builders import adam_optimizers
from experiments.benchmarks.builders import apply_mask
from experiments.benchmarks.builders import build_model
from experiments.benchmarks.builders import classification_data
from experiments.benchmarks.builders import random_mask
from experiments.benchmarks.builders import random_variables
from experiments.benchmarks.harness import Report
from experiments.benchmarks.harness import interleaved
from experiments.benchmarks.harness import median
from experiments.benchmarks.harness import paired_ratio
from experiments.benchmarks.harness import parallel_map


@dataclasses.dataclass(frozen=True)
class Settings:
  """How much to measure."""

  lenet_reps: int  # interleaved repetitions of masked / dense / matmul
  lenet_dispatches: int  # 64-step dispatches per LeNet repetition
  conv_reps: int  # Conv-4: repetitions of one step each (XLA:CPU conv gradients ~1-3 s/step)
  conv_warmup: bool  # one untimed step of each Conv-4 program after compiling
  matmul_size: int
  flops_cost_analysis: bool  # also compile single steps for XLA's FLOP count


def chunk_program(model: Any, optimizer: Any, task: str) -> Callable[..., Any]:
  """jit(state, train_inputs, train_targets, indices, num_active) -> (state, metric sums), built like
  the Trainer's chunk: each batch is gathered on the device by host-computed indices; one step and no
  loop when len(indices) == 1, else a fori_loop with a traced trip count carrying metric sums."""
  step = functools.partial(steps.train_step, model=model, optimizer=optimizer, task=task)

  def chunk(state, train_inputs, train_targets, indices, num_active):
    def run_step(state, step_indices):
      return step(state, train_inputs[step_indices], train_targets[step_indices])

    if indices.shape[0] == 1:
      return run_step(state, indices[0])
    zero_sums = jax.tree_util.tree_map(jnp.zeros_like, jax.eval_shape(run_step, state, indices[0])[1])

    def body(position, carry):
      state, sums = carry
      state, step_sums = run_step(state, indices[position])
      return state, jax.tree_util.tree_map(jnp.add, sums, step_sums)

    return jax.lax.fori_loop(0, num_active, body, (state, zero_sums))

  return jax.jit(chunk, donate_argnums=(0,))


@dataclasses.dataclass
class StepBench:
  """One model's masked and dense step programs on the same data, params and mask."""

  model: Any
  input_shape: tuple[int, ...]
  batch_size: int
  steps_per_dispatch: int
  params: Any = None
  keep_mask: Any = None
  optimizers: dict[str, Any] = dataclasses.field(default_factory=dict)
  programs: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self) -> None:
    params, _ = random_variables(self.model, self.input_shape, seed=0)
    self.keep_mask = random_mask(params, MASK_DENSITY, seed=1)
    self.params = apply_mask(params, self.keep_mask)
    self.optimizers = dict(zip(('masked', 'dense'), adam_optimizers(1e-3, 10_000)))
    self.programs = {
        name: chunk_program(self.model, optimizer, 'classification') for name, optimizer in self.optimizers.items()
    }
    dataset = classification_data(self.input_shape, num_train=max(10 * self.batch_size, 1000), num_test=1)
    self.train_inputs = jax.device_put(dataset.train_inputs)
    self.train_targets = jax.device_put(dataset.train_targets)
    indices = arrays.batch_indices(0, 0, self.steps_per_dispatch, dataset.num_train, self.batch_size)
    self.indices = jax.device_put(indices)

  def compile(self) -> float:
    """Compiles the masked and dense programs ahead of time, both at once (XLA releases the GIL while
    compiling); the timers then call the compiled executables. Returns the seconds taken."""
    started = time.perf_counter()
    lowered = {
        name: program.lower(
            self.state(name), self.train_inputs, self.train_targets, self.indices, np.int32(self.steps_per_dispatch)
        )
        for name, program in self.programs.items()
    }
    self.programs = dict(zip(lowered, parallel_map(lambda program: program.compile(), lowered.values())))
    return time.perf_counter() - started

  def state(self, name: str) -> steps.TrainState:
    """A fresh device state of the `name` ('masked' or 'dense') program: step 0, the masked params."""
    params = jax.device_put(self.params)
    state = steps.TrainState(
        step=jnp.asarray(0, jnp.int32),
        params=params,
        model_state={},
        opt_state=self.optimizers[name].init(params),
        keep_mask=jax.device_put(self.keep_mask),
    )
    return jax.block_until_ready(state)

  def timer(self, name: str, dispatches: int) -> Callable[[], float]:
    """A measurement: seconds per step over `dispatches` dispatches from a fresh state."""

    def measure() -> float:
      state = self.state(name)
      started = time.perf_counter()
      for _ in range(dispatches):
        state, _ = self.programs[name](
            state, self.train_inputs, self.train_targets, self.indices, np.int32(self.steps_per_dispatch)
        )
      jax.block_until_ready(state)
      return (time.perf_counter() - started) / (dispatches * self.steps_per_dispatch)

    return measure

  def xla_flops(self, name: str) -> float | None:
    """XLA's FLOP count of one train step (a single step, not the loop)."""
    step = functools.partial(steps.train_step, model=self.model, optimizer=self.optimizers[name], task='classification')
    inputs = self.train_inputs[: self.batch_size]
    targets = self.train_targets[: self.batch_size]
    return chips.xla_flops(jax.jit(step).lower(self.state(name), inputs, targets).compile())


def matmul_timer(size: int) -> Callable[[], float]:
  """A measurement: seconds of one jitted float32 `size`x`size` matmul (compiled before it returns)."""
  key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(key_a, (size, size), jnp.float32)
  b = jax.random.normal(key_b, (size, size), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  matmul(a, b).block_until_ready()

  def measure() -> float:
    started = time.perf_counter()
    matmul(a, b).block_until_ready()
    return time.perf_counter() - started

  return measure


def dense_forward_flops(layer_sizes: tuple[int, ...], batch_size: int) -> int:
  """Forward FLOPs of a stack of dense layers of `layer_sizes` (inputs first, outputs last)."""
  return sum(2 * batch_size * fan_in * fan_out for fan_in, fan_out in zip(layer_sizes, layer_sizes[1:]))


def conv_net_forward_flops(
    conv_widths: tuple[int, ...],
    dense_sizes: tuple[int, ...],
    image_size: int,
    channels: int,
    num_outputs: int,
    batch_size: int,
) -> int:
  """Forward FLOPs of a Conv-N network (3x3 'SAME' convolutions, 2x2 pooling after every second one)."""
  flops, size = 0, image_size
  for index, width in enumerate(conv_widths):
    flops += 2 * batch_size * size * size * channels * width * 9
    channels = width
    if index % 2 == 1:
      size //= 2
  return flops + dense_forward_flops((size * size * channels, *dense_sizes, num_outputs), batch_size)


def masked_vs_dense_figures(report: Report, settings: Settings) -> None:
  """Emits lenet300_100, matmul_peak, lenet300_100_flops, conv4 and conv4_flops."""
  batch = 60
  # LeNet-300-100 on 784 inputs: 64 fused steps per dispatch, interleaved with the matmul peak.
  lenet = StepBench(build_model('lenet', 10), (784,), batch, FUSED_STEPS)
  lenet.compile()
  timers = {name: lenet.timer(name, settings.lenet_dispatches) for name in ('masked', 'dense')}
  for measure in timers.values():  # warm up
    measure()
  timers['matmul'] = matmul_timer(settings.matmul_size)
  times = interleaved(timers, settings.lenet_reps)
  masked_s, dense_s, matmul_s = (median(times[name]) for name in ('masked', 'dense', 'matmul'))
  report.emit(
      'lenet300_100',
      raw=times,
      batch=batch,
      density=MASK_DENSITY,
      steps_per_dispatch=FUSED_STEPS,
      steps_per_rep=settings.lenet_dispatches * FUSED_STEPS,
      reps=settings.lenet_reps,
      masked_step_ms=masked_s * 1e3,
      dense_step_ms=dense_s * 1e3,
      **{
          'masked/dense': paired_ratio(times, 'masked', 'dense'),
          'masked/dense_of_medians': masked_s / dense_s,
          'masked/dense_of_best': min(times['masked']) / min(times['dense']),
      },
  )

  matmul_flop = 2 * settings.matmul_size**3
  peak = matmul_flop / matmul_s
  report.emit(
      'matmul_peak',
      n=settings.matmul_size,
      dtype='float32',
      reps=settings.lenet_reps,
      median_ms=matmul_s * 1e3,
      gflops=peak / 1e9,
      best_gflops=matmul_flop / min(times['matmul']) / 1e9,
  )

  forward = dense_forward_flops((784, *LENET_SIZES, 10), batch)
  analytic = 3 * forward
  fields: dict[str, Any] = {'batch': batch, 'count': 'analytic_3x_forward', 'analytic_mflop_per_step': analytic / 1e6}
  if settings.flops_cost_analysis:
    for name in ('dense', 'masked'):
      flops = lenet.xla_flops(name)
      fields[f'xla_cost_analysis_mflop_{name}'] = flops / 1e6 if flops else 'n/a'

  def fraction_of_peak(step_flop: float, name: str) -> float:
    """Median over rounds of (the step's FLOP/s) / (the matmul's FLOP/s measured next to it)."""
    return median(
        [
            (step_flop / step_s) / (matmul_flop / matmul_time)
            for step_s, matmul_time in zip(times[name], times['matmul'])
        ]
    )

  fields.update(
      dense_gflops=analytic / dense_s / 1e9,
      masked_gflops=analytic / masked_s / 1e9,
      dense_fraction_of_peak=fraction_of_peak(analytic, 'dense'),
      masked_fraction_of_peak=fraction_of_peak(analytic, 'masked'),
  )
  if isinstance(fields.get('xla_cost_analysis_mflop_dense'), float):
    fields['dense_fraction_of_peak_xla_count'] = fraction_of_peak(
        fields['xla_cost_analysis_mflop_dense'] * 1e6, 'dense'
    )
  fields.update(chips.mfu_fields(analytic, masked_s, jax.local_devices()[:1]))  # the masked step, analytic count
  report.emit('lenet300_100_flops', **fields)

  # Conv-4 on 32x32x3: one step per dispatch (no loop). Next to it: the same step with XLA's own
  # convolution kernel gradients ('lax'), and 4 steps fused in one dispatch.
  conv = StepBench(build_model('conv4', 10), (32, 32, 3), batch, 1)
  conv_lax = StepBench(build_model('conv4', 10, conv_kernel_gradient='lax'), (32, 32, 3), batch, 1)
  conv_fused = StepBench(build_model('conv4', 10), (32, 32, 3), batch, 4)
  compile_s = conv.compile()
  conv_lax.compile()
  conv_fused.compile()
  timers = {name: conv.timer(name, 1) for name in ('masked', 'dense')}
  timers['dense_lax_gradient'] = conv_lax.timer('dense', 1)
  timers['masked_fused4'] = conv_fused.timer('masked', 1)
  if settings.conv_warmup:
    for measure in timers.values():
      measure()
  times = interleaved(timers, settings.conv_reps)
  masked_s, dense_s = median(times['masked']), median(times['dense'])
  report.emit(
      'conv4',
      raw=times,
      batch=batch,
      density=MASK_DENSITY,
      steps_per_dispatch=1,
      reps=settings.conv_reps,
      masked_step_ms=masked_s * 1e3,
      dense_step_ms=dense_s * 1e3,
      kernel_gradient=models_lib.convolution.resolve_kernel_gradient(),
      dense_lax_gradient_step_ms=median(times['dense_lax_gradient']) * 1e3,
      **{'lax_gradient/patches': paired_ratio(times, 'dense_lax_gradient', 'dense')},
      masked_fused4_step_ms=median(times['masked_fused4']) * 1e3,
      **{'fused4/single': paired_ratio(times, 'masked_fused4', 'masked')},
      **{
          'masked/dense': paired_ratio(times, 'masked', 'dense'),
          'masked/dense_of_medians': masked_s / dense_s,
          'masked/dense_of_best': min(times['masked']) / min(times['dense']),
      },
      compile_both_s=compile_s,
  )
  conv_analytic = 3 * conv_net_forward_flops(conv_lib.CONV_WIDTHS[4], (256, 256), 32, 3, 10, batch)
  report.emit(
      'conv4_flops',
      batch=batch,
      count='analytic_3x_forward',
      analytic_gflop_per_step=conv_analytic / 1e9,
      dense_gflops=conv_analytic / dense_s / 1e9,
      masked_gflops=conv_analytic / masked_s / 1e9,
      dense_fraction_of_peak=conv_analytic / dense_s / peak,
      masked_fraction_of_peak=conv_analytic / masked_s / peak,
      **chips.mfu_fields(conv_analytic, masked_s, jax.local_devices()[:1]),  # the masked step, analytic count
  )

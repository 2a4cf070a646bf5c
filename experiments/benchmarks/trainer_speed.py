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
import concurrent.futures
import dataclasses
import functools
import importlib.util
import json
import math
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lth_jax import checkpoints
from lth_jax import branches as branches_lib
from lth_jax import data as data_lib
from lth_jax import lottery
from lth_jax import masks as masks_lib
from lth_jax import models as models_lib
from lth_jax import optim
from lth_jax import parallel
from lth_jax import results as results_lib
from lth_jax import train as train_lib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / 'configs' / 'default.py'
DEVICE_COUNT_FLAG = '--xla_force_host_platform_device_count'
DEVICE_COUNTS = (1, 2, 4, 8)
QUICK_DEVICE_COUNTS = (1, 8)  # --quick: the two ends only
PARAM_TOLERANCE = 1e-5
MASK_DENSITY = 0.2
FUSED_STEPS = 64
LENET_SIZES = (300, 100)

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
  """How much to measure."""

  lenet_reps: int  # interleaved repetitions of masked / dense / matmul
  lenet_dispatches: int  # 64-step dispatches per LeNet repetition
  conv_reps: int  # Conv-4: repetitions of one step each (XLA:CPU conv gradients ~1-3 s/step)
  conv_warmup: bool  # one untimed step of each Conv-4 program after compiling
  matmul_size: int
  flops_cost_analysis: bool  # also compile single steps for XLA's FLOP count
  fusion_steps: int  # steps per Trainer.train call
  fusion_reps: int
  lottery_steps: int | None  # None: the config's training.num_steps
  lottery_eval_every: int | None
  lottery_reps: int
  parallel_steps: int  # steps per timed Trainer.train call in each data-parallel worker
  parallel_reps: int


FULL = Settings(
    lenet_reps=9,
    lenet_dispatches=4,
    conv_reps=5,
    conv_warmup=True,
    matmul_size=2048,
    flops_cost_analysis=True,
    fusion_steps=2048,
    fusion_reps=5,
    lottery_steps=None,
    lottery_eval_every=None,
    lottery_reps=3,
    parallel_steps=512,
    parallel_reps=5,
)
QUICK = Settings(
    lenet_reps=2,
    lenet_dispatches=1,
    conv_reps=1,
    conv_warmup=False,
    matmul_size=1024,
    flops_cost_analysis=False,
    fusion_steps=128,
    fusion_reps=1,
    lottery_steps=64,
    lottery_eval_every=32,
    lottery_reps=1,
    parallel_steps=64,
    parallel_reps=1,
)


# ------------------------------------------------------------------------------------------------
# Plumbing: output, timing, device count.


def set_host_device_count(count: int | None) -> None:
  """Sets (or, with None, removes) the simulated CPU device count in XLA_FLAGS. Effective only before
  JAX starts its CPU backend (the first computation), which importing jax does not do."""
  flags = [flag for flag in os.environ.get('XLA_FLAGS', '').split() if not flag.startswith(DEVICE_COUNT_FLAG)]
  if count is not None:
    flags.append(f'{DEVICE_COUNT_FLAG}={count}')
  os.environ['XLA_FLAGS'] = ' '.join(flags)


def _format(value: Any) -> str:
  if isinstance(value, float):
    return f'{value:.4g}'
  return str(value)


class Report:
  """Prints figures as `name key=value ...` lines and keeps them for the JSON output."""

  def __init__(self, figure_names: tuple[str, ...] = FIGURE_NAMES) -> None:
    self.figure_names = figure_names
    self.figures: list[dict[str, Any]] = []
    self.raw: dict[str, Any] = {}

  def emit(self, name: str, raw: Any = None, **fields: Any) -> dict[str, Any]:
    """Prints one figure line and records it (with `raw` data for the JSON output)."""
    assert name in self.figure_names, name
    figure = {'figure': name, **fields}
    self.figures.append(figure)
    if raw is not None:
      self.raw[f'{name}:{len(self.figures) - 1}'] = raw
    print(' '.join([name, *(f'{key}={_format(value)}' for key, value in fields.items())]), flush=True)
    return figure


def parallel_map(function: Callable[[Any], Any], items: Any, workers: int = 2) -> list[Any]:
  """`map` over two threads: XLA compiles with the GIL released, so two programs compile at once."""
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    return list(pool.map(function, items))


def median(values: list[float]) -> float:
  return float(statistics.median(values))


def paired_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
  """Median over rounds of numerator/denominator, each ratio from runs adjacent in time (robust to
  load that changes between rounds, which a ratio of medians is not)."""
  return median([a / b for a, b in zip(times[numerator], times[denominator])])


def interleaved(measurements: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
  """Runs every measurement `reps` times round-robin, reversing the order every other round, so that
  background load and thermal drift hit every variant alike. Returns each run's result (seconds)."""
  names = list(measurements)
  results: dict[str, list[float]] = {name: [] for name in names}
  for rep in range(reps):
    for name in names if rep % 2 == 0 else names[::-1]:
      results[name].append(measurements[name]())
  return results


# ------------------------------------------------------------------------------------------------
# Models, data, optimizers.


def build_model(name: str, num_outputs: int, conv_kernel_gradient: str = 'auto') -> Any:
  config = ml_collections.ConfigDict(
      {
          'name': name,
          'hidden_sizes': LENET_SIZES,
          'hidden_size': 200,
          'dense_sizes': (256, 256),
          'conv_kernel_gradient': conv_kernel_gradient,
      }
  )
  return models_lib.build(config, num_outputs)


def random_variables(model: Any, input_shape: tuple[int, ...], seed: int) -> tuple[Any, Any]:
  """Host (params, model_state) of the model's shapes: kernels N(0, 1/fan_in), biases 0. (Values do not
  matter for speed; this avoids compiling the initializer, and is identical in every process.)"""
  example = jnp.zeros((1, *input_shape), jnp.float32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), example, train=False))
  rng = np.random.default_rng(seed)

  def leaf(path, shape):
    if masks_lib.path_to_names(path)[-1] == 'kernel':
      fan_in = math.prod(shape.shape[:-1])
      return (rng.standard_normal(shape.shape) / math.sqrt(fan_in)).astype(np.float32)
    return np.zeros(shape.shape, shape.dtype)

  return train_lib.split_variables(jax.tree_util.tree_map_with_path(leaf, shapes))


def random_mask(params: Any, density: float, seed: int) -> Any:
  """A keep mask with `density` of every prunable leaf kept at random (other leaves all kept)."""
  rng = np.random.default_rng(seed)
  prunable = masks_lib.prunable_tree(params)
  return jax.tree_util.tree_map(
      lambda leaf, is_prunable: rng.random(leaf.shape) < density if is_prunable else np.ones(leaf.shape, bool),
      params,
      prunable,
  )


def apply_mask(params: Any, keep_mask: Any) -> Any:
  return jax.tree_util.tree_map(lambda leaf, keep: np.where(keep, leaf, 0).astype(leaf.dtype), params, keep_mask)


def classification_data(
    input_shape: tuple[int, ...], num_train: int, num_test: int, seed: int = 0
) -> data_lib.ArrayDataset:
  rng = np.random.default_rng(seed)
  return data_lib.ArrayDataset(
      name='random',
      task='classification',
      train_inputs=rng.standard_normal((num_train, *input_shape)).astype(np.float32),
      train_targets=rng.integers(0, 10, num_train).astype(np.int32),
      test_inputs=rng.standard_normal((num_test, *input_shape)).astype(np.float32),
      test_targets=rng.integers(0, 10, num_test).astype(np.int32),
      num_classes=10,
  )


def sum_of_two_data(num_train: int, num_test: int, seed: int = 0) -> data_lib.ArrayDataset:
  rng = np.random.default_rng(seed)
  train_inputs = rng.uniform(-1, 1, (num_train, 2)).astype(np.float32)
  test_inputs = rng.uniform(1, 2, (num_test, 2)).astype(np.float32)
  return data_lib.ArrayDataset(
      name='sum_of_two',
      task='regression',
      train_inputs=train_inputs,
      train_targets=train_inputs.sum(1, keepdims=True),
      test_inputs=test_inputs,
      test_targets=test_inputs.sum(1, keepdims=True),
      num_classes=None,
  )


def adam_optimizers(learning_rate: float, total_steps: int) -> tuple[Any, Any]:
  """(masked, dense): the library's optimizer from the config (Adam, constant schedule, wrapped by
  `keep_pruned_at_zero`), and the same optax chain without the wrapper. Both take `step=`; the dense
  one ignores the `keep_mask=` that `train.train_step` passes."""
  training = ml_collections.ConfigDict({'optimizer': 'adam', 'learning_rate': learning_rate})
  masked = optim.from_config(training, total_steps)
  schedule = optim.learning_rate_schedule(learning_rate, total_steps)
  dense = optax.with_extra_args_support(optax.chain(optim.direction('adam'), optim.scale_by_step_schedule(schedule)))
  return masked, dense


# ------------------------------------------------------------------------------------------------
# 1 + 2: masked vs dense steps, matmul peak, FLOP/s.


def chunk_program(model: Any, optimizer: Any, task: str) -> Callable[..., Any]:
  """jit(state, train_inputs, train_targets, indices, num_active) -> (state, metric sums), built like
  the Trainer's chunk: each batch is gathered on the device by host-computed indices; one step and no
  loop when len(indices) == 1, else a fori_loop with a traced trip count carrying metric sums."""
  step = functools.partial(train_lib.train_step, model=model, optimizer=optimizer, task=task)

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
    indices = data_lib.batch_indices(0, 0, self.steps_per_dispatch, dataset.num_train, self.batch_size)
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

  def state(self, name: str) -> train_lib.TrainState:
    params = jax.device_put(self.params)
    state = train_lib.TrainState(
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
    step = functools.partial(
        train_lib.train_step, model=self.model, optimizer=self.optimizers[name], task='classification'
    )
    inputs = self.train_inputs[: self.batch_size]
    targets = self.train_targets[: self.batch_size]
    analysis = jax.jit(step).lower(self.state(name), inputs, targets).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):
      analysis = analysis[0] if analysis else None
    return float(analysis['flops']) if analysis and 'flops' in analysis else None


def matmul_timer(size: int) -> Callable[[], float]:
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
  conv_analytic = 3 * conv_net_forward_flops(models_lib.CONV_WIDTHS[4], (256, 256), 32, 3, 10, batch)
  report.emit(
      'conv4_flops',
      batch=batch,
      count='analytic_3x_forward',
      analytic_gflop_per_step=conv_analytic / 1e9,
      dense_gflops=conv_analytic / dense_s / 1e9,
      masked_gflops=conv_analytic / masked_s / 1e9,
      dense_fraction_of_peak=conv_analytic / dense_s / peak,
      masked_fraction_of_peak=conv_analytic / masked_s / peak,
  )


# ------------------------------------------------------------------------------------------------
# 3: fused steps vs one step per dispatch through the Trainer.


class FusionCase:
  """One tiny model in two Trainers: steps_per_dispatch 1 and 64."""

  def __init__(self, name: str, model: Any, dataset: data_lib.ArrayDataset, batch_size: int) -> None:
    self.name, self.dataset, self.batch_size = name, dataset, batch_size
    self.mesh = parallel.create_mesh(1)
    optimizer, _ = adam_optimizers(1e-3, 10**6)
    self.params, self.model_state = random_variables(model, dataset.input_shape, seed=0)
    self.keep_mask = jax.tree_util.tree_map(lambda leaf: np.ones(leaf.shape, bool), self.params)
    self.trainers = {
        dispatch: train_lib.Trainer(
            model, dataset, optimizer, self.mesh, batch_size, dispatch, eval_batch_size=dataset.num_test
        )
        for dispatch in (1, FUSED_STEPS)
    }

  def timer(self, dispatch: int, num_steps: int) -> Callable[[], float]:
    """A measurement: seconds per step of `Trainer.train` over `num_steps` steps from a fresh state
    (its one evaluation at the end included)."""
    trainer = self.trainers[dispatch]

    def measure() -> float:
      state = jax.block_until_ready(trainer.create_state(self.params, self.model_state, self.keep_mask, 0))
      started = time.perf_counter()
      trainer.train(state, num_steps, data_seed=0)
      return (time.perf_counter() - started) / num_steps

    return measure

  def host_prep(self, chunk: int, dispatches: int = 32) -> float:
    """Seconds of host work per dispatch that Trainer.train does before it: the batch indices
    (`data.batch_indices`) and their transfer (`parallel.put_batch`)."""
    started = time.perf_counter()
    for position in range(dispatches):
      indices = np.zeros((chunk, self.batch_size), np.int32)
      indices[:] = data_lib.batch_indices(0, position * chunk, chunk, self.dataset.num_train, self.batch_size)
      jax.block_until_ready(parallel.put_batch(indices, self.mesh, 1))
    return (time.perf_counter() - started) / dispatches


def fusion_figures(report: Report, settings: Settings) -> None:
  cases = [
      FusionCase('fusion_linear_2_200_1', build_model('linear', 1), sum_of_two_data(2000, 100), 32),
      FusionCase('fusion_lenet_mnist1d', build_model('lenet', 10), classification_data((40,), 4000, 100), 64),
  ]
  # Compile (and warm up) all four trainers, two at a time.
  parallel_map(lambda measure: measure(), [case.timer(dispatch, 1) for case in cases for dispatch in case.trainers])
  for case in cases:
    times = interleaved(
        {f'dispatch{dispatch}': case.timer(dispatch, settings.fusion_steps) for dispatch in case.trainers},
        settings.fusion_reps,
    )
    single, fused = median(times['dispatch1']), median(times[f'dispatch{FUSED_STEPS}'])
    report.emit(
        case.name,
        raw=times,
        batch=case.batch_size,
        steps=settings.fusion_steps,
        reps=settings.fusion_reps,
        dispatch1_steps_per_s=1 / single,
        **{
            f'dispatch{FUSED_STEPS}_steps_per_s': 1 / fused,
            'fused/single': paired_ratio(times, 'dispatch1', f'dispatch{FUSED_STEPS}'),
        },
        dispatch1_step_us=single * 1e6,
        **{f'dispatch{FUSED_STEPS}_step_us': fused * 1e6},
        host_prep_us_per_dispatch_1=case.host_prep(1) * 1e6,
        **{f'host_prep_us_per_dispatch_{FUSED_STEPS}': case.host_prep(FUSED_STEPS) * 1e6},
    )


# ------------------------------------------------------------------------------------------------
# 4: one lottery level of configs/default.py, timed by monkeypatching.


class Timeline:
  """Records (kind, start, end, info) of calls to patched library functions; `restore` undoes patches."""

  def __init__(self) -> None:
    self.events: list[tuple[str, float, float, Any]] = []
    self._patches: list[tuple[Any, str, Any]] = []

  def wrap(
      self,
      owner: Any,
      attribute: str,
      kind: str,
      before: Callable[..., None] | None = None,
      info: Callable[..., Any] | None = None,
  ) -> None:
    """Times every call of `owner.attribute` (skipped, if the library no longer has it)."""
    if not hasattr(owner, attribute):
      print(f'# note: {getattr(owner, "__name__", owner)}.{attribute} not found; {kind} not timed', flush=True)
      return
    original = getattr(owner, attribute)

    @functools.wraps(original)
    def timed(*args, **kwargs):
      if before is not None:
        before(*args, **kwargs)
      started = time.perf_counter()
      try:
        return original(*args, **kwargs)
      finally:
        self.events.append((kind, started, time.perf_counter(), info(*args, **kwargs) if info else None))

    self._patches.append((owner, attribute, original))
    setattr(owner, attribute, timed)

  def wrap_first_call(self, instance: Any, attribute: str, kind: str) -> None:
    """Times only the first call of a jitted program on `instance` (trace + compile + dispatch)."""
    program = getattr(instance, attribute, None)
    if program is None:
      return
    called = []

    def first_timed(*args, **kwargs):
      if called:
        return program(*args, **kwargs)
      called.append(True)
      started = time.perf_counter()
      try:
        return program(*args, **kwargs)
      finally:
        self.events.append((kind, started, time.perf_counter(), None))

    setattr(instance, attribute, first_timed)

  def restore(self) -> None:
    for owner, attribute, original in reversed(self._patches):
      setattr(owner, attribute, original)
    self._patches.clear()

  def total(self, kind: str, start: float, end: float) -> float:
    """Seconds of `kind` calls that started in [start, end)."""
    return sum(stop - begin for name, begin, stop, _ in self.events if name == kind and start <= begin < end)


def load_config(path: pathlib.Path) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location(f'_benchmark_config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def breakdown(timeline: Timeline, start: float, end: float) -> dict[str, float]:
  """Where [start, end) went: pure training (Trainer.train minus the evaluations and first-call
  compilations inside it) and everything outside it."""
  wall = end - start
  parts = {
      kind: timeline.total(kind, start, end)
      for kind in ('train', 'evaluate', 'compile_train', 'compile_eval', 'checkpoint', 'prune', 'reset', 'create_state')
  }
  # Trainer.evaluate contains the evaluation program's first call (its compilation).
  training = parts['train'] - parts['evaluate'] - parts['compile_train']
  other = wall - parts['train'] - parts['checkpoint'] - parts['prune'] - parts['reset'] - parts['create_state']
  return {
      'wall_s': wall,
      'training_s': training,
      'outside_training_s': wall - training,
      'outside_training_share': (wall - training) / wall if wall > 0 else float('nan'),
      'evaluate_s': parts['evaluate'] - parts['compile_eval'],
      'compile_s': parts['compile_train'] + parts['compile_eval'],
      'checkpoint_s': parts['checkpoint'],
      'prune_s': parts['prune'],
      'reset_s': parts['reset'],
      'create_state_s': parts['create_state'],
      'other_s': other,
  }


def one_lottery_run(config: ml_collections.ConfigDict) -> tuple[dict[str, float], dict[str, float], float]:
  """Runs the config once in a fresh workdir; returns (level-1 breakdown, whole-run breakdown, sum of
  the records' wall_seconds)."""
  timeline = Timeline()
  trainer_class = train_lib.Trainer
  original_init = trainer_class.__init__

  def init_and_instrument(self, *args, **kwargs):
    original_init(self, *args, **kwargs)
    timeline.wrap_first_call(self, '_train_chunk', 'compile_train')
    timeline.wrap_first_call(self, '_evaluate', 'compile_eval')

  workdir = tempfile.mkdtemp(prefix='lth_trainer_speed_')
  try:
    trainer_class.__init__ = init_and_instrument
    timeline.wrap(trainer_class, 'train', 'train')
    # Wait for the state first, so that outstanding training is not billed to evaluation.
    timeline.wrap(
        trainer_class,
        'evaluate',
        'evaluate',
        before=lambda self, state, *args, **kwargs: jax.block_until_ready(state.params),
    )
    timeline.wrap(trainer_class, 'create_state', 'create_state')
    timeline.wrap(checkpoints, 'save_tree', 'checkpoint')
    timeline.wrap(lottery.PruningPlan, 'next_mask', 'prune')
    timeline.wrap(branches_lib, 'start', 'reset')
    timeline.wrap(
        lottery.LevelRunner,
        'record',
        'record',  # pylint: disable=protected-access
        info=lambda self, member, *args, **kwargs: member.level,
    )
    started = time.perf_counter()
    results = lottery.run(config, workdir, log=lambda message: None)
    finished = time.perf_counter()
  finally:
    trainer_class.__init__ = original_init
    timeline.restore()
    shutil.rmtree(workdir, ignore_errors=True)
  record_ends = {}
  for kind, _, end, level in timeline.events:
    if kind == 'record':
      record_ends[level] = max(record_ends.get(level, 0.0), end)
  level0_end, level1_end = record_ends[0], record_ends[max(record_ends)]
  level = breakdown(timeline, level0_end, level1_end)
  whole = breakdown(timeline, started, finished)
  whole['level0_wall_s'] = level0_end - started
  whole['records'] = len(results.records)
  return level, whole, sum(record['wall_seconds'] for record in results.records)


def lottery_config(settings: Settings) -> ml_collections.ConfigDict:
  config = load_config(DEFAULT_CONFIG)
  config.pruning.levels = 1
  config.parallel.num_devices = 1
  if settings.lottery_steps is not None:
    config.training.num_steps = settings.lottery_steps
  if settings.lottery_eval_every is not None:
    config.training.eval_every = settings.lottery_eval_every
  return config


def lottery_worker(settings: Settings, output: str) -> None:
  """Runs in a fresh subprocess (cold caches, as a real run starts): one instrumented lottery run."""
  level, whole, records_wall = one_lottery_run(lottery_config(settings))
  pathlib.Path(output).write_text(json.dumps({'level': level, 'whole': whole, 'records_wall_s': records_wall}))


def lottery_figures(report: Report, settings: Settings, quick: bool) -> None:
  config = lottery_config(settings)
  runs = [run_worker('lottery', 1, quick)[0] for _ in range(settings.lottery_reps)]
  common = {
      'config': 'configs/default.py',
      'levels': 1,
      'steps': config.training.num_steps,
      'eval_every': config.training.eval_every,
      'branches': '+'.join(['ticket', *config.branches]),
      'reps': settings.lottery_reps,
  }

  def medians(parts: list[dict[str, float]]) -> dict[str, float]:
    return {key: median([part[key] for part in parts]) for key in parts[0]}

  level = medians([run['level'] for run in runs])
  report.emit('lottery_level', raw=[run['level'] for run in runs], level=1, **common, **level)
  whole = medians([run['whole'] for run in runs])
  whole['records'] = int(whole['records'])
  report.emit(
      'lottery_run',
      raw=[run['whole'] for run in runs],
      **common,
      **whole,
      records_wall_seconds_sum=median([run['records_wall_s'] for run in runs]),
  )


# ------------------------------------------------------------------------------------------------
# 5: data-parallel scaling over simulated CPU devices (one subprocess per device count).


def parallel_worker(devices: int, settings: Settings, output: str) -> None:
  """Runs in the subprocess: 10 steps whose parameters are saved for the check, then timed
  Trainer.train calls of `settings.parallel_steps` steps from a fresh state."""
  assert len(jax.devices()) == devices, (jax.devices(), os.environ.get('XLA_FLAGS'))
  batch_size = 64
  model = build_model('lenet', 10)
  dataset = classification_data((784,), num_train=100 * batch_size, num_test=batch_size)
  optimizer, _ = adam_optimizers(1e-3, 10**6)
  params, model_state = random_variables(model, dataset.input_shape, seed=0)
  keep_mask = random_mask(params, MASK_DENSITY, seed=1)
  params = apply_mask(params, keep_mask)
  trainer = train_lib.Trainer(
      model, dataset, optimizer, parallel.create_mesh(devices), batch_size, FUSED_STEPS, eval_batch_size=batch_size
  )

  def fresh_state() -> train_lib.TrainState:
    return jax.block_until_ready(trainer.create_state(params, model_state, keep_mask, 0))

  started = time.perf_counter()
  checked = parallel.to_host(trainer.train(fresh_state(), 10, data_seed=0).state.params)
  first_call_s = time.perf_counter() - started
  flat, _ = jax.tree_util.tree_flatten_with_path(checked)
  np.savez(output + '.npz', **{masks_lib.leaf_name(masks_lib.path_to_names(path)): leaf for path, leaf in flat})

  def measure() -> float:
    state = fresh_state()
    started = time.perf_counter()
    trainer.train(state, settings.parallel_steps, data_seed=0)
    return (time.perf_counter() - started) / settings.parallel_steps

  times = [measure() for _ in range(settings.parallel_reps)]
  pathlib.Path(output).write_text(json.dumps({'step_seconds': times, 'first_call_s': first_call_s}))


def run_worker(kind: str, devices: int, quick: bool) -> tuple[dict[str, Any], str, float]:
  """Runs this script as a `kind` worker in a subprocess with `devices` simulated CPU devices; returns
  (its JSON result, the path prefix of its files (deleted at exit), the subprocess's wall seconds)."""
  folder = tempfile.mkdtemp(prefix='lth_trainer_speed_')
  output = os.path.join(folder, 'result.json')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = ' '.join(
      [flag for flag in env.get('XLA_FLAGS', '').split() if not flag.startswith(DEVICE_COUNT_FLAG)]
      + [f'{DEVICE_COUNT_FLAG}={devices}']
  )
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get('PYTHONPATH')]))
  command = [
      sys.executable,
      '-m',
      'experiments.benchmarks.trainer_speed',
      f'--worker={kind}',
      f'--worker_devices={devices}',
      f'--worker_output={output}',
      *(['--quick'] if quick else []),
  ]
  started = time.perf_counter()
  completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
  process_s = time.perf_counter() - started
  if completed.returncode != 0 or not os.path.exists(output):
    sys.stderr.write(completed.stdout + completed.stderr)
    raise RuntimeError(f'{kind} worker with {devices} device(s) failed (exit {completed.returncode})')
  _WORKER_FOLDERS.append(folder)
  return json.loads(pathlib.Path(output).read_text()), output, process_s


_WORKER_FOLDERS: list[str] = []


def parallel_figures(report: Report, settings: Settings, quick: bool) -> bool:
  """Returns whether every device count matched the 1-device parameters to PARAM_TOLERANCE."""
  all_match, reference, one_device_step_s = True, None, None
  for devices in QUICK_DEVICE_COUNTS if quick else DEVICE_COUNTS:
    result, output, process_s = run_worker('parallel', devices, quick)
    with np.load(output + '.npz') as loaded:
      params = {name: loaded[name] for name in loaded.files}
    if reference is None:
      reference = params
    max_diff = max(float(np.max(np.abs(params[name] - reference[name]))) for name in reference)
    match = max_diff <= PARAM_TOLERANCE
    all_match &= match
    step_s = median(result['step_seconds'])
    one_device_step_s = one_device_step_s or step_s
    report.emit(
        'data_parallel',
        raw=result,
        devices=devices,
        global_batch=64,
        per_device_batch=64 // devices,
        steps=settings.parallel_steps,
        reps=settings.parallel_reps,
        steps_per_s=1 / step_s,
        step_ms=step_s * 1e3,
        speedup_vs_1=one_device_step_s / step_s,
        max_abs_diff_vs_1=max_diff,
        tolerance=PARAM_TOLERANCE,
        params_match=match,
        first_call_s=result['first_call_s'],
        process_s=process_s,
    )
  return all_match


# ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--quick', action='store_true', help='a short run (smoke test; numbers are rough)')
  parser.add_argument('--output', help='also write the figures as JSON to this path')
  parser.add_argument('--worker', choices=('parallel', 'lottery'), help=argparse.SUPPRESS)
  parser.add_argument('--worker_devices', type=int, default=1, help=argparse.SUPPRESS)
  parser.add_argument('--worker_output', help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  settings = QUICK if args.quick else FULL
  if args.worker:
    set_host_device_count(args.worker_devices)
    if args.worker == 'parallel':
      parallel_worker(args.worker_devices, settings, args.worker_output)
    else:
      lottery_worker(settings, args.worker_output)
    return 0

  set_host_device_count(None)  # one CPU device here, whatever the caller's XLA_FLAGS (e.g. the tests')
  started = time.perf_counter()
  load_before = os.getloadavg()
  print(
      f'# trainer_speed{" --quick" if args.quick else ""}: jax {jax.__version__} on '
      f'{jax.devices()[0].platform} ({len(jax.devices())} device), {os.cpu_count()} CPU cores, '
      f'load average {load_before[0]:.2f}',
      flush=True,
  )
  report = Report()
  try:
    sections = (
        ('masked vs dense, matmul peak, FLOP/s', lambda: masked_vs_dense_figures(report, settings)),
        ('fused vs single dispatch', lambda: fusion_figures(report, settings)),
        ('lottery level', lambda: lottery_figures(report, settings, args.quick)),
        ('data parallel', lambda: parallel_figures(report, settings, args.quick)),
    )
    for title, section in sections:
      section_started = time.perf_counter()
      params_match = section()
      print(f'# ({title}: {time.perf_counter() - section_started:.1f} s)', flush=True)
  finally:
    for folder in _WORKER_FOLDERS:
      shutil.rmtree(folder, ignore_errors=True)
  runtime = time.perf_counter() - started
  load_after = os.getloadavg()
  print(f'# runtime {runtime:.1f} s; load average {load_after[0]:.2f} at the end', flush=True)
  if args.output:
    payload = {
        'quick': args.quick,
        'runtime_s': runtime,
        'jax_version': jax.__version__,
        'cpu_count': os.cpu_count(),
        'load_average_start': load_before,
        'load_average_end': load_after,
        'figures': report.figures,
        'raw': report.raw,
    }
    pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.output).write_text(results_lib.strict_json(payload, indent=2, default=str))
  if not params_match:
    print(
        f'# FAILED: data-parallel parameters differ from the 1-device run by more than {PARAM_TOLERANCE}',
        file=sys.stderr,
        flush=True,
    )
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())

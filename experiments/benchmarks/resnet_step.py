"""ResNet train steps timed on random device-resident data (resnet_throughput's resnet* figures).

One jitted `train.train_step` with the library's masked optimizer (momentum SGD as the ResNet configs
describe it) and a random mask, compiled once, then timed step by step. `resnet_throughput`'s docstring
describes each figure.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lth_jax import config as config_lib
from lth_jax import masks as masks_lib
from lth_jax import models as models_lib
from lth_jax.models import convolution
from lth_jax import optim
from lth_jax.training import steps

from experiments.benchmarks import chips
from experiments.benchmarks.builders import MASK_DENSITY
from experiments.benchmarks.builders import apply_mask
from experiments.benchmarks.builders import random_mask
from experiments.benchmarks.harness import Report
from experiments.benchmarks.harness import median


def on_cpu() -> bool:
  """Whether the default backend is the CPU."""
  return jax.default_backend() == 'cpu'


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

  return steps.split_variables(jax.tree_util.tree_map_with_path(leaf, shapes))


def masked_optimizer(total_steps: int) -> Any:
  """The library's masked optimizer as the ResNet configs describe it: momentum SGD 0.9, learning
  rate 0.1 with step decay, weight decay 1e-4; `update` takes `keep_mask=` and `step=`."""
  training = config_lib.training_spec(
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
      config_lib.model_spec(
          ml_collections.ConfigDict({'name': model_name, 'dtype': dtype, 'conv_kernel_gradient': conv_kernel_gradient})
      ),
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
  state = steps.TrainState(
      step=jnp.asarray(0, jnp.int32),
      params=params,
      model_state=jax.device_put(model_state),
      opt_state=jax.jit(optimizer.init)(params),
      keep_mask=jax.device_put(keep_mask),
  )
  state = jax.block_until_ready(state)
  step = jax.jit(
      functools.partial(steps.train_step, model=model, optimizer=optimizer, task='classification'),
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
      **chips.mfu_fields(chips.xla_flops(compiled), step_s, jax.local_devices()[:1]),
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

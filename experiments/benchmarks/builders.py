"""What the benchmarks train: models, random data, random masks, optimizers and configs, built without
compiling anything (the same values in every process)."""

from __future__ import annotations

import importlib.util
import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lth_jax.data import arrays
from lth_jax import masks as masks_lib
from lth_jax import models as models_lib
from lth_jax import config as config_lib
from lth_jax import optim
from lth_jax.training import steps

from experiments.benchmarks import harness

DEFAULT_CONFIG = harness.REPO_ROOT / 'configs' / 'default.py'
MASK_DENSITY = 0.2  # the share of every prunable leaf that the benchmarks' random masks keep
FUSED_STEPS = 64  # the steps per dispatch of the benchmarks' fused programs
LENET_SIZES = (300, 100)


def build_model(name: str, num_outputs: int, conv_kernel_gradient: str = 'auto') -> Any:
  """The library's model `name` with the benchmarks' sizes (LeNet-300-100, Conv-N dense 256-256)."""
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

  return steps.split_variables(jax.tree_util.tree_map_with_path(leaf, shapes))


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
  """Host params with the leaves that `keep_mask` prunes set to zero."""
  return jax.tree_util.tree_map(lambda leaf, keep: np.where(keep, leaf, 0).astype(leaf.dtype), params, keep_mask)


def classification_data(
    input_shape: tuple[int, ...], num_train: int, num_test: int, seed: int = 0
) -> arrays.ArrayDataset:
  """Standard-normal inputs of `input_shape` with random labels of 10 classes."""
  rng = np.random.default_rng(seed)
  return arrays.ArrayDataset(
      name='random',
      task='classification',
      train_inputs=rng.standard_normal((num_train, *input_shape)).astype(np.float32),
      train_targets=rng.integers(0, 10, num_train).astype(np.int32),
      test_inputs=rng.standard_normal((num_test, *input_shape)).astype(np.float32),
      test_targets=rng.integers(0, 10, num_test).astype(np.int32),
      num_classes=10,
  )


def sum_of_two_data(num_train: int, num_test: int, seed: int = 0) -> arrays.ArrayDataset:
  """Regression of the sum of two inputs: train inputs in [-1, 1], test inputs in [1, 2]."""
  rng = np.random.default_rng(seed)
  train_inputs = rng.uniform(-1, 1, (num_train, 2)).astype(np.float32)
  test_inputs = rng.uniform(1, 2, (num_test, 2)).astype(np.float32)
  return arrays.ArrayDataset(
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
  training = config_lib.training_spec({'optimizer': 'adam', 'learning_rate': learning_rate})
  masked = optim.from_config(training, total_steps)
  schedule = optim.learning_rate_schedule(learning_rate, total_steps)
  dense = optax.with_extra_args_support(optax.chain(optim.direction('adam'), optim.scale_by_step_schedule(schedule)))
  return masked, dense


def load_config(path: pathlib.Path) -> ml_collections.ConfigDict:
  """`get_config()` of the config file at `path` (e.g. DEFAULT_CONFIG)."""
  spec = importlib.util.spec_from_file_location(f'_benchmark_config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()

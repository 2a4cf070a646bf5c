"""Tests for lth_jax.models: the registry, output shapes, parameter names and parameter counts."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lth_jax import config as config_lib
from lth_jax import models


def build(name, num_outputs, **fields):
  return models.build(config_lib.model_spec(ml_collections.ConfigDict(dict(name=name, **fields))), num_outputs)


def init_params(model, input_shape, batch=2):
  """Really initializes `model` and runs it on a random batch; returns (params, outputs)."""
  inputs = jax.random.normal(jax.random.PRNGKey(1), (batch, *input_shape))
  variables = model.init(jax.random.PRNGKey(0), inputs)
  assert set(variables) == {'params'}  # no batch statistics or other collections
  return variables['params'], model.apply(variables, inputs)


def abstract_init(model, input_shape, batch=2):
  """Shapes of (params, outputs) from tracing init and apply, without compiling or computing anything
  (initializing the 4M-weight Conv-2 for real takes seconds on CPU)."""
  inputs = jnp.zeros((batch, *input_shape), jnp.float32)

  def init_and_apply():
    variables = model.init(jax.random.PRNGKey(0), inputs)
    return variables, model.apply(variables, inputs)

  variables, outputs = jax.eval_shape(init_and_apply)
  assert set(variables) == {'params'}  # no batch statistics or other collections
  return variables['params'], outputs


def param_count(params):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))


def param_shapes(params):
  return jax.tree_util.tree_map(lambda leaf: tuple(leaf.shape), params)


@pytest.mark.parametrize(
    'name, input_shape, num_outputs',
    [
        ('linear', (2,), 1),
        ('linear', (2,), 4),
        ('lenet', (40,), 10),
        ('lenet', (28, 28, 1), 10),
        ('lenet', (28, 28, 1), 7),
        ('conv2', (32, 32, 3), 10),
        ('conv4', (32, 32, 3), 10),
        ('conv6', (32, 32, 3), 5),
    ],
)
def test_output_shape(name, input_shape, num_outputs):
  _, outputs = abstract_init(build(name, num_outputs), input_shape, batch=3)
  assert outputs.shape == (3, num_outputs)
  assert outputs.dtype == jnp.float32


@pytest.mark.parametrize(
    'name, input_shape',
    [
        ('linear', (2,)),
        ('lenet', (28, 28, 1)),
        ('conv2', (32, 32, 3)),
        ('conv6', (32, 32, 3)),
    ],
)
def test_forward_pass_computes_finite_example_dependent_outputs(name, input_shape):
  """A real forward pass, with random parameters of the initialized shapes (a real init of the large
  models compiles for seconds on CPU; `test_init_*` below run real initializations)."""
  model = build(name, 3)
  shapes, _ = abstract_init(model, input_shape)
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map(
      lambda leaf: (rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(np.float32), shapes
  )
  inputs = rng.normal(size=(4, *input_shape)).astype(np.float32)
  outputs = jax.jit(model.apply)({'params': params}, inputs)
  assert outputs.shape == (4, 3)
  assert bool(jnp.all(jnp.isfinite(outputs)))
  assert float(jnp.abs(outputs[0] - outputs[1]).max()) > 0.0  # different inputs, different outputs


def test_registry_names():
  assert {'linear', 'lenet', 'conv2', 'conv4', 'conv6'} <= set(models.REGISTRY)


def test_linear_has_two_bias_free_layers():
  params, _ = abstract_init(build('linear', 1), (2,))
  assert param_shapes(params) == {'dense_0': {'kernel': (2, 200)}, 'output': {'kernel': (200, 1)}}
  params, _ = abstract_init(build('linear', 1, hidden_size=7), (2,))
  assert param_shapes(params) == {'dense_0': {'kernel': (2, 7)}, 'output': {'kernel': (7, 1)}}


def test_linear_is_linear():
  """No bias, no nonlinearity: f(a x + b y) = a f(x) + b f(y)."""
  model = build('linear', 3)
  params, _ = init_params(model, (2,))
  x, y = jnp.array([[1.0, 2.0]]), jnp.array([[-3.0, 0.5]])

  def apply(inputs):
    return model.apply({'params': params}, inputs)

  np.testing.assert_allclose(apply(2.0 * x - 3.0 * y), 2.0 * apply(x) - 3.0 * apply(y), rtol=1e-5, atol=1e-6)


def test_lenet_parameter_names_and_shapes():
  params, _ = abstract_init(build('lenet', 10), (28, 28, 1))
  assert param_shapes(params) == {
      'dense_0': {'kernel': (784, 300), 'bias': (300,)},
      'dense_1': {'kernel': (300, 100), 'bias': (100,)},
      'output': {'kernel': (100, 10), 'bias': (10,)},
  }
  params, _ = abstract_init(build('lenet', 3, hidden_sizes=(8, 6, 4)), (40,))
  assert set(params) == {'dense_0', 'dense_1', 'dense_2', 'output'}
  assert params['dense_0']['kernel'].shape == (40, 8)


def test_lenet_300_100_parameter_count():
  # dense_0: 784 * 300 + 300 = 235,500
  # dense_1: 300 * 100 + 100 =  30,100
  # output:  100 * 10  + 10  =   1,010
  # total                    = 266,610
  params, _ = abstract_init(build('lenet', 10), (28, 28, 1))
  assert param_count(params) == 266_610
  params, _ = abstract_init(build('lenet', 10), (784,))  # flat inputs give the same network
  assert param_count(params) == 266_610


@pytest.mark.parametrize(
    'name, conv_names',
    [
        ('conv2', ['conv_0', 'conv_1']),
        ('conv4', ['conv_0', 'conv_1', 'conv_2', 'conv_3']),
        ('conv6', ['conv_0', 'conv_1', 'conv_2', 'conv_3', 'conv_4', 'conv_5']),
    ],
)
def test_conv_parameter_names(name, conv_names):
  params, _ = abstract_init(build(name, 10), (32, 32, 3))
  assert set(params) == {*conv_names, 'dense_0', 'dense_1', 'output'}
  for layer in params.values():
    assert set(layer) == {'kernel', 'bias'}
  assert params[conv_names[0]]['kernel'].shape == (3, 3, 3, 64)
  assert params['output']['kernel'].shape == (256, 10)


def test_conv2_parameter_count_on_cifar10():
  # conv_0:  3 * 3 * 3  * 64 + 64     =     1,792
  # conv_1:  3 * 3 * 64 * 64 + 64     =    36,928
  # 2x2 max pool: 32x32x64 -> 16x16x64 = 16,384 features
  # dense_0: 16,384 * 256 + 256       = 4,194,560
  # dense_1: 256 * 256 + 256          =    65,792
  # output:  256 * 10 + 10            =     2,570
  # total                             = 4,301,642
  params, _ = abstract_init(build('conv2', 10), (32, 32, 3))
  assert param_count(params) == 4_301_642
  assert params['dense_0']['kernel'].shape == (16_384, 256)


def test_conv_dense_sizes_are_configurable():
  params, _ = abstract_init(build('conv4', 10, dense_sizes=(32,)), (32, 32, 3))
  assert set(params) == {'conv_0', 'conv_1', 'conv_2', 'conv_3', 'dense_0', 'output'}
  # Two poolings: 32 -> 8, with 128 filters.
  assert params['dense_0']['kernel'].shape == (8 * 8 * 128, 32)


def test_init_is_deterministic_in_the_seed_and_finite():
  model = build('lenet', 3, hidden_sizes=(16, 8))
  inputs = jnp.zeros((4, 28, 28, 1))
  init = jax.jit(model.init)
  first, again, other = (init(jax.random.PRNGKey(seed), inputs) for seed in (3, 3, 4))
  jax.tree_util.tree_map(np.testing.assert_array_equal, first, again)
  assert not np.array_equal(first['params']['dense_0']['kernel'], other['params']['dense_0']['kernel'])
  for path, leaf in jax.tree_util.tree_flatten_with_path(first['params'])[0]:
    assert bool(jnp.all(jnp.isfinite(leaf)))
    name = path[-1].key
    assert bool(jnp.any(leaf != 0.0)) == (name == 'kernel'), path  # random kernels, zero biases


def test_unknown_model_name_raises():
  with pytest.raises(ValueError, match=r'model\.name'):
    build('resnet_9000', 10)

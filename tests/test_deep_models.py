"""VGG and ResNet models: parameter counts, shapes, batch-norm state, bfloat16 compute, pruning scope."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lth_jax import config as config_lib
from lth_jax.data import arrays
from lth_jax import masks as masks_lib
from lth_jax import models as models_lib
from lth_jax import optim
from lth_jax.training import parallel
from lth_jax.training import steps
from lth_jax.training import trainer as trainer_lib


def _shapes(name, input_shape, num_outputs=10, dtype='float32'):
  model = models_lib.build(
      config_lib.model_spec(ml_collections.ConfigDict({'name': name, 'dtype': dtype})), num_outputs
  )
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((2, *input_shape)), train=False))
  outputs = jax.eval_shape(
      lambda: model.apply(
          jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), variables), jnp.zeros((2, *input_shape))
      )
  )
  return variables, outputs


@pytest.mark.parametrize(
    'name, input_shape, num_outputs, expected_parameters',
    [
        ('vgg19', (32, 32, 3), 10, 20_035_018),  # 20.0M: the CIFAR VGG-19 of Frankle et al.
        ('vgg16', (32, 32, 3), 10, 14_724_042),  # bias-free convs + batch norm + dense
        ('vgg11', (32, 32, 3), 10, 9_228_362),
        ('resnet20', (32, 32, 3), 10, 272_474),  # 0.27M (He et al. 2016, Table 6)
        ('resnet56', (32, 32, 3), 10, 855_770),  # 0.85M
        ('resnet18', (32, 32, 3), 10, 11_173_962),  # 11.2M
        ('resnet50', (224, 224, 3), 1000, 25_557_032),  # 25.6M: torchvision's ResNet-50 count
    ],
)
def test_parameter_counts_and_output_shapes(name, input_shape, num_outputs, expected_parameters):
  variables, outputs = _shapes(name, input_shape, num_outputs)
  assert sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(variables['params'])) == (
      expected_parameters
  )
  assert outputs.shape == (2, num_outputs) and outputs.dtype == jnp.float32
  assert 'batch_stats' in variables


def test_only_kernels_are_prunable_and_stem_and_output_can_be_excluded():
  variables, _ = _shapes('resnet20', (32, 32, 3))
  prunable = masks_lib.prunable_tree(variables['params'], excluded_layers=('stem_conv', 'output'))
  flat = {
      masks_lib.leaf_name(masks_lib.path_to_names(path)): flag
      for path, flag in jax.tree_util.tree_flatten_with_path(prunable)[0]
  }
  assert flat['stage_0_block_0/conv_0/kernel'] and flat['stage_1_block_0/shortcut_conv/kernel']
  assert not flat['stem_conv/kernel'] and not flat['output/kernel']
  assert not flat['stage_0_block_0/norm_0/scale'] and not flat['output/bias']


def test_bfloat16_compute_keeps_float32_parameters():
  variables, outputs = _shapes('vgg11', (32, 32, 3), dtype='bfloat16')
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(variables['params']))
  assert outputs.dtype == jnp.float32
  with pytest.raises(ValueError, match='model.dtype'):
    _shapes('vgg11', (32, 32, 3), dtype='float8')


@pytest.mark.slow
def test_training_updates_batch_statistics_and_evaluation_uses_them():
  rng = np.random.default_rng(0)
  dataset = arrays.ArrayDataset(
      'random',
      'classification',
      rng.normal(2.0, 3.0, (32, 32, 32, 3)).astype(np.float32),
      rng.integers(0, 10, 32).astype(np.int32),
      rng.normal(size=(16, 32, 32, 3)).astype(np.float32),
      rng.integers(0, 10, 16).astype(np.int32),
      10,
  )
  model = models_lib.build(config_lib.model_spec(ml_collections.ConfigDict({'name': 'resnet20'})), 10)
  optimizer = optim.from_config(config_lib.training_spec({'optimizer': 'momentum', 'learning_rate': 0.1}), 10)
  trainer = trainer_lib.Trainer(
      model, dataset, optimizer, parallel.create_mesh(1), 8, steps_per_dispatch=1, eval_batch_size=16
  )
  params, model_state = trainer.init_variables(0)
  assert set(model_state) == {'batch_stats'}
  stack = steps.stack_members  # a run alone: a population of one
  state = trainer.create_state(stack([params]), stack([model_state]), stack([masks_lib.ones_like(params)]), 0)
  result = trainer.train(state, 2, [0])
  stats_before = model_state['batch_stats']['stem_norm']['mean']
  stats_after = steps.member(parallel.to_host(result.state.model_state), 0)['batch_stats']['stem_norm']['mean']
  assert stats_after.shape == stats_before.shape
  assert not np.allclose(stats_before, stats_after)  # running means moved towards the data's mean
  (accuracy,) = result.curve[-1]['test_accuracy']
  assert 0.0 <= accuracy <= 1.0


@pytest.mark.parametrize(
    'block, zero_init_residual, last_norm',
    [('basic', False, 'norm_1'), ('basic', True, 'norm_1'), ('bottleneck', True, 'norm_2')],
)
def test_last_batch_norm_scale_of_each_block_starts_at_one_unless_zero_init_residual(
    block, zero_init_residual, last_norm
):
  from lth_jax.models import resnet

  model = resnet.ResNet(
      stage_sizes=(1, 1),
      stage_filters=(4, 8),
      block=resnet.BasicBlock if block == 'basic' else resnet.BottleneckBlock,
      zero_init_residual=zero_init_residual,
  )
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3), np.float32))['params']
  for stage in ('stage_0_block_0', 'stage_1_block_0'):
    expected = 0.0 if zero_init_residual else 1.0
    np.testing.assert_array_equal(params[stage][last_norm]['scale'], expected)
    np.testing.assert_array_equal(params[stage]['norm_0']['scale'], 1.0)


def test_paper_resnets_initialize_batch_norm_as_their_references():
  """CIFAR ResNets (He et al.; Frankle & Carbin) start every scale at 1; ResNet-50 (TPU reference)
  zero-initializes the last batch norm of each block."""
  config = ml_collections.ConfigDict({'name': 'resnet20'})
  assert not models_lib.build(config_lib.model_spec(config), 10).zero_init_residual
  assert not models_lib.build(
      config_lib.model_spec(ml_collections.ConfigDict({'name': 'resnet18'})), 10
  ).zero_init_residual
  assert models_lib.build(
      config_lib.model_spec(ml_collections.ConfigDict({'name': 'resnet50'})), 1000
  ).zero_init_residual

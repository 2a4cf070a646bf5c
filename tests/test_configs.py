"""Every config file validates, and the paper configs run end to end on TFDS mock data."""

import glob
import importlib.util
import os

import jax
import jax.numpy as jnp
import pytest
import tensorflow_datasets as tfds

from lth_jax import masks as masks_lib
from lth_jax import config as config_lib
from lth_jax.config import checks
from lth_jax.config import data_checks
from lth_jax.config import errors
from lth_jax.config import lengths
from lth_jax.data import tfds_source
from lth_jax import models as models_lib
from lth_jax import optim
from lth_jax.search import lottery

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(REPO, 'configs', '*.py')))


def load_config(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_there_are_configs():
  names = {os.path.basename(path) for path in CONFIG_FILES}
  assert {
      'default.py',
      'sum_of_two.py',
      'lenet_mnist.py',
      'conv2_cifar10.py',
      'conv4_cifar10.py',
      'conv6_cifar10.py',
  } <= names


@pytest.mark.parametrize('path', CONFIG_FILES, ids=os.path.basename)
def test_config_validates(path):
  config = load_config(path)
  checks.check_config(config)
  assert config.pruning.rewind_step < (config.training.num_steps or 10**9)


@pytest.mark.parametrize(
    'name, model, conv_rate, steps, learning_rate',
    [
        ('conv2_cifar10.py', 'conv2', 0.1, 20_000, 2e-4),
        ('conv4_cifar10.py', 'conv4', 0.1, 25_000, 3e-4),
        ('conv6_cifar10.py', 'conv6', 0.15, 30_000, 3e-4),
    ],
)
def test_conv_configs_carry_frankle_and_carbins_hyperparameters(name, model, conv_rate, steps, learning_rate):
  config = load_config(os.path.join(REPO, 'configs', name))
  assert config.model.name == model
  assert config.pruning.layer_fractions.conv == conv_rate
  assert config.pruning.layer_fractions.output == 0.1
  assert config.pruning.fraction == 0.2
  assert config.training.num_steps == steps
  assert config.training.learning_rate == learning_rate
  assert config.training.batch_size == 60


@pytest.mark.parametrize(
    'name',
    [
        'lenet_mnist.py',
        pytest.param('conv2_cifar10.py', marks=pytest.mark.slow),
        pytest.param('conv6_cifar10.py', marks=pytest.mark.slow),
    ],
)
def test_paper_config_runs_on_mock_tfds_data(tmp_path, name):
  config = load_config(os.path.join(REPO, 'configs', name))
  config.training.batch_size = 8
  config.training.num_steps = 3
  config.training.eval_every = 0
  config.pruning.levels = 1
  with tfds.testing.mock_data(num_examples=16):
    results = lottery.run(config, str(tmp_path), log=lambda line: None)
  tickets = results.select(branch='ticket')
  assert [r['level'] for r in tickets] == [0, 1]
  assert tickets[1]['fraction_remaining'] < 0.9
  assert {r['branch'] for r in results.records} == {'ticket', 'reinit'}


@pytest.mark.parametrize(
    'name, model, rewind_step, total_steps, warmup',
    [
        ('vgg19_cifar10.py', 'vgg19', 1000, 112_000, 10_000),
        # Frankle & Carbin's "Resnet-18" has 75x fewer weights than VGG-19: the 16-32-64 CIFAR ResNet.
        ('resnet18_cifar10.py', 'resnet20', 500, 30_000, 20_000),
    ],
)
def test_scale_paper_configs_late_reset_and_warmup_variants(name, model, rewind_step, total_steps, warmup):
  path = os.path.join(REPO, 'configs', name)
  spec = importlib.util.spec_from_file_location(name[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  late_reset, with_warmup = module.get_config(), module.get_config('warmup')
  assert late_reset.pruning.rewind_step == rewind_step and late_reset.training.warmup_steps == 0
  assert late_reset.training.num_steps == total_steps and late_reset.pruning.scope == 'global'
  assert late_reset.model.name == model and tuple(late_reset.pruning.excluded_layers) == ('output',)
  assert with_warmup.pruning.rewind_step == 0 and with_warmup.training.warmup_steps == warmup
  checks.check_config(with_warmup)
  with pytest.raises(ValueError, match='unknown variant'):
    module.get_config('nonsense')


def test_resnet50_does_not_decay_batch_norm_and_the_cifar_configs_do():
  """Google's TPU ResNet-50 reference leaves batch norm out of its L2 term; Frankle & Carbin's SGD
  decays every weight."""
  assert load_config(os.path.join(REPO, 'configs', 'resnet50_imagenet.py')).training.weight_decay_batch_norm is False
  for name in ('vgg19_cifar10.py', 'resnet18_cifar10.py'):
    assert load_config(os.path.join(REPO, 'configs', name)).training.weight_decay_batch_norm is True


IMAGENET_TRAIN_SIZE = 1_281_167


def _imagenet_config(variant=''):
  spec = importlib.util.spec_from_file_location(
      'resnet50_imagenet', os.path.join(REPO, 'configs', 'resnet50_imagenet.py')
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


@pytest.mark.parametrize('variant', ['', 'one_shot', 'no_rewind'])
def test_resnet50_imagenet_schedule_at_full_scale(variant):
  """The paper's ResNet-50 schedule, in steps of the real ImageNet (1251 steps per epoch at batch 1024)."""
  config = _imagenet_config(variant)
  checks.check_config(config)
  resolved = lengths.resolve_epochs(config, IMAGENET_TRAIN_SIZE)
  training, pruning_config = resolved.training, resolved.pruning
  assert training.batch_size == 1024 and training.num_steps == 90 * 1251 == 112_590
  assert training.warmup_steps == 5 * 1251 and training.decay_boundaries == (30 * 1251, 60 * 1251, 80 * 1251)
  assert training.eval_every == 10 * 1251
  assert pruning_config.turnaround_step == 45 * 1251 and pruning_config.scope == 'global'
  assert pruning_config.rewind_step == (0 if variant == 'no_rewind' else 6 * 1251)
  assert pruning_config.mode == ('one_shot' if variant == 'one_shot' else 'iterative')
  assert pruning_config.rewind_step < pruning_config.turnaround_step < training.num_steps
  # The learning rate: 0 -> 0.4 over 5 epochs, then 0.4, 0.04, 0.004, 0.0004.
  learning_rate = optim.learning_rate_schedule(
      training.learning_rate,
      training.num_steps,
      training.schedule,
      training.warmup_steps,
      training.decay_boundaries,
      training.decay_factor,
  )
  for step, expected in [
      (0, 0.4 / 6255),
      (6254, 0.4),
      (37_529, 0.4),
      (37_530, 0.04),
      (75_060, 0.004),
      (112_589, 0.0004),
  ]:
    assert float(learning_rate(step)) == pytest.approx(expected, rel=1e-5), step
  # And the checks that need the model: ResNet-50's prunable layers at this schedule.
  model = models_lib.build(config_lib.model_spec(resolved.model), 1000)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)), train=False))
  params = shapes['params']
  data_checks.check_against_data(
      resolved,
      IMAGENET_TRAIN_SIZE,
      masks_lib.layer_sizes(params, config_lib.pruning_plan(resolved).prunable(params)),
  )


def test_resnet50_imagenet_refuses_points_out_of_order():
  config = _imagenet_config()
  config.pruning.turnaround_epoch = 5
  with pytest.raises(
      errors.ConfigError, match=r'pruning.turnaround_epoch=5.0 \(step 6255\): must come after the rewind step'
  ):
    data_checks.check_against_data(lengths.resolve_epochs(config, IMAGENET_TRAIN_SIZE), IMAGENET_TRAIN_SIZE, {})
  config = _imagenet_config()
  config.pruning.rewind_epoch = 91
  with pytest.raises(
      errors.ConfigError, match=r'pruning.rewind_epoch=91.0 \(step 113841\): is past the end of training'
  ):
    data_checks.check_against_data(lengths.resolve_epochs(config, IMAGENET_TRAIN_SIZE), IMAGENET_TRAIN_SIZE, {})
  config = _imagenet_config()
  config.pruning.rewind_step = 100
  with pytest.raises(errors.ConfigError, match='set either pruning.rewind_step'):
    checks.check_config(config)


def _shrunk_for_mock_data(config, model_name):
  """The config's schedule, pipeline and pruning at a size that runs in seconds on mock data:
  16 examples, batch 8 (2 steps per epoch)."""
  config.model.name = model_name
  config.model.hidden_sizes = (16,)
  config.model.dtype = 'float32'
  config.training.batch_size = 8
  config.training.eval_batch_size = 8
  config.pruning.levels = 1
  config.checkpointing.every_steps = 2
  return config


@pytest.mark.slow
def test_resnet50_imagenet_pipeline_schedule_and_pruning_run_on_mock_imagenet(tmp_path):
  """The ImageNet config end to end on mock imagenet2012 (random-resized crops, streamed evaluation,
  epochs resolved against the mock dataset's size) with a small dense model in place of ResNet-50."""
  config = _shrunk_for_mock_data(_imagenet_config(), 'lenet')
  config.training.num_epochs = 3  # 6 steps
  config.training.warmup_epochs = 0.5  # 1 step
  config.training.decay_epochs = (1, 2)  # steps 2 and 4
  config.training.eval_every_epochs = 1  # every 2 steps
  config.pruning.rewind_epoch = 0.5  # step 1
  config.pruning.turnaround_epoch = 2  # step 4
  with tfds.testing.mock_data(num_examples=16):
    results = lottery.run(config, str(tmp_path), log=lambda line: None)
  tickets = results.select(branch='ticket')
  assert [r['level'] for r in tickets] == [0, 1]
  assert [entry['step'] for entry in tickets[0]['curve']] == [2, 4, 6]
  assert tickets[1]['start_step'] == 1 and tickets[1]['end_step'] == 6
  assert tickets[1]['fraction_remaining'] == pytest.approx(0.8, abs=0.01)
  assert {r['branch'] for r in results.records} == {'ticket', 'reinit'}


@pytest.mark.slow
@pytest.mark.parametrize('name', ['resnet50_imagenet.py', 'resnet18_cifar10.py', 'vgg19_cifar10.py'])
def test_deep_paper_config_runs_a_few_steps_on_mock_data(tmp_path, name):
  """The real deep models of the scale configs, a few steps on 8 simulated devices (minutes on CPU)."""
  config = load_config(os.path.join(REPO, 'configs', name))
  model_name = config.model.name
  config = _shrunk_for_mock_data(config, model_name)
  config.training.num_epochs = 0
  config.training.num_steps = 3
  config.training.warmup_epochs = 0
  config.training.decay_epochs = ()
  config.training.decay_boundaries = ()
  config.training.eval_every_epochs = 0
  config.training.eval_every = 0
  config.pruning.rewind_epoch = 0
  config.pruning.turnaround_epoch = 0
  config.pruning.rewind_step = 1
  with tfds.testing.mock_data(num_examples=8):
    results = lottery.run(config, str(tmp_path), log=lambda line: None)
  assert sorted((r['level'], r['branch']) for r in results.records) == [(0, 'ticket'), (1, 'reinit'), (1, 'ticket')]


def test_resnet50_imagenet_without_prepared_data_says_how_to_prepare_it(tmp_path):
  config = _imagenet_config()
  config.dataset.data_dir = str(tmp_path / 'tfds')
  with pytest.raises(tfds_source.DatasetNotPreparedError, match='tfds build imagenet2012 --file_format=array_record'):
    lottery.run(config, str(tmp_path / 'work'), log=lambda line: None)
  assert not (tmp_path / 'work').exists()  # nothing written before the data is there

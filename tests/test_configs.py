"""Every config file validates, and the paper configs run end to end on TFDS mock data."""

import glob
import importlib.util
import os

import pytest
import tensorflow_datasets as tfds

from lth_jax import lottery
from lth_jax import validation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(REPO, 'configs', '*.py')))


def load_config(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_there_are_configs():
  names = {os.path.basename(path) for path in CONFIG_FILES}
  assert {'default.py', 'sum_of_two.py', 'lenet_mnist.py', 'conv2_cifar10.py', 'conv4_cifar10.py',
          'conv6_cifar10.py'} <= names


@pytest.mark.parametrize('path', CONFIG_FILES, ids=os.path.basename)
def test_config_validates(path):
  config = load_config(path)
  validation.check_config(config)
  assert config.pruning.rewind_step < (config.training.num_steps or 10**9)


@pytest.mark.parametrize('name, model, conv_rate, steps, learning_rate', [
    ('conv2_cifar10.py', 'conv2', 0.1, 20_000, 2e-4),
    ('conv4_cifar10.py', 'conv4', 0.1, 25_000, 3e-4),
    ('conv6_cifar10.py', 'conv6', 0.15, 30_000, 3e-4),
])
def test_conv_configs_carry_frankle_and_carbins_hyperparameters(name, model, conv_rate, steps, learning_rate):
  config = load_config(os.path.join(REPO, 'configs', name))
  assert config.model.name == model
  assert config.pruning.layer_fractions.conv == conv_rate
  assert config.pruning.layer_fractions.output == 0.1
  assert config.pruning.fraction == 0.2
  assert config.training.num_steps == steps
  assert config.training.learning_rate == learning_rate
  assert config.training.batch_size == 60


@pytest.mark.parametrize('name', ['lenet_mnist.py', 'conv2_cifar10.py', 'conv6_cifar10.py'])
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


@pytest.mark.parametrize('name, rewind_step, total_steps, warmup', [
    ('vgg19_cifar10.py', 1000, 112_000, 10_000), ('resnet18_cifar10.py', 500, 30_000, 20_000)])
def test_scale_paper_configs_late_reset_and_warmup_variants(name, rewind_step, total_steps, warmup):
  path = os.path.join(REPO, 'configs', name)
  spec = importlib.util.spec_from_file_location(name[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  late_reset, with_warmup = module.get_config(), module.get_config('warmup')
  assert late_reset.pruning.rewind_step == rewind_step and late_reset.training.warmup_steps == 0
  assert late_reset.training.num_steps == total_steps and late_reset.pruning.scope == 'global'
  assert with_warmup.pruning.rewind_step == 0 and with_warmup.training.warmup_steps == warmup
  validation.check_config(with_warmup)
  with pytest.raises(ValueError, match='unknown variant'):
    module.get_config('nonsense')

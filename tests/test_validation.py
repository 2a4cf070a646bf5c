"""Bad configs fail before any training, with a message that names the field."""

import os

import pytest

from lth_jax import lottery
from lth_jax import validation
from tests import helpers


@pytest.mark.parametrize('overrides, message', [
    ({'model__name': 'resnet9000'}, r"model.name='resnet9000': unknown model"),
    ({'dataset__name': 'imagenet3000'}, r"dataset.name='imagenet3000': unknown dataset"),
    ({'pruning__fraction': 1.0}, r'pruning.fraction=1.0: a prune fraction must be strictly between 0 and 1'),
    ({'pruning__fraction': 0.0}, r'pruning.fraction=0.0'),
    ({'pruning__fraction': -0.2}, r'pruning.fraction=-0.2'),
    ({'pruning__layer_fractions': {'output': 1.5}}, r'pruning.layer_fractions.output=1.5'),
    ({'pruning__rewind_step': 60}, r'pruning.rewind_step=60: must be before the end of training'),
    ({'pruning__scope': 'galactic'}, r"pruning.scope='galactic'"),
    ({'pruning__mode': 'twice'}, r"pruning.mode='twice'"),
    ({'pruning__levels': -1}, r'pruning.levels=-1'),
    ({'pruning__target_density': 1.5}, r'pruning.target_density=1.5'),
    ({'pruning__target_density': 0.001}, r'pruning.target_density=0.001: is unreachable'),
    ({'training__optimizer': 'lion9'}, r"training.optimizer='lion9': unknown optimizer"),
    ({'training__schedule': 'zigzag'}, r"training.schedule='zigzag'"),
    ({'training__learning_rate': -1.0}, r'training.learning_rate=-1.0'),
    ({'training__batch_size': 0}, r'training.batch_size=0'),
    ({'training__num_epochs': 3}, r'set exactly one of training.num_steps and training.num_epochs'),
    ({'branches': ('ticket', 'lucky')}, r"unknown branch 'lucky'"),
    ({'trials': 0}, r'trials=0'),
    ({'pruning__scope': 'global', 'pruning__min_weights_per_layer': 2}, r'pruning.min_weights_per_layer=2'),
])
def test_bad_config_names_the_field_before_training(tmp_path, overrides, message):
  config = helpers.tiny_config(**overrides)
  with pytest.raises(validation.ConfigError, match=message):
    lottery.run(config, str(tmp_path / 'work'), log=lambda line: None)
  assert not os.path.exists(tmp_path / 'work' / 'results.jsonl')
  assert not os.path.exists(tmp_path / 'work' / 'checkpoints')


def test_rewind_past_the_end_in_epochs_is_caught_with_the_dataset_size(tmp_path):
  # digits: 1437 training examples, batch 32 -> 44 steps per epoch; 2 epochs = 88 steps.
  config = helpers.tiny_config(training__num_steps=0, training__num_epochs=2, pruning__rewind_step=88)
  with pytest.raises(validation.ConfigError, match=r'pruning.rewind_step=88: is past the end of training \(88'):
    lottery.run(config, str(tmp_path), log=lambda line: None)


def test_batch_larger_than_the_training_set(tmp_path):
  config = helpers.tiny_config(training__batch_size=4096)
  with pytest.raises(validation.ConfigError, match='training.batch_size=4096: is larger than the training set'):
    lottery.run(config, str(tmp_path), log=lambda line: None)


def test_target_density_derives_the_per_level_fraction():
  config = helpers.tiny_config(pruning__fraction=None, pruning__target_density=0.2, pruning__levels=4)
  validation.check_config(config)
  assert (1 - validation.fraction_per_level(config)) ** 4 == pytest.approx(0.2)


def test_target_density_reachable_passes():
  config = helpers.tiny_config(pruning__target_density=0.3, pruning__levels=2, pruning__layer_fractions={})
  validation.check_config(config)
  validation.check_against_data(config, 1437, {'dense_0': 2048, 'dense_1': 512, 'output': 160})

"""Bad configs fail before any training, with a message that names the field."""

import os

import pytest

from lth_jax import config as config_lib
from lth_jax.config import checks
from lth_jax.config import compatibility
from lth_jax.config import data_checks
from lth_jax.config import errors
from lth_jax.search import experiment as experiment_lib
from lth_jax.search import lottery
from lth_jax.search import workdir as workdir_lib
from tests import helpers


@pytest.mark.parametrize(
    'overrides, message',
    [
        ({'model__name': 'resnet9000'}, r"model.name='resnet9000': unknown model"),
        ({'dataset__name': 'imagenet3000'}, r"dataset.name='imagenet3000': unknown dataset"),
        ({'model__dtype': 'float8'}, r"model.dtype='float8': unknown computation dtype"),
        (
            {'model__conv_kernel_gradient': 'fft'},
            r"model.conv_kernel_gradient='fft': must be one of auto, lax, patches",
        ),
        ({'pruning__fraction': 1.0}, r'pruning.fraction=1.0: a prune fraction must be strictly between 0 and 1'),
        ({'pruning__fraction': 0.0}, r'pruning.fraction=0.0'),
        ({'pruning__fraction': -0.2}, r'pruning.fraction=-0.2'),
        ({'pruning__layer_fractions': {'output': 1.5}}, r'pruning.layer_fractions.output=1.5'),
        ({'pruning__rewind_step': 60}, r'pruning.rewind_step=60: must be before the end of training'),
        ({'pruning__scope': 'galactic'}, r"pruning.scope='galactic'"),
        ({'pruning__mode': 'twice'}, r"pruning.mode='twice'"),
        (
            {'pruning__criterion': 'grasp'},
            r"pruning.criterion='grasp': unknown pruning criterion; known criteria: magnitude, snip \(add one with "
            r'lth_jax.pruning.register\)',
        ),
        ({'pruning__levels': -1}, r'pruning.levels=-1'),
        ({'pruning__target_density': 1.5}, r'pruning.target_density=1.5'),
        ({'pruning__target_density': 0.001}, r'pruning.target_density=0.001: is unreachable'),
        ({'training__optimizer': 'lion9'}, r"training.optimizer='lion9': unknown optimizer"),
        ({'training__schedule': 'zigzag'}, r"training.schedule='zigzag'"),
        ({'training__learning_rate': -1.0}, r'training.learning_rate=-1.0'),
        ({'training__batch_size': 0}, r'training.batch_size=0'),
        ({'seed': -1}, r'seed=-1: must be a non-negative integer'),
        ({'training__learning_rate': float('inf')}, r'training.learning_rate=inf: must be a positive finite number'),
        ({'training__momentum': -3.0}, r'training.momentum=-3.0: must be in \[0, 1\)'),
        ({'training__decay_factor': -1.0}, r'training.decay_factor=-1.0: must be a positive finite number'),
        ({'training__eval_batch_size': 0}, r'training.eval_batch_size=0: must be a positive integer'),
        ({'model__hidden_sizes': (300, -5)}, r'model.hidden_sizes=\(300, -5\): must be a sequence of positive'),
        ({'training__foo': 3}, r'training.foo: unknown field; training has: batch_size'),
        (
            {'pruning__layer_fractions': {'outptu': 0.1}},
            r'pruning.layer_fractions.outptu=0.1: names no prunable layer of the model \(prunable layers: dense_0',
        ),
        (
            {'pruning__excluded_layers': ('dense_7',)},
            r"pruning.excluded_layers=\('dense_7',\): 'dense_7' names no layer",
        ),
        ({'pruning__prunable_parameters': ('weights',)}, r'pruning.levels=2: there is nothing to prune'),
        ({'training__num_epochs': 3}, r'set exactly one of training.num_steps and training.num_epochs'),
        ({'branches': ('ticket', 'lucky')}, r"unknown branch 'lucky'"),
        ({'trials': 0}, r'trials=0'),
        ({'pruning__scope': 'global', 'pruning__min_weights_per_layer': 2}, r'pruning.min_weights_per_layer=2'),
        (
            {'pruning__rewind_step': 0, 'pruning__rewind_epoch': 3.0},
            r'pruning.rewind_epoch=3.0 \(step 132\): is past the end of training \(60 steps\)',
        ),
        ({'pruning__rewind_epoch': 0.5}, r'pruning.rewind_epoch=0.5: set either pruning.rewind_step'),
        (
            {'pruning__rewind_step': 0, 'pruning__rewind_epoch': 0.01},
            r'pruning.rewind_epoch=0.01: is less than one step',
        ),
        ({'pruning__rewind_step': 30, 'pruning__turnaround_step': 20}, r'pruning.turnaround_step=20: must come after'),
        ({'training__warmup_epochs': -1.0}, r'training.warmup_epochs=-1.0: must be a non-negative number'),
        ({'training__decay_epochs': (0.5, -1)}, r'training.decay_epochs=\(0.5, -1\): must be a sequence of positive'),
        ({'training__warmup_steps': 61}, r'training.warmup_steps=61: is longer than training'),
        ({'parallel__batch_per_device': 3}, r'training.batch_size=32: disagrees with parallel.batch_per_device=3'),
        ({'parallel__batch_per_device': -1}, r'parallel.batch_per_device=-1'),
        ({'parallel__num_devices': 9}, r'parallel.num_devices must be between 0 \(all\) and 8'),
        (
            {'training__batch_size': 12, 'parallel__members_per_program': 1},
            r'training.batch_size=12 does not divide over the 8 devices',
        ),
        ({'parallel__members_per_program': -2}, r'parallel.members_per_program=-2: must be a non-negative integer'),
    ],
)
def test_bad_config_names_the_field_before_training(tmp_path, overrides, message):
  config = helpers.tiny_config(**overrides)
  with pytest.raises(errors.ConfigError, match=message):
    lottery.run(config, str(tmp_path / 'work'), log=lambda line: None)
  assert not os.path.exists(tmp_path / 'work' / 'results.jsonl')
  assert not os.path.exists(tmp_path / 'work' / 'checkpoints')


def test_rewind_past_the_end_in_epochs_is_caught_with_the_dataset_size(tmp_path):
  # digits: 1437 training examples, batch 32 -> 44 steps per epoch; 2 epochs = 88 steps.
  config = helpers.tiny_config(training__num_steps=0, training__num_epochs=2, pruning__rewind_step=88)
  with pytest.raises(errors.ConfigError, match=r'pruning.rewind_step=88: is past the end of training \(88'):
    lottery.run(config, str(tmp_path), log=lambda line: None)


def test_batch_larger_than_the_training_set(tmp_path):
  config = helpers.tiny_config(training__batch_size=4096)
  with pytest.raises(errors.ConfigError, match='training.batch_size=4096: is larger than the training set'):
    lottery.run(config, str(tmp_path), log=lambda line: None)


def test_target_density_derives_the_per_level_fraction():
  config = helpers.tiny_config(pruning__fraction=None, pruning__target_density=0.2, pruning__levels=4)
  checks.check_config(config)
  assert (1 - data_checks.fraction_per_level(config)) ** 4 == pytest.approx(0.2)


def test_target_density_reachable_passes():
  config = helpers.tiny_config(pruning__target_density=0.3, pruning__levels=2, pruning__layer_fractions={})
  checks.check_config(config)
  data_checks.check_against_data(config, 1437, {'dense_0': 2048, 'dense_1': 512, 'output': 160})


def test_epochs_become_steps_with_the_dataset_size():
  # digits: 1437 training examples, batch 32 -> 44 steps per epoch.
  config = helpers.tiny_config(
      training__num_steps=0,
      training__num_epochs=3,
      training__warmup_epochs=0.5,
      training__decay_epochs=(1, 2.5),
      training__eval_every=0,
      training__eval_every_epochs=1.0,
      pruning__rewind_step=0,
      pruning__rewind_epoch=0.25,
      pruning__turnaround_epoch=2,
  )
  checks.check_config(config)
  experiment = experiment_lib.prepare(config)
  training, pruning_config = experiment.spec.training, experiment.spec.pruning
  assert (training.num_steps, training.warmup_steps, training.decay_boundaries, training.eval_every) == (
      132,
      22,
      (44, 110),
      44,
  )
  assert (pruning_config.rewind_step, pruning_config.turnaround_step) == (11, 88)
  assert experiment.total_steps == 132
  assert config.training.num_steps == 0 and config.pruning.rewind_step == 0  # the caller's config is unchanged


def test_batch_per_device_sets_the_global_batch():
  config = helpers.tiny_config(training__batch_size=0, parallel__batch_per_device=4)
  experiment = experiment_lib.prepare(config)
  assert experiment.spec.training.batch_size == 32 == 4 * experiment.mesh.devices.size
  assert experiment.trainer().batch_size == 32
  config = helpers.tiny_config(training__batch_size=8, parallel__batch_per_device=4, parallel__num_devices=2)
  assert experiment_lib.prepare(config).spec.training.batch_size == 8


def test_a_workdir_that_recorded_nothing_takes_a_corrected_config(tmp_path):
  """A first attempt that wrote config.json and failed before any record does not lock the workdir."""
  import json

  workdir = tmp_path / 'work'
  os.makedirs(workdir / 'checkpoints' / 'trial_0')  # folders of the failed start, no checkpoint in them
  first, corrected = helpers.tiny_config(training__learning_rate=0.5), helpers.tiny_config()
  workdir_lib.check_config_file(first, str(workdir), False, log=lambda line: None)
  lines = []
  workdir_lib.check_config_file(corrected, str(workdir), False, log=lines.append)
  assert json.loads((workdir / 'config.json').read_text()) == compatibility.config_to_json(corrected)
  assert 'recorded nothing' in lines[0]
  (workdir / 'results.jsonl').write_text('{"trial": 0, "level": 0, "branch": "ticket"}\n')
  with pytest.raises(errors.ConfigError, match='training.learning_rate: 0.003 -> 0.5'):
    workdir_lib.check_config_file(first, str(workdir), False, log=lambda line: None)


def test_a_workdir_in_use_by_another_run_is_refused_at_once(tmp_path):
  workdir = tmp_path / 'work'
  os.makedirs(workdir)
  with workdir_lib.workdir_lock(str(workdir)):
    with pytest.raises(compatibility.WorkdirError, match=f'workdir {workdir}: in use by another lth_jax run \\(pid '):
      lottery.run(helpers.tiny_config(), str(workdir), log=lambda line: None)
    assert not (workdir / 'config.json').exists() and not (workdir / 'results.jsonl').exists()
  with workdir_lib.workdir_lock(str(workdir)):  # released: taken again
    pass


def test_the_global_batch_is_recorded_and_a_different_one_is_refused(tmp_path):
  """The same parallel.batch_per_device on another number of devices is another global batch."""
  import json

  config = helpers.tiny_config(parallel__batch_per_device=4, training__batch_size=0)
  on_eight, on_four = config_lib.resolve(config, 8, 1000), config_lib.resolve(config, 4, 1000)
  assert (on_eight.training.batch_size, on_four.training.batch_size) == (32, 16)
  workdir = str(tmp_path)
  workdir_lib.check_config_file(config, workdir, False, lambda line: None, resolved=on_eight)
  written = json.loads((tmp_path / 'config.json').read_text())
  assert written['resolved']['training']['batch_size'] == 32 and written['training']['batch_size'] == 0
  (tmp_path / 'results.jsonl').write_text('{"trial": 0, "level": 0, "branch": "ticket"}\n')
  with pytest.raises(errors.ConfigError, match=r'resolved.training.batch_size: 32 -> 16'):
    workdir_lib.check_config_file(config, workdir, False, lambda line: None, resolved=on_four)
  # A config.json written before values were recorded resolved is compared on the config alone.
  del written['resolved']
  (tmp_path / 'config.json').write_text(json.dumps(written))
  workdir_lib.check_config_file(config, workdir, False, lambda line: None, resolved=on_four)


def test_a_workdir_with_runs_but_no_config_file_is_refused_unless_allowed(tmp_path):
  (tmp_path / 'results.jsonl').write_text('{"trial": 0, "level": 0, "branch": "ticket"}\n')
  with pytest.raises(errors.ConfigError, match='holds runs but no config.json'):
    workdir_lib.check_config_file(helpers.tiny_config(), str(tmp_path), False, log=lambda line: None)
  workdir_lib.check_config_file(helpers.tiny_config(), str(tmp_path), True, log=lambda line: None)
  assert (tmp_path / 'config.json').exists()

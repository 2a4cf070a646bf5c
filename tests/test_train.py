"""The sharded trainer: one device vs eight, fused steps vs single steps, snapshots, metrics."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import config as config_lib
from lth_jax import data as data_lib
from lth_jax import masks as masks_lib
from lth_jax import models as models_lib
from lth_jax import optim
from lth_jax.training import parallel
from lth_jax.training import steps
from lth_jax.training import trainer as trainer_lib
from tests import helpers


def _trainer(num_devices: int, steps_per_dispatch: int = 8, batch_size: int = 32):
  config = helpers.tiny_config()
  dataset = data_lib.build(config_lib.data_spec(config.dataset))
  model = models_lib.build(config_lib.model_spec(config.model), dataset.num_outputs)
  config.training.optimizer = 'momentum'
  config.training.learning_rate = 0.05
  config.training.weight_decay = 1e-3
  optimizer = optim.from_config(config.training, 100)
  mesh = parallel.create_mesh(num_devices)
  return trainer_lib.Trainer(model, dataset, optimizer, mesh, batch_size, steps_per_dispatch, eval_batch_size=128)


def _half_mask(params):
  """Keeps every other kernel weight."""

  def keep(path, leaf):
    if masks_lib.path_to_names(path)[-1] != 'kernel':
      return np.ones(leaf.shape, bool)
    return (np.arange(leaf.size) % 2 == 0).reshape(leaf.shape)

  return jax.tree_util.tree_map_with_path(keep, params)


def _one(tree):
  """A host tree as the state of a population of one (a run alone): a leading member axis of size 1."""
  return steps.stack_members([tree])


def _create(trainer, params, model_state, keep_mask, step=0):
  """A run alone's TrainState from one member's host trees."""
  return trainer.create_state(_one(params), _one(model_state), _one(keep_mask), step)


def test_eight_devices_match_one_device():
  assert len(jax.devices()) == 8, 'conftest should simulate 8 CPU devices'
  results = []
  for devices in (1, 8):
    trainer = _trainer(devices)
    params, model_state = trainer.init_variables(seed=3)
    keep_mask = _half_mask(params)
    state = _create(trainer, masks_lib.apply(params, keep_mask), model_state, keep_mask)
    assert state.params['dense_0']['kernel'].sharding.mesh.devices.size == devices
    result = trainer.train(state, end_step=12, data_seed=[7])
    assert len(result.curve[-1]['test_accuracy']) == len(result.curve[-1]['train_loss']) == 1
    results.append((steps.member(parallel.to_host(result.state.params), 0), result.curve[-1]))
  (params_one, curve_one), (params_eight, curve_eight) = results
  chex.assert_trees_all_close(params_one, params_eight, atol=1e-5, rtol=1e-5)
  assert curve_one['test_accuracy'][0] == pytest.approx(curve_eight['test_accuracy'][0], abs=1e-6)
  assert curve_one['train_loss'][0] == pytest.approx(curve_eight['train_loss'][0], rel=1e-5)
  # And the step really changed the weights: the test is not comparing two untouched trees.
  initial = _trainer(1).init_variables(seed=3)[0]
  assert not np.allclose(params_one['dense_0']['kernel'], initial['dense_0']['kernel'])


def test_fused_steps_equal_single_steps_and_keep_pruned_weights_zero():
  finals = []
  for steps_per_dispatch in (1, 16):
    trainer = _trainer(8, steps_per_dispatch)
    params, model_state = trainer.init_variables(seed=0)
    keep_mask = _half_mask(params)
    state = _create(trainer, masks_lib.apply(params, keep_mask), model_state, keep_mask)
    finals.append(parallel.to_host(trainer.train(state, end_step=37, data_seed=[1]).state))
  chex.assert_trees_all_close(finals[0].params, finals[1].params, atol=1e-6)
  assert finals[0].step.tolist() == finals[1].step.tolist() == [37]
  keep_mask = finals[1].keep_mask
  for weight, keep in zip(jax.tree_util.tree_leaves(finals[1].params), jax.tree_util.tree_leaves(keep_mask)):
    assert np.all(weight[~keep] == 0.0)
    assert np.any(weight[keep] != 0.0)


def test_snapshot_at_step_equals_training_stopped_there():
  trainer = _trainer(8)
  params, model_state = trainer.init_variables(seed=5)
  keep_mask = masks_lib.ones_like(params)
  full = trainer.train(
      _create(trainer, params, model_state, keep_mask), end_step=30, data_seed=[2], snapshot_steps=(0, 11)
  )
  stopped = trainer.train(_create(trainer, params, model_state, keep_mask), end_step=11, data_seed=[2])
  snapshot_params, _ = full.snapshots[11]
  chex.assert_trees_all_equal(snapshot_params, parallel.to_host(stopped.state.params))
  chex.assert_trees_all_equal(full.snapshots[0][0], _one(params))


def test_resuming_from_a_step_continues_the_same_batches():
  """Training 0->20 equals 0->9 then a state rebuilt at step 9 trained to 20 (same optimizer state)."""
  trainer = _trainer(8, 4)
  params, model_state = trainer.init_variables(seed=1)
  keep_mask = masks_lib.ones_like(params)
  straight = trainer.train(_create(trainer, params, model_state, keep_mask), 20, data_seed=[4])
  first = trainer.train(_create(trainer, params, model_state, keep_mask), 9, data_seed=[4])
  second = trainer.train(first.state, 20, data_seed=[4])
  chex.assert_trees_all_equal(parallel.to_host(straight.state.params), parallel.to_host(second.state.params))


def test_curve_has_an_entry_per_evaluation_and_metrics_are_sane():
  trainer = _trainer(8)
  params, model_state = trainer.init_variables(seed=0)
  state = _create(trainer, params, model_state, masks_lib.ones_like(params))
  seen = []
  result = trainer.train(state, end_step=50, data_seed=[0], eval_every=20, progress=seen.append)
  assert [entry['step'] for entry in result.curve] == [20, 40, 50]
  assert seen == result.curve
  (accuracy,), (last_loss,), (first_loss,) = (
      result.curve[-1]['test_accuracy'],
      result.curve[-1]['train_loss'],
      result.curve[0]['train_loss'],
  )
  assert 0.0 <= accuracy <= 1.0
  assert accuracy > 0.5  # 50 momentum steps learn the digits well past chance
  assert last_loss < first_loss * 1.5
  assert result.diverged_steps == [None]


def test_heartbeats_report_progress_between_evaluations_without_changing_training():
  trainer = _trainer(8)
  params, model_state = trainer.init_variables(seed=0)
  quiet = trainer.train(_create(trainer, params, model_state, masks_lib.ones_like(params)), 50, [0], eval_every=20)
  beats = []
  result = trainer.train(
      _create(trainer, params, model_state, masks_lib.ones_like(params)),
      50,
      [0],
      eval_every=20,
      heartbeat=beats.append,
      heartbeat_seconds=0.0,
  )
  # Every dispatch that is not an evaluation point (8 steps per dispatch; evaluations at 20, 40, 50).
  assert [beat['step'] for beat in beats] == [8, 16, 28, 36, 48]
  assert all(beat['examples_per_second'] > 0 for beat in beats)
  chex.assert_trees_all_equal(parallel.to_host(result.state.params), parallel.to_host(quiet.state.params))
  never = []
  trainer.train(
      _create(trainer, params, model_state, masks_lib.ones_like(params)),
      50,
      [0],
      eval_every=20,
      heartbeat=never.append,
      heartbeat_seconds=3600.0,
  )
  assert never == []


def test_evaluation_ignores_padding():
  """The test set (360 digits) is padded to whole eval batches; padding must not count."""
  trainer = _trainer(8)
  params, model_state = trainer.init_variables(seed=0)
  state = _create(trainer, params, model_state, masks_lib.ones_like(params))
  metrics = trainer.evaluate(state)
  outputs = trainer.model.apply({'params': params}, trainer.dataset.test_inputs)
  expected = float(np.mean(np.argmax(outputs, -1) == trainer.dataset.test_targets))
  assert len(metrics['test_accuracy']) == 1
  assert metrics['test_accuracy'][0] == pytest.approx(expected, abs=1e-6)
  # Any parameters shaped like the state's (leading axis: members) evaluate the same.
  again = trainer.evaluate_params(_one(params), _one(model_state))
  assert again['test_accuracy'][0] == pytest.approx(expected, abs=1e-6)


def test_batch_that_does_not_divide_over_devices_is_an_error():
  with pytest.raises(ValueError, match='training.batch_size=30 does not divide over the 8 devices'):
    _trainer(8, batch_size=30)


def test_regression_metrics_are_rmse():
  outputs = jnp.array([[1.0], [3.0]])
  targets = jnp.array([[0.0], [1.0]])
  _, sums = steps.loss_and_metric_sums('regression', outputs, targets)
  summary = steps.summarize('regression', jax.device_get(sums), 'test')
  assert summary['test_rmse'] == pytest.approx(np.sqrt((1 + 4) / 2))


def test_a_run_alone_is_a_population_of_one_and_takes_a_list_of_seeds():
  trainer = _trainer(8)
  assert trainer.population_size == 1
  params, model_state = trainer.init_variables(seed=0)
  state = _create(trainer, params, model_state, masks_lib.ones_like(params))
  assert state.step.shape == (1,) and state.params['dense_0']['kernel'].shape == (1, *params['dense_0']['kernel'].shape)
  with pytest.raises(TypeError, match=r'one data seed per member: \[3\]'):
    trainer.train(state, 8, data_seed=3)
  with pytest.raises(ValueError, match='a population of 1 needs as many data seeds, got 2'):
    trainer.train(state, 8, data_seed=[3, 4])

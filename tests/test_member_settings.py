"""A population whose members start at different steps and hold their own learning rate, warmup and
weight decay (in their optimizer state) trains each member as that member's run alone would (to
rounding)."""

import chex
import jax
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

END_STEP = 40
# (start step, learning rate, warmup steps, weight decay) of each member.
MEMBERS = ((0, 0.05, 0, 0.0), (12, 0.05, 0, 0.0), (0, 0.02, 8, 1e-3), (24, 0.1, 4, 5e-3))
NAMES = ('learning_rate', 'warmup_steps', 'weight_decay')


def _trainer(training: dict, population_size: int, member_hyperparameters=(), num_devices: int = 8):
  config = helpers.tiny_config()
  dataset = data_lib.build(config_lib.data_spec(config.dataset))
  model = models_lib.build(config_lib.model_spec(config.model), dataset.num_outputs)
  spec = config_lib.training_spec({'optimizer': 'momentum', 'schedule': 'cosine', **training})
  optimizer = optim.from_config(spec, END_STEP, member_hyperparameters)
  mesh = parallel.create_mesh(num_devices, min(population_size, num_devices))
  return trainer_lib.Trainer(
      model,
      dataset,
      optimizer,
      mesh,
      32,
      8,
      eval_batch_size=128,
      population_size=population_size,
      member_hyperparameters=member_hyperparameters,
  )


def _start(trainer):
  params, model_state = trainer.init_variables(seed=5)
  keep_mask = jax.tree_util.tree_map(lambda leaf: np.arange(leaf.size).reshape(leaf.shape) % 3 != 0, params)
  return masks_lib.apply(params, keep_mask), model_state, keep_mask


def test_members_with_their_own_start_and_hyperparameters_train_as_their_runs_alone():
  population = _trainer({'learning_rate': 0.05}, len(MEMBERS), NAMES)
  params, model_state, keep_mask = _start(population)
  stacked = [steps.stack_members([tree] * len(MEMBERS)) for tree in (params, model_state, keep_mask)]
  hyperparameters = {name: [member[1 + index] for member in MEMBERS] for index, name in enumerate(NAMES)}
  state = population.create_state(*stacked, step=0, hyperparameters=hyperparameters)
  held = parallel.to_host(optim.hyperparameters(state.opt_state))
  chex.assert_trees_all_close(held, {name: np.asarray(values) for name, values in hyperparameters.items()})
  settings = {'start_step': [member[0] for member in MEMBERS]}
  together = population.train(state, END_STEP, [7] * len(MEMBERS), eval_every=10, member_settings=settings)
  together_params = parallel.to_host(together.state.params)
  for index, (start_step, learning_rate, warmup_steps, weight_decay) in enumerate(MEMBERS):
    alone = _trainer({'learning_rate': learning_rate, 'warmup_steps': warmup_steps, 'weight_decay': weight_decay}, 1)
    state = alone.create_state(*(steps.stack_members([tree]) for tree in (params, model_state, keep_mask)), start_step)
    result = alone.train(state, END_STEP, [7], eval_every=10)
    chex.assert_trees_all_close(
        steps.member(together_params, index),
        steps.member(parallel.to_host(result.state.params), 0),
        atol=2e-5,
        rtol=2e-5,
    )
    # The member's curve after its start is the run's curve (before it, the member had not started).
    member_curve = [
        {key: value[index] for key, value in entry.items() if isinstance(value, list)} | {'step': entry['step']}
        for entry in together.curve
        if entry['step'] > start_step
    ]
    assert [entry['step'] for entry in member_curve] == [entry['step'] for entry in result.curve]
    for mine, theirs in zip(member_curve, result.curve):
      assert len(theirs['test_accuracy']) == len(theirs['train_loss']) == 1  # the run alone: a population of one
      assert mine['test_accuracy'] == pytest.approx(theirs['test_accuracy'][0], abs=1e-6)
      assert mine['train_loss'] == pytest.approx(theirs['train_loss'][0], rel=1e-4)


def test_a_member_before_its_start_is_left_exactly_as_it_was():
  population = _trainer({'learning_rate': 0.05}, 2)
  params, model_state, keep_mask = _start(population)
  stacked = [steps.stack_members([tree] * 2) for tree in (params, model_state, keep_mask)]
  state = population.create_state(*stacked, step=0)
  result = population.train(state, 20, [7, 7], member_settings={'start_step': [0, 20]})
  final = parallel.to_host(result.state.params)
  chex.assert_trees_all_equal(steps.member(final, 1), params)
  assert not np.allclose(steps.member(final, 0)['dense_0']['kernel'], params['dense_0']['kernel'])
  assert result.curve[-1]['train_loss'][1] == 0.0  # it trained no step: its sums stayed empty


def test_member_values_the_trainer_was_not_built_for_are_refused():
  population = _trainer({'learning_rate': 0.05}, 2, ('learning_rate',))
  params, model_state, keep_mask = _start(population)
  stacked = [steps.stack_members([tree] * 2) for tree in (params, model_state, keep_mask)]
  with pytest.raises(ValueError, match='weight_decay'):
    population.create_state(*stacked, step=0, hyperparameters={'weight_decay': [0.1, 0.2]})
  with pytest.raises(ValueError, match='3 values for 2 members'):
    population.create_state(*stacked, step=0, hyperparameters={'learning_rate': [0.1, 0.2, 0.3]})
  state = population.create_state(*stacked, step=0)
  with pytest.raises(ValueError, match='learning_rate'):  # hyperparameters are not per-step settings
    population.train(state, 4, [7, 7], member_settings={'learning_rate': [0.1, 0.2]})


def test_a_run_alone_takes_member_settings_as_a_population_of_one():
  """A run alone is a population of one: its start step as a member setting trains it exactly as a state
  created at that step does; a setting it does not know, or one value too many, is refused."""
  alone = _trainer({'learning_rate': 0.05}, 1)
  params, model_state, keep_mask = _start(alone)
  stacked = [steps.stack_members([tree]) for tree in (params, model_state, keep_mask)]
  waiting = alone.train(alone.create_state(*stacked, step=0), 20, [7], member_settings={'start_step': [8]})
  started = alone.train(alone.create_state(*stacked, step=8), 20, [7])
  waited = parallel.to_host(waiting.state.params)
  chex.assert_trees_all_equal(waited, parallel.to_host(started.state.params))
  assert not np.allclose(steps.member(waited, 0)['dense_0']['kernel'], params['dense_0']['kernel'])
  assert waiting.curve[-1]['train_loss'][0] == pytest.approx(started.curve[-1]['train_loss'][0], rel=1e-4)
  with pytest.raises(ValueError, match='warmup_steps'):
    alone.train(alone.create_state(*stacked, step=0), 4, [7], member_settings={'warmup_steps': [2]})
  with pytest.raises(ValueError, match='2 values for 1 members'):
    alone.train(alone.create_state(*stacked, step=0), 4, [7], member_settings={'start_step': [0, 2]})


def test_one_schedule_gives_the_same_rates_for_held_and_given_hyperparameters():
  """The schedule a member's optimizer state drives (traced learning rate and warmup) is the schedule of a
  run given the same values as constants: bitwise, at every step of every kind of schedule."""
  for schedule, extra in (
      ('constant', {'warmup_steps': 7}),
      ('step', {'decay_boundaries': (10, 30), 'warmup_steps': 3}),
      ('cosine', {'warmup_steps': 6}),
      ('cosine', {}),
  ):
    training = config_lib.training_spec({'learning_rate': 0.3, 'schedule': schedule, **extra})
    boundaries = tuple(training.decay_boundaries)
    given = jax.jit(
        optim.learning_rate_schedule(0.3, 50, schedule, training.warmup_steps, boundaries, training.decay_factor)
    )

    @jax.jit
    def held(step, learning_rate, warmup_steps, schedule=schedule, boundaries=boundaries, training=training):
      return optim.learning_rate_schedule(learning_rate, 50, schedule, warmup_steps, boundaries, training.decay_factor)(
          step
      )

    for step in range(50):
      rate = held(np.int32(step), np.float32(0.3), np.int32(training.warmup_steps))
      assert np.asarray(rate) == np.asarray(given(np.int32(step))), (schedule, step)
    assert float(rate) < 0.3 if schedule != 'constant' else float(rate) == pytest.approx(0.3)

"""Tests for lth_jax.optim: the masked optimizer keeps pruned weights at exactly 0.0, its state does not
leak, and the learning rate follows the absolute step."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lth_jax import config as config_lib
from lth_jax import masks
from lth_jax import optim
from lth_jax.training import steps as steps_lib
from lth_jax.models.dense import LeNet

MOMENTUM = 0.9
CONFIGS = {
    'sgd': dict(optimizer='sgd', learning_rate=0.1, weight_decay=1e-3),
    'momentum': dict(optimizer='momentum', learning_rate=0.1, momentum=MOMENTUM, weight_decay=1e-3),
    'nesterov': dict(optimizer='nesterov', learning_rate=0.1, momentum=MOMENTUM, weight_decay=1e-3),
    'adam': dict(optimizer='adam', learning_rate=1e-2, weight_decay=1e-3),
    'adamw': dict(optimizer='adamw', learning_rate=1e-2, weight_decay=1e-2),
}
# Names of the per-parameter optimizer state in optax's NamedTuples.
STATE_FIELDS = {'sgd': (), 'momentum': ('trace',), 'nesterov': ('trace',), 'adam': ('mu', 'nu'), 'adamw': ('mu', 'nu')}


def training_config(**fields):
  return config_lib.training_spec(fields)


def random_kernel_mask(params, seed, density=0.5):
  """Random keep mask on kernels (about `density` kept), all True elsewhere, as numpy bools."""
  rng = np.random.default_rng(seed)
  prunable = masks.prunable_tree(params)
  return jax.tree_util.tree_map(
      lambda leaf, flag: (rng.random(leaf.shape) < density) if flag else np.ones(leaf.shape, bool), params, prunable
  )


def kernel_leaves(tree):
  return [
      leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0] if masks.path_to_names(path)[-1] == 'kernel'
  ]


# ----------------------------------------------------------------------------------------------
# Training with train_step: masked weights stay exactly zero


@pytest.fixture(scope='module', params=list(CONFIGS))
def trained(request):
  """40 train_steps of a small LeNet on random data with a random kernel mask."""
  name = request.param
  model = LeNet(num_outputs=3, hidden_sizes=(16,))
  rng = np.random.default_rng(0)
  inputs = jnp.asarray(rng.normal(size=(40, 32, 10)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 3, size=(40, 32)), jnp.int32)
  params = model.init(jax.random.PRNGKey(0), inputs[0])['params']
  mask = random_kernel_mask(params, seed=1)
  params0 = masks.apply(params, mask)
  optimizer = optim.from_config(training_config(**CONFIGS[name]), total_steps=40)
  state = steps_lib.TrainState(
      step=jnp.asarray(0, jnp.int32), params=params0, model_state={}, opt_state=optimizer.init(params0), keep_mask=mask
  )
  step = jax.jit(functools.partial(steps_lib.train_step, model=model, optimizer=optimizer, task='classification'))
  for index in range(inputs.shape[0]):
    state, _ = step(state, inputs[index], targets[index])
  return dict(name=name, mask=mask, params0=params0, state=state)


def test_masked_weights_are_exactly_zero_after_training(trained):
  state, mask = trained['state'], trained['mask']
  assert int(state.step) == 40
  # Equality, not closeness: masking the trained weights must change nothing.
  chex.assert_trees_all_equal(masks.apply(state.params, mask), state.params)
  for weight, keep in zip(kernel_leaves(state.params), kernel_leaves(mask)):
    assert (~keep).any()
    assert np.all(np.asarray(weight)[~keep] == 0.0)


def test_unmasked_weights_change(trained):
  state, mask, params0 = trained['state'], trained['mask'], trained['params0']
  for before, after, keep in zip(kernel_leaves(params0), kernel_leaves(state.params), kernel_leaves(mask)):
    before, after = np.asarray(before), np.asarray(after)
    assert np.all(after[keep] != before[keep])  # weight decay moves every surviving weight
  assert np.all(np.isfinite(np.asarray(state.params['output']['kernel'])))


def test_optimizer_state_is_zero_at_masked_positions(trained):
  """Momentum traces and Adam moments accumulate nothing for masked weights."""
  state, mask = trained['state'], trained['mask']
  fields = STATE_FIELDS[trained['name']]
  if not fields:  # plain SGD keeps no per-weight state at all, so there is nothing that could leak
    assert not [leaf for leaf in jax.tree_util.tree_leaves(state.opt_state) if np.ndim(leaf) > 0]
  for field in fields:
    moments = optax.tree_utils.tree_get(state.opt_state, field)
    assert moments is not None, field
    chex.assert_trees_all_equal_structs(moments, state.params)
    for moment, keep in zip(kernel_leaves(moments), kernel_leaves(mask)):
      moment = np.asarray(moment)
      assert np.all(moment[~keep] == 0.0), field
      assert np.any(moment[keep] != 0.0), field  # the state really is the optimizer's state


# ----------------------------------------------------------------------------------------------
# No leak: masked gradients have no effect, and unmasking applies only the fresh gradient


def hand_made_params():
  rng = np.random.default_rng(2)
  return {
      'dense_0': {'kernel': jnp.asarray(rng.normal(size=(6, 4)), jnp.float32), 'bias': jnp.zeros(4)},
      'output': {'kernel': jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), 'bias': jnp.zeros(3)},
  }


def fresh_gradient_update(name, gradient, count):
  """The update of a weight whose optimizer state is all zeros and whose value is 0.0, at step `count`
  (1-based) of the optimizer: what 'nothing but the fresh gradient' means for each optimizer."""
  config = CONFIGS[name]
  learning_rate = config['learning_rate']
  if name in ('sgd', 'momentum'):
    return -learning_rate * gradient
  if name == 'nesterov':
    return -learning_rate * (1.0 + MOMENTUM) * gradient
  b1, b2, eps = 0.9, 0.999, 1e-8  # optax.scale_by_adam defaults
  mu_hat = (1.0 - b1) * gradient / (1.0 - b1**count)
  nu_hat = (1.0 - b2) * gradient**2 / (1.0 - b2**count)
  return -learning_rate * mu_hat / (np.sqrt(nu_hat) + eps)


@pytest.mark.parametrize('name', list(CONFIGS))
def test_masked_gradients_do_not_leak_and_unmasking_applies_only_the_fresh_gradient(name):
  """Two runs that differ only in huge gradients at masked positions must be bit-identical, before and
  after unmasking; after unmasking, previously masked weights move by the fresh gradient alone."""
  optimizer = optim.from_config(training_config(**CONFIGS[name]), total_steps=100)
  params0 = hand_made_params()
  mask = random_kernel_mask(params0, seed=3)
  params0 = masks.apply(params0, mask)

  @jax.jit
  def step(params, opt_state, grads, keep_mask, step):
    updates, opt_state = optimizer.update(grads, opt_state, params, keep_mask=keep_mask, step=step)
    return optax.apply_updates(params, updates), opt_state, updates

  rng = np.random.default_rng(4)
  runs = []
  for garbage_scale in (0.0, 1e30):
    params, opt_state = params0, optimizer.init(params0)
    grad_rng = np.random.default_rng(5)  # identical true gradients in both runs
    for index in range(10):
      grads = jax.tree_util.tree_map(lambda leaf: grad_rng.normal(size=leaf.shape).astype(np.float32), params0)
      garbage = jax.tree_util.tree_map(
          lambda leaf: (garbage_scale * rng.normal(size=leaf.shape)).astype(np.float32), params0
      )
      grads = jax.tree_util.tree_map(lambda g, junk, keep: np.where(keep, g, junk), grads, garbage, mask)
      params, opt_state, _ = step(params, opt_state, grads, mask, index)
    runs.append((params, opt_state))
  chex.assert_trees_all_equal(runs[0], runs[1])

  # Unmask everything and take one step with a fresh gradient.
  fresh = jax.tree_util.tree_map(lambda leaf: rng.normal(size=leaf.shape).astype(np.float32), params0)
  all_true = masks.ones_like(params0)
  updates = [step(params, opt_state, fresh, all_true, 10)[2] for params, opt_state in runs]
  chex.assert_trees_all_equal(updates[0], updates[1])
  for update, gradient, keep in zip(kernel_leaves(updates[0]), kernel_leaves(fresh), kernel_leaves(mask)):
    expected = fresh_gradient_update(name, gradient[~keep], count=11)
    np.testing.assert_allclose(np.asarray(update)[~keep], expected, rtol=1e-5)


@pytest.mark.parametrize('name', ['momentum', 'adam'])
def test_weights_pruned_mid_run_stay_zero_despite_stale_state(name):
  """Pruning with the optimizer state kept: the state still holds momentum for the newly pruned weights,
  yet they receive exactly zero updates (the final masking, not only the gradient masking, matters)."""
  optimizer = optim.from_config(training_config(**CONFIGS[name]), total_steps=100)
  params = hand_made_params()
  opt_state = optimizer.init(params)
  update = jax.jit(functools.partial(optimizer.update, step=0))
  rng = np.random.default_rng(6)

  def grads():
    return jax.tree_util.tree_map(lambda leaf: rng.normal(size=leaf.shape).astype(np.float32), params)

  all_true = masks.ones_like(params)
  for _ in range(5):
    updates, opt_state = update(grads(), opt_state, params, keep_mask=all_true)
    params = optax.apply_updates(params, updates)
  mask = random_kernel_mask(params, seed=7)
  params = masks.apply(params, mask)
  stale = optax.tree_utils.tree_get(opt_state, STATE_FIELDS[name][0])
  assert np.any(np.asarray(stale['dense_0']['kernel'])[~mask['dense_0']['kernel']] != 0.0)
  for _ in range(5):
    updates, opt_state = update(grads(), opt_state, params, keep_mask=mask)
    for leaf, keep in zip(jax.tree_util.tree_leaves(updates), jax.tree_util.tree_leaves(mask)):
      assert np.all(np.asarray(leaf)[~keep] == 0.0)
    params = optax.apply_updates(params, updates)
  chex.assert_trees_all_equal(masks.apply(params, mask), params)


def test_keep_pruned_at_zero_wraps_any_optax_transformation():
  params = hand_made_params()
  mask = random_kernel_mask(params, seed=8)
  params = masks.apply(params, mask)
  optimizer = optim.keep_pruned_at_zero(optax.adamw(1e-2, weight_decay=0.1))
  opt_state = optimizer.init(params)
  assert isinstance(opt_state, optim.MaskedUpdateState)
  rng = np.random.default_rng(9)
  for _ in range(5):
    grads = jax.tree_util.tree_map(lambda leaf: rng.normal(size=leaf.shape).astype(np.float32), params)
    updates, opt_state = optimizer.update(grads, opt_state, params, keep_mask=mask, step=3)
    params = optax.apply_updates(params, updates)
  chex.assert_trees_all_equal(masks.apply(params, mask), params)
  assert np.all(np.asarray(params['output']['kernel'])[mask['output']['kernel']] != 0.0)


# ----------------------------------------------------------------------------------------------
# Learning-rate schedules


def rates(schedule, steps):
  return np.array([float(schedule(step)) for step in steps])


def test_constant_schedule():
  schedule = optim.learning_rate_schedule(0.1, total_steps=100, schedule='constant')
  np.testing.assert_allclose(rates(schedule, [0, 1, 50, 100, 10_000]), 0.1, rtol=1e-7)
  assert schedule(0).dtype == jnp.float32


def test_step_schedule_decays_at_each_boundary():
  schedule = optim.learning_rate_schedule(
      0.1, total_steps=300, schedule='step', decay_boundaries=(100, 200), decay_factor=0.2
  )
  steps = [0, 99, 100, 101, 199, 200, 299, 10_000]
  expected = [0.1, 0.1, 0.02, 0.02, 0.02, 0.004, 0.004, 0.004]
  np.testing.assert_allclose(rates(schedule, steps), expected, rtol=1e-6)


def test_step_schedule_defaults_to_a_factor_of_ten():
  schedule = optim.learning_rate_schedule(1.0, total_steps=300, schedule='step', decay_boundaries=(10,))
  np.testing.assert_allclose(rates(schedule, [9, 10]), [1.0, 0.1], rtol=1e-6)


def test_cosine_schedule_decays_to_zero_at_total_steps():
  schedule = optim.learning_rate_schedule(2.0, total_steps=100, schedule='cosine')
  steps = [0, 25, 50, 75, 100, 150]
  expected = [2.0 * 0.5 * (1 + np.cos(np.pi * min(step, 100) / 100)) for step in steps]
  np.testing.assert_allclose(rates(schedule, steps), expected, rtol=1e-5, atol=1e-7)
  assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize('kind', ['constant', 'step', 'cosine'])
def test_warmup_rises_linearly_to_the_peak(kind):
  peak, warmup = 0.5, 10
  schedule = optim.learning_rate_schedule(
      peak, total_steps=110, schedule=kind, warmup_steps=warmup, decay_boundaries=(60,), decay_factor=0.1
  )
  during = rates(schedule, range(warmup))
  assert during[0] <= peak / warmup + 1e-7  # starts near 0
  np.testing.assert_allclose(np.diff(during), peak / warmup, rtol=1e-5)  # linear, slope peak / warmup
  assert np.all(during <= peak + 1e-7)
  assert float(schedule(warmup)) == pytest.approx(peak, rel=1e-6)  # the peak at warmup_steps
  if kind == 'constant':
    assert float(schedule(100)) == pytest.approx(peak, rel=1e-6)
  elif kind == 'step':  # boundaries are absolute steps, not counted from the end of warmup
    np.testing.assert_allclose(rates(schedule, [59, 60]), [peak, 0.1 * peak], rtol=1e-6)
  else:  # the cosine spans the steps after warmup and ends at total_steps
    assert float(schedule(60)) == pytest.approx(0.5 * peak, rel=1e-5)
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-7)


def test_schedule_is_jittable_and_traced_steps_agree():
  schedule = optim.learning_rate_schedule(0.5, total_steps=110, schedule='cosine', warmup_steps=10)
  jitted = jax.jit(schedule)
  for step in (0, 5, 10, 42, 110):
    assert float(jitted(jnp.asarray(step, jnp.int32))) == pytest.approx(float(schedule(step)), rel=1e-6)


def test_step_argument_drives_the_learning_rate():
  """Same gradient, fresh state: the update at absolute step 5000 is the step-0 update times the decay."""
  config = training_config(
      optimizer='momentum',
      learning_rate=0.1,
      momentum=0.9,
      schedule='step',
      decay_boundaries=(1000, 3000),
      decay_factor=0.1,
  )
  optimizer = optim.from_config(config, total_steps=6000)
  params = hand_made_params()
  grads = jax.tree_util.tree_map(lambda leaf: jnp.ones_like(leaf) * 0.3, params)
  mask = masks.ones_like(params)

  def update_at(step):
    updates, _ = optimizer.update(grads, optimizer.init(params), params, keep_mask=mask, step=step)
    return updates

  at_zero = update_at(0)
  chex.assert_trees_all_close(at_zero, jax.tree_util.tree_map(lambda g: -0.1 * g, grads), rtol=1e-6)
  chex.assert_trees_all_equal(update_at(999), at_zero)
  chex.assert_trees_all_close(update_at(5000), jax.tree_util.tree_map(lambda u: 0.01 * u, at_zero), rtol=1e-5)
  chex.assert_trees_all_close(
      update_at(jnp.asarray(2000, jnp.int32)), jax.tree_util.tree_map(lambda u: 0.1 * u, at_zero), rtol=1e-5
  )


def test_from_config_warmup_uses_the_absolute_step():
  config = training_config(optimizer='sgd', learning_rate=1.0, warmup_steps=4)
  optimizer = optim.from_config(config, total_steps=100)
  params = hand_made_params()
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  mask = masks.ones_like(params)
  for step, rate in [(0, 0.25), (1, 0.5), (3, 1.0), (50, 1.0)]:
    updates, _ = optimizer.update(grads, optimizer.init(params), params, keep_mask=mask, step=step)
    chex.assert_trees_all_close(updates, jax.tree_util.tree_map(lambda g: -rate * g, grads), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Errors


def test_unknown_optimizer_names_the_field():
  with pytest.raises(ValueError, match=r'training\.optimizer'):
    optim.from_config(training_config(optimizer='rmsprop', learning_rate=0.1), total_steps=10)
  with pytest.raises(ValueError, match='rmsprop'):
    optim.direction('rmsprop')


def test_unknown_schedule_names_the_field():
  with pytest.raises(ValueError, match=r'training\.schedule'):
    optim.from_config(training_config(optimizer='sgd', learning_rate=0.1, schedule='linear'), total_steps=10)
  with pytest.raises(ValueError, match='linear'):
    optim.learning_rate_schedule(0.1, total_steps=10, schedule='linear')


@pytest.mark.parametrize('optimizer', ['momentum', 'adamw'])
def test_weight_decay_can_leave_batch_norm_parameters_alone(optimizer):
  params = {
      'conv_0': {'kernel': np.full((2, 2), 2.0, np.float32)},
      'stage_0_block_0': {'norm_1': {'scale': np.full(2, 2.0, np.float32), 'bias': np.full(2, 2.0, np.float32)}},
      'output': {'kernel': np.full((2, 2), 2.0, np.float32), 'bias': np.full(2, 2.0, np.float32)},
  }
  assert optim.outside_batch_norm(params) == {
      'conv_0': {'kernel': True},
      'stage_0_block_0': {'norm_1': {'scale': False, 'bias': False}},
      'output': {'kernel': True, 'bias': True},
  }
  zero_gradients = jax.tree_util.tree_map(np.zeros_like, params)
  for decay_batch_norm in (True, False):
    transform = optim.direction(optimizer, weight_decay=0.5, decay_batch_norm=decay_batch_norm)
    updates, _ = transform.update(zero_gradients, transform.init(params), params)
    assert float(np.abs(updates['conv_0']['kernel']).min()) > 0
    assert float(np.abs(updates['output']['bias']).min()) > 0
    norm_updates = updates['stage_0_block_0']['norm_1']
    moved = [float(np.abs(leaf).max()) > 0 for leaf in (norm_updates['scale'], norm_updates['bias'])]
    assert moved == [decay_batch_norm] * 2

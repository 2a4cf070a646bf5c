"""The streaming feed: the Trainer reads augmented batches from the grain pipeline over tfds files
(here TFDS mock data), with the same guarantees as the in-memory path."""

import chex
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import lth_jax
from lth_jax import config as config_lib
from lth_jax import data as data_lib
from lth_jax.data import pipeline
from lth_jax import models as models_lib
from lth_jax import optim
from lth_jax.search import experiment
from lth_jax.search import lottery
from lth_jax.training import feeds
from lth_jax.training import parallel
from lth_jax.training import run_state
from lth_jax.training import steps
from lth_jax.training import trainer as trainer_lib
from tests import helpers

NUM_EXAMPLES = 64


@pytest.fixture(name='mock_cifar10')
def fixture_mock_cifar10():
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    yield


def _trainer(dataset, steps_per_dispatch=4, population_size=1, num_devices=0, batch_size=16):
  config = helpers.tiny_config()
  model = models_lib.build(config_lib.model_spec(config.model), dataset.num_outputs)
  config.training.optimizer = 'momentum'
  config.training.learning_rate = 0.02
  return trainer_lib.Trainer(
      model,
      dataset,
      optim.from_config(config.training, 100),
      parallel.create_mesh(num_devices),
      batch_size,
      steps_per_dispatch,
      eval_batch_size=24,
      population_size=population_size,
  )


def _one(tree):
  """A host tree as the state of a population of one (a run alone): a leading member axis of size 1."""
  return steps.stack_members([tree])


def _fresh_state(trainer, seed=0):
  """A run alone's fresh TrainState on `trainer`, and the one member's host (params, model_state, keep_mask)."""
  params, model_state = trainer.init_variables(seed)
  keep_mask = jax.tree_util.tree_map(lambda leaf: np.ones(leaf.shape, bool), params)
  return trainer.create_state(_one(params), _one(model_state), _one(keep_mask), 0), (params, model_state, keep_mask)


def test_cifar10_streams_augmented_batches_that_are_a_pure_function_of_seed_and_step(mock_cifar10):
  dataset = data_lib.build(config_lib.data_spec({'name': 'cifar10', 'streaming': True}))
  assert isinstance(dataset, pipeline.StreamingDataset)
  assert (dataset.num_train, dataset.num_test, dataset.input_shape) == (NUM_EXAMPLES, NUM_EXAMPLES, (32, 32, 3))
  feed = feeds.StreamingFeed(dataset, parallel.create_mesh(), 16, 24, num_threads=2, prefetch=2)
  continued = np.concatenate([feed.host_steps(5, 0, 3)['inputs'], feed.host_steps(5, 3, 2)['inputs']])
  fresh = feeds.StreamingFeed(dataset, parallel.create_mesh(), 16, 24, num_threads=2, prefetch=2)
  np.testing.assert_array_equal(fresh.host_steps(5, 3, 2)['inputs'], continued[3:])
  step_batches = dataset.step_batches(5, 16)
  np.testing.assert_array_equal(continued[4], step_batches[4]['inputs'])
  # Augmented: a batch is not just the stored images of its examples (crops move them, flips mirror).
  indices = step_batches.example_indices(4)
  stored = np.stack([np.asarray(dataset.train_records[int(index)]['image']) for index in indices])
  assert continued[4].dtype == np.uint8 and not np.array_equal(continued[4], stored)


@pytest.mark.slow
def test_streaming_training_is_the_same_for_any_dispatch_size_and_when_resumed(mock_cifar10):
  dataset = data_lib.build(config_lib.data_spec({'name': 'cifar10', 'streaming': True}))
  finals = []
  for steps_per_dispatch in (1, 4):
    trainer = _trainer(dataset, steps_per_dispatch)
    state, _ = _fresh_state(trainer)
    result = trainer.train(state, 7, data_seed=[3], eval_every=3)
    finals.append((parallel.to_host(result.state.params), result.curve))
  chex.assert_trees_all_close(finals[0][0], finals[1][0], atol=1e-6)
  assert [entry['step'] for entry in finals[1][1]] == [3, 6, 7]
  assert len(finals[1][1][-1]['train_loss']) == 1
  assert finals[0][1][-1]['train_loss'][0] == pytest.approx(finals[1][1][-1]['train_loss'][0], rel=1e-5)

  # Stopped at step 4 and continued by a new Trainer (a restarted process): the same run.
  trainer = _trainer(dataset, 4)
  state, _ = _fresh_state(trainer)
  saved = []

  def keep_checkpoint(checkpoint):
    saved.append(
        run_state.RunCheckpoint(
            parallel.to_host(checkpoint.state),
            parallel.to_host(checkpoint.train_sums),
            checkpoint.train_sum_steps,
            checkpoint.curve,
            checkpoint.snapshots,
        )
    )

  with pytest.raises(run_state.Preempted):
    trainer.train(state, 7, [3], eval_every=3, on_checkpoint=keep_checkpoint, should_stop=lambda step: step >= 4)
  restarted = _trainer(dataset, 4)
  resumed = saved[-1]
  resumed.state = restarted.put_state(resumed.state)
  result = restarted.train(resumed, 7, [3], eval_every=3)
  chex.assert_trees_all_equal(parallel.to_host(result.state.params), finals[1][0])


def test_streaming_population_members_equal_their_single_runs(mock_cifar10):
  dataset = data_lib.build(config_lib.data_spec({'name': 'cifar10', 'streaming': True}))
  single = _trainer(dataset)
  members = []
  for seed in (3, 8):
    state, _ = _fresh_state(single, seed=0)
    members.append(steps.member(parallel.to_host(single.train(state, 5, data_seed=[seed]).state.params), 0))
  population = _trainer(dataset, population_size=2)
  _, (params, model_state, keep_mask) = _fresh_state(single, seed=0)
  state = population.create_state(
      *(steps.stack_members([tree, tree]) for tree in (params, model_state, keep_mask)), step=0
  )
  result = population.train(state, 5, data_seed=[3, 8])
  for index, expected in enumerate(members):
    chex.assert_trees_all_close(steps.member(parallel.to_host(result.state.params), index), expected, atol=1e-6)


def test_streamed_evaluation_equals_the_cached_and_the_in_memory_one(mock_cifar10, monkeypatch):
  streaming = _trainer(data_lib.build(config_lib.data_spec({'name': 'cifar10', 'streaming': True})))
  params, model_state = (_one(tree) for tree in streaming.init_variables(1))
  cached = streaming.evaluate_params(params, model_state)
  monkeypatch.setattr(feeds, 'EVALUATION_CACHE_BYTES', 0)  # stream every batch at every evaluation
  streamed = _trainer(data_lib.build(config_lib.data_spec({'name': 'cifar10', 'streaming': True}))).evaluate_params(
      params, model_state
  )
  in_memory = _trainer(data_lib.build(config_lib.data_spec({'name': 'cifar10'}))).evaluate_params(params, model_state)
  assert len(cached['test_accuracy']) == len(cached['test_loss']) == 1
  for other in (streamed, in_memory):
    assert other['test_accuracy'] == cached['test_accuracy']
    assert other['test_loss'][0] == pytest.approx(cached['test_loss'][0], rel=1e-5)


@pytest.mark.slow
def test_streaming_lottery_run_with_snip_on_mock_cifar10(tmp_path, mock_cifar10):
  config = helpers.tiny_streaming_config(branches=('snip',))
  results = lottery.run(config, str(tmp_path), log=lambda line: None)
  assert sorted((r['level'], r['branch']) for r in results.records) == [(0, 'ticket'), (1, 'snip'), (1, 'ticket')]
  assert all(0 <= r['test_accuracy'] <= 1 for r in results.records)


def test_a_dataset_without_a_streaming_pipeline_is_refused_by_name():
  with pytest.raises(lth_jax.ConfigError, match="dataset.streaming=True: no streaming pipeline for 'digits'"):
    experiment.prepare(helpers.tiny_config(dataset__streaming=True))


def test_on_device_normalization_matches_the_host_one():
  images = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
  np.testing.assert_allclose(
      np.asarray(
          jax.jit(lambda x: pipeline.normalize_on_device(x, pipeline.CIFAR10_MEAN, pipeline.CIFAR10_STD))(images)
      ),
      pipeline.normalize(images, pipeline.CIFAR10_MEAN, pipeline.CIFAR10_STD),
      atol=1e-5,
  )

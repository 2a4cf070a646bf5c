"""Tests for lth_jax.data: batch order, generated datasets, caching and the tfds readers."""

from __future__ import annotations

import os
import pathlib
import random

import chex
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from lth_jax import config as config_lib
from lth_jax import data
from lth_jax.data import arrays
from lth_jax.data import embedded
from lth_jax.data import tfds_source


def make_config(**fields) -> ml_collections.ConfigDict:
  """A dataset config with the given fields."""
  return ml_collections.ConfigDict(fields)


# ----------------------------------------------------------------------------------------------
# batch_indices


def test_batch_indices_is_consistent_across_splits_of_the_step_range():
  seed, num_examples, batch_size = 3, 50, 8  # 6 steps per epoch, 2 examples dropped.
  whole = arrays.batch_indices(seed, 0, 40, num_examples, batch_size)
  chex.assert_shape(whole, (40, batch_size))
  assert whole.dtype == np.int32
  for step in range(40):
    np.testing.assert_array_equal(whole[step], arrays.batch_indices(seed, step, 1, num_examples, batch_size)[0])
  for split_point in (1, 5, 6, 13, 39):
    first = arrays.batch_indices(seed, 0, split_point, num_examples, batch_size)
    rest = arrays.batch_indices(seed, split_point, 40 - split_point, num_examples, batch_size)
    np.testing.assert_array_equal(np.concatenate([first, rest]), whole)


def test_batch_indices_matches_the_documented_formula():
  seed, num_examples, batch_size = 7, 20, 6  # 3 steps per epoch.
  indices = arrays.batch_indices(seed, 4, 1, num_examples, batch_size)[0]
  permutation = np.random.default_rng([seed, 1]).permutation(num_examples)
  np.testing.assert_array_equal(indices, permutation[6:12])


def test_batch_indices_each_epoch_is_a_permutation():
  num_examples, batch_size = 64, 16  # Divides evenly: every example appears once per epoch.
  indices = arrays.batch_indices(0, 0, 12, num_examples, batch_size)
  for epoch in range(3):
    epoch_indices = indices[epoch * 4 : (epoch + 1) * 4].ravel()
    np.testing.assert_array_equal(np.sort(epoch_indices), np.arange(num_examples))
  assert not np.array_equal(indices[:4], indices[4:8]), 'epochs should be reshuffled'


def test_batch_indices_with_remainder_has_no_repeats_within_an_epoch():
  indices = arrays.batch_indices(1, 0, 3, 50, 16)  # 3 steps per epoch, 2 examples dropped.
  flat = indices.ravel()
  assert len(np.unique(flat)) == flat.size
  assert flat.min() >= 0 and flat.max() < 50


def test_batch_indices_different_seeds_differ():
  first = arrays.batch_indices(0, 0, 5, 100, 10)
  second = arrays.batch_indices(1, 0, 5, 100, 10)
  assert not np.array_equal(first, second)
  np.testing.assert_array_equal(first, arrays.batch_indices(0, 0, 5, 100, 10))


def test_batch_indices_zero_steps_is_empty():
  chex.assert_shape(arrays.batch_indices(0, 10, 0, 100, 10), (0, 10))


@pytest.mark.parametrize(
    'arguments, message',
    [
        (dict(batch_size=11, num_examples=10), 'batch_size'),
        (dict(batch_size=0, num_examples=10), 'batch_size'),
        (dict(batch_size=-2, num_examples=10), 'batch_size'),
        (dict(batch_size=2, num_examples=10, start_step=-1), 'start_step'),
        (dict(batch_size=2, num_examples=10, num_steps=-1), 'num_steps'),
        (dict(batch_size=2, num_examples=10, seed=-1), 'seed'),
    ],
)
def test_batch_indices_errors(arguments, message):
  full_arguments = dict(seed=0, start_step=0, num_steps=1) | arguments
  with pytest.raises(ValueError, match=message):
    arrays.batch_indices(**full_arguments)


# ----------------------------------------------------------------------------------------------
# Registry


def test_dataset_names_are_exported():
  assert data.DATASET_NAMES == ('sum_of_two', 'digits', 'mnist1d', 'mnist', 'cifar10', 'imagenet2012')
  assert data.STREAMING_NAMES == ('cifar10', 'imagenet2012', 'mnist')


def test_unknown_name_error_names_field_value_and_known_names():
  with pytest.raises(ValueError) as raised:
    data.build(config_lib.data_spec(make_config(name='imagenet')))
  message = str(raised.value)
  assert 'dataset.name' in message and 'imagenet' in message
  for name in data.DATASET_NAMES:
    assert name in message


def test_array_dataset_rejects_mismatched_lengths():
  with pytest.raises(ValueError, match='differ in length'):
    arrays.ArrayDataset(
        name='broken',
        task='regression',
        train_inputs=np.zeros((3, 2), np.float32),
        train_targets=np.zeros((2, 1), np.float32),
        test_inputs=np.zeros((1, 2), np.float32),
        test_targets=np.zeros((1, 1), np.float32),
        num_classes=None,
    )


# ----------------------------------------------------------------------------------------------
# sum_of_two


def test_sum_of_two_shapes_ranges_and_targets():
  dataset = data.build(
      config_lib.data_spec(
          make_config(name='sum_of_two', num_train=500, num_test=200, train_range=(-1.0, 1.0), test_range=(1.0, 2.0))
      )
  )
  assert dataset.task == 'regression' and dataset.num_classes is None
  chex.assert_shape([dataset.train_inputs, dataset.train_targets], [(500, 2), (500, 1)])
  chex.assert_shape([dataset.test_inputs, dataset.test_targets], [(200, 2), (200, 1)])
  for array in (dataset.train_inputs, dataset.train_targets, dataset.test_inputs, dataset.test_targets):
    assert array.dtype == np.float32
  assert (dataset.num_train, dataset.num_test, dataset.input_shape, dataset.num_outputs) == (500, 200, (2,), 1)
  assert dataset.train_inputs.min() >= -1.0 and dataset.train_inputs.max() < 1.0
  assert dataset.test_inputs.min() >= 1.0 and dataset.test_inputs.max() < 2.0
  for inputs, targets in ((dataset.train_inputs, dataset.train_targets), (dataset.test_inputs, dataset.test_targets)):
    np.testing.assert_array_equal(targets[:, 0], inputs[:, 0] + inputs[:, 1])


def test_sum_of_two_defaults_and_determinism():
  dataset = data.build(config_lib.data_spec(make_config(name='sum_of_two')))
  assert (dataset.num_train, dataset.num_test) == (10000, 1000)
  again = data.build(config_lib.data_spec(make_config(name='sum_of_two', seed=0)))
  np.testing.assert_array_equal(dataset.train_inputs, again.train_inputs)
  other_seed = data.build(config_lib.data_spec(make_config(name='sum_of_two', seed=1)))
  assert not np.array_equal(dataset.train_inputs, other_seed.train_inputs)


def test_sum_of_two_train_data_does_not_depend_on_num_test():
  small = data.build(config_lib.data_spec(make_config(name='sum_of_two', num_train=100, num_test=10)))
  large = data.build(config_lib.data_spec(make_config(name='sum_of_two', num_train=100, num_test=50)))
  np.testing.assert_array_equal(small.train_inputs, large.train_inputs)


@pytest.mark.parametrize(
    'fields, message',
    [
        (dict(num_train=0), 'dataset.num_train must be a positive integer, got 0'),
        (dict(num_test=-5), 'dataset.num_test'),
        (dict(num_train=1.5), 'dataset.num_train'),
        (dict(train_range=(1.0, 1.0)), 'dataset.train_range'),
        (dict(test_range=(2.0, 1.0)), 'dataset.test_range'),
        (dict(test_range=(1.0,)), 'dataset.test_range'),
        (dict(seed=-1), 'dataset.seed'),
    ],
)
def test_sum_of_two_validation(fields, message):
  with pytest.raises(ValueError, match=message):
    data.build(config_lib.data_spec(make_config(name='sum_of_two', **fields)))


# ----------------------------------------------------------------------------------------------
# digits


def test_digits_shapes_dtypes_labels_and_standardization():
  dataset = data.build(config_lib.data_spec(make_config(name='digits', seed=0)))
  assert dataset.task == 'classification' and dataset.num_classes == 10 and dataset.num_outputs == 10
  assert dataset.num_train + dataset.num_test == 1797
  assert dataset.num_test == round(1797 * 0.2)
  assert dataset.input_shape == (64,)
  assert dataset.train_inputs.dtype == np.float32 and dataset.test_inputs.dtype == np.float32
  assert dataset.train_targets.dtype == np.int32 and dataset.test_targets.dtype == np.int32
  assert set(np.unique(dataset.train_targets)) == set(range(10))
  assert dataset.test_targets.min() >= 0 and dataset.test_targets.max() <= 9
  np.testing.assert_allclose(dataset.train_inputs.mean(axis=0), 0.0, atol=1e-5)
  feature_std = dataset.train_inputs.std(axis=0)
  # Constant pixels (std 0) stay at 0; all others have unit variance.
  assert np.all(np.isclose(feature_std, 1.0, atol=1e-4) | np.isclose(feature_std, 0.0, atol=1e-6))
  assert np.isclose(feature_std, 1.0, atol=1e-4).sum() > 50
  assert np.all(np.isfinite(dataset.test_inputs))


def test_digits_split_is_deterministic_and_seeded():
  first = data.build(config_lib.data_spec(make_config(name='digits', seed=5, test_fraction=0.5)))
  second = data.build(config_lib.data_spec(make_config(name='digits', seed=5, test_fraction=0.5)))
  other = data.build(config_lib.data_spec(make_config(name='digits', seed=6, test_fraction=0.5)))
  chex.assert_trees_all_equal(
      (first.train_inputs, first.train_targets, first.test_inputs),
      (second.train_inputs, second.train_targets, second.test_inputs),
  )
  assert abs(first.num_test - 1797 * 0.5) <= 1
  assert not np.array_equal(first.train_targets, other.train_targets)


def test_digits_num_train_and_num_test_take_the_first_examples_of_each_split():
  full = data.build(config_lib.data_spec(make_config(name='digits', seed=5)))
  limited = data.build(config_lib.data_spec(make_config(name='digits', seed=5, num_train=100, num_test=30)))
  assert (limited.num_train, limited.num_test) == (100, 30)
  np.testing.assert_array_equal(limited.train_targets, full.train_targets[:100])
  np.testing.assert_array_equal(limited.test_targets, full.test_targets[:30])
  np.testing.assert_allclose(limited.train_inputs.mean(axis=0), 0.0, atol=1e-5)  # its own statistics
  with pytest.raises(ValueError, match='dataset.num_test=5000 exceeds'):
    data.build(config_lib.data_spec(make_config(name='digits', num_test=5000)))
  with pytest.raises(ValueError, match='dataset.num_train must be a positive integer'):
    data.build(config_lib.data_spec(make_config(name='digits', num_train=0)))


@pytest.mark.parametrize('fraction', [0.0, 1.0, -0.1, 1.5])
def test_digits_rejects_bad_test_fraction(fraction):
  with pytest.raises(ValueError, match='dataset.test_fraction'):
    data.build(config_lib.data_spec(make_config(name='digits', test_fraction=fraction)))


# ----------------------------------------------------------------------------------------------
# mnist1d


@pytest.fixture(scope='module')
def mnist1d_cache_dir(tmp_path_factory) -> pathlib.Path:
  return tmp_path_factory.mktemp('mnist1d_cache')


@pytest.fixture(scope='module')
def mnist1d_dataset(mnist1d_cache_dir) -> arrays.ArrayDataset:
  """Full-size MNIST-1D generated once (~5 s) into a temporary cache."""
  return data.build(config_lib.data_spec(make_config(name='mnist1d', seed=0, data_dir=str(mnist1d_cache_dir))))


def test_mnist1d_shapes_dtypes_labels_and_standardization(mnist1d_dataset):
  dataset = mnist1d_dataset
  chex.assert_shape([dataset.train_inputs, dataset.test_inputs], [(4000, 40), (1000, 40)])
  chex.assert_shape([dataset.train_targets, dataset.test_targets], [(4000,), (1000,)])
  assert dataset.train_inputs.dtype == np.float32 and dataset.train_targets.dtype == np.int32
  assert dataset.task == 'classification' and dataset.num_outputs == 10
  assert set(np.unique(dataset.train_targets)) == set(range(10))
  np.testing.assert_allclose(dataset.train_inputs.mean(axis=0), 0.0, atol=1e-5)
  np.testing.assert_allclose(dataset.train_inputs.std(axis=0), 1.0, atol=1e-4)


def test_mnist1d_num_train_and_num_test_take_the_first_examples(mnist1d_dataset, mnist1d_cache_dir):
  limited = data.build(
      config_lib.data_spec(
          make_config(name='mnist1d', seed=0, data_dir=str(mnist1d_cache_dir), num_train=500, num_test=200)
      )
  )
  assert (limited.num_train, limited.num_test) == (500, 200)
  np.testing.assert_array_equal(limited.train_targets, mnist1d_dataset.train_targets[:500])
  np.testing.assert_array_equal(limited.test_targets, mnist1d_dataset.test_targets[:200])


def test_mnist1d_cache_is_written_atomically_and_reused(mnist1d_dataset, mnist1d_cache_dir, monkeypatch):
  files = sorted(os.listdir(mnist1d_cache_dir))
  assert files == [embedded.mnist1d_cache_path(mnist1d_cache_dir, 0).name], files  # No temp files left.

  def fail_to_generate(*args, **kwargs):
    raise AssertionError('make_dataset called although the cache exists')

  monkeypatch.setattr('mnist1d.data.make_dataset', fail_to_generate)
  cached = data.build(config_lib.data_spec(make_config(name='mnist1d', seed=0, data_dir=str(mnist1d_cache_dir))))
  chex.assert_trees_all_equal(
      (cached.train_inputs, cached.train_targets, cached.test_inputs, cached.test_targets),
      (
          mnist1d_dataset.train_inputs,
          mnist1d_dataset.train_targets,
          mnist1d_dataset.test_inputs,
          mnist1d_dataset.test_targets,
      ),
  )
  with pytest.raises(AssertionError, match='cache exists'):  # A new seed is not cached.
    data.build(config_lib.data_spec(make_config(name='mnist1d', seed=1, data_dir=str(mnist1d_cache_dir))))


def test_mnist1d_corrupt_cache_is_regenerated(tmp_path, monkeypatch):
  small_arrays = {
      'x': np.ones((4, 40), np.float32),
      'y': np.arange(4, dtype=np.int32),
      'x_test': np.zeros((2, 40), np.float32),
      'y_test': np.arange(2, dtype=np.int32),
  }
  monkeypatch.setattr(embedded, 'generate_mnist1d', lambda seed: small_arrays)
  embedded.mnist1d_cache_path(tmp_path, 3).write_bytes(b'not an npz file')
  dataset = data.build(config_lib.data_spec(make_config(name='mnist1d', seed=3, data_dir=str(tmp_path))))
  assert dataset.num_train == 4 and dataset.num_test == 2
  reloaded = embedded.read_cached_arrays(embedded.mnist1d_cache_path(tmp_path, 3), embedded.MNIST1D_ARRAY_NAMES)
  chex.assert_trees_all_equal(reloaded, small_arrays)


@pytest.fixture
def small_mnist1d_args(monkeypatch):
  """Shrinks MNIST-1D generation to 200 examples so seeding can be checked quickly."""
  import mnist1d.data

  original_get_dataset_args = mnist1d.data.get_dataset_args

  def small_args(as_dict=False):
    args = original_get_dataset_args(as_dict=False)
    args.num_samples = 200
    return args

  monkeypatch.setattr(mnist1d.data, 'get_dataset_args', small_args)


def test_mnist1d_generation_is_seeded_and_keeps_global_rng_state(small_mnist1d_args):
  np.random.seed(123)
  random.seed(123)
  expected_numpy, expected_python = np.random.rand(), random.random()
  np.random.seed(123)
  random.seed(123)
  first = embedded.generate_mnist1d(seed=4)
  assert (np.random.rand(), random.random()) == (expected_numpy, expected_python)
  second = embedded.generate_mnist1d(seed=4)
  other = embedded.generate_mnist1d(seed=5)
  chex.assert_shape(first['x'], (160, 40))
  chex.assert_trees_all_equal(first, second)
  assert not np.array_equal(first['x'], other['x'])


def test_cache_dir_resolution(monkeypatch, tmp_path):
  monkeypatch.setenv(embedded.CACHE_ENV_VAR, str(tmp_path / 'from_env'))
  assert embedded.resolve_cache_dir(None) == tmp_path / 'from_env'
  assert embedded.resolve_cache_dir(str(tmp_path / 'explicit')) == tmp_path / 'explicit'
  monkeypatch.delenv(embedded.CACHE_ENV_VAR)
  assert embedded.resolve_cache_dir(None) == pathlib.Path('~/.cache/lth_jax').expanduser()


# ----------------------------------------------------------------------------------------------
# mnist / cifar10 through tfds.data_source


@pytest.mark.parametrize(
    'name, image_shape, mean, std',
    [
        ('mnist', (28, 28, 1), (0.1307,), (0.3081,)),
        ('cifar10', (32, 32, 3), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    ],
)
def test_tfds_image_datasets_with_mock_data(name, image_shape, mean, std, tmp_path):
  with tfds.testing.mock_data(num_examples=12):
    dataset = data.build(config_lib.data_spec(make_config(name=name, data_dir=str(tmp_path), num_test=5)))
    raw = tfds.data_source(name, split='train', data_dir=str(tmp_path), download=False)
    raw_images = np.stack([raw[index]['image'] for index in range(12)])
    raw_labels = np.array([raw[index]['label'] for index in range(12)])
  assert dataset.name == name and dataset.task == 'classification' and dataset.num_classes == 10
  chex.assert_shape([dataset.train_inputs, dataset.test_inputs], [(12, *image_shape), (5, *image_shape)])
  chex.assert_shape([dataset.train_targets, dataset.test_targets], [(12,), (5,)])
  # uint8 images, normalized where they are used (dataset.model_inputs; inside the compiled step).
  assert dataset.train_inputs.dtype == np.uint8 and dataset.train_targets.dtype == np.int32
  assert dataset.input_normalization == (mean, std)
  assert dataset.input_shape == image_shape
  np.testing.assert_array_equal(dataset.train_inputs, raw_images)
  model_inputs = dataset.model_inputs(dataset.train_inputs)
  assert model_inputs.dtype == np.float32
  expected = (raw_images.astype(np.float32) / 255.0 - np.array(mean, np.float32)) / np.array(std, np.float32)
  np.testing.assert_allclose(model_inputs, expected, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(dataset.train_targets, raw_labels)
  assert dataset.train_targets.min() >= 0 and dataset.train_targets.max() <= 9
  # Normalized values stay within the images of 0 and 255 under the channel transform.
  low = (0.0 - np.array(mean)) / np.array(std)
  high = (1.0 - np.array(mean)) / np.array(std)
  assert np.all(model_inputs >= low - 1e-5) and np.all(model_inputs <= high + 1e-5)


def test_tfds_limit_larger_than_split_is_rejected(tmp_path):
  with tfds.testing.mock_data(num_examples=4):
    with pytest.raises(ValueError, match='dataset.num_train=10'):
      data.build(config_lib.data_spec(make_config(name='mnist', data_dir=str(tmp_path), num_train=10)))


@pytest.mark.parametrize('name', ['mnist', 'cifar10'])
def test_tfds_missing_dataset_raises_with_instructions(name, tmp_path):
  with pytest.raises(tfds_source.DatasetNotPreparedError) as raised:
    data.build(config_lib.data_spec(make_config(name=name, data_dir=str(tmp_path))))
  assert isinstance(raised.value, FileNotFoundError)
  message = str(raised.value)
  assert repr(name) in message and str(tmp_path) in message
  assert f'tfds build {name} --file_format=array_record --data_dir={tmp_path}' in message
  assert list(tmp_path.iterdir()) == [], 'nothing should be downloaded or prepared'


def test_tfds_rejects_bad_limits():
  with pytest.raises(ValueError, match='dataset.num_test must be a positive integer, got 0'):
    tfds_source.build_image_dataset(config_lib.data_spec(make_config(name='mnist', num_test=0)))

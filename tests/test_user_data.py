"""Your model, your data: datasets of your own arrays and sources (`data.from_arrays`,
`data.from_source`), any tfds dataset by name ('tfds:NAME'), and registered names."""

from __future__ import annotations

import chex
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from lth_jax import config as config_lib
from lth_jax import data
from lth_jax.config import compatibility
from lth_jax.config import schema
from lth_jax.search import lottery
from lth_jax.data import decoded_cache
from lth_jax.data import synthetic_tfds
from lth_jax.data import tfds_catalog
from tests import helpers


def _arrays(num_train=12, num_test=5, shape=(3,)):
  """Random float inputs and integer labels 0..2 of both splits."""
  rng = np.random.default_rng(0)
  return (
      rng.normal(size=(num_train, *shape)),
      np.arange(num_train) % 3,
      rng.normal(size=(num_test, *shape)),
      np.arange(num_test) % 3,
  )


# ----------------------------------------------------------------------------------------------
# from_arrays


def test_from_arrays_infers_classification_and_the_classes_of_both_splits():
  train_inputs, train_targets, test_inputs, _ = _arrays()
  test_targets = np.array([0, 1, 2, 4, 1])  # label 4 only in the test split
  dataset = data.from_arrays(train_inputs.astype(np.uint8), train_targets, test_inputs, test_targets)
  assert (dataset.task, dataset.num_classes, dataset.num_outputs) == ('classification', 5, 5)
  assert (dataset.name, dataset.num_train, dataset.num_test, dataset.input_shape) == ('arrays', 12, 5, (3,))
  assert dataset.train_inputs.dtype == np.float32 and dataset.test_inputs.dtype == np.float32
  assert dataset.train_targets.dtype == np.int32 and dataset.input_normalization is None
  np.testing.assert_array_equal(dataset.test_targets, test_targets)


def test_from_arrays_infers_regression_from_float_targets():
  train_inputs, _, test_inputs, _ = _arrays()
  dataset = data.from_arrays(train_inputs, train_inputs.sum(axis=1), test_inputs, test_inputs.sum(axis=1), name='sums')
  assert (dataset.name, dataset.task, dataset.num_classes, dataset.num_outputs) == ('sums', 'regression', None, 1)
  assert dataset.train_targets.dtype == np.float32


def test_from_arrays_takes_jax_arrays_and_a_given_task_and_number_of_classes():
  train_inputs, train_targets, test_inputs, test_targets = (jnp.asarray(array) for array in _arrays())
  dataset = data.from_arrays(
      train_inputs, train_targets.astype(jnp.float32), test_inputs, test_targets, task='classification', num_classes=7
  )
  assert (dataset.task, dataset.num_classes) == ('classification', 7)
  assert isinstance(dataset.train_inputs, np.ndarray) and dataset.train_targets.dtype == np.int32
  np.testing.assert_array_equal(dataset.train_targets, np.arange(12) % 3)


def _replace(index, value):
  arguments = list(_arrays())
  arguments[index] = value
  return arguments


@pytest.mark.parametrize(
    'arguments, options, message',
    [
        (_replace(1, np.zeros(10, int)), {}, 'train_inputs has 12 examples but train_targets has 10'),
        (_replace(3, np.zeros(4, int)), {}, 'test_inputs has 5 examples but test_targets has 4'),
        (
            _replace(2, np.zeros((5, 4))),
            {},
            'train_inputs and test_inputs differ in the shape of an example: (3,) vs (4,)',
        ),
        (_replace(0, np.zeros((0, 3))), {}, 'train_inputs is empty'),
        (_replace(2, np.full((5, 3), 'x')), {}, 'test_inputs must hold numbers, got dtype <U1'),
        (_replace(0, np.full((12, 3), np.nan)), {}, 'train_inputs must be finite, found NaN or infinity'),
        (
            _replace(1, np.arange(12) - 1),
            {},
            'train_targets must hold labels 0, 1, 2, ... (non-negative integers), found -1',
        ),
        (_arrays(), {'num_classes': 2}, 'num_classes=2 is too small: found the label 2 in train_targets'),
        (_arrays(), {'num_classes': 0}, 'num_classes must be a positive integer, got 0'),
        (_arrays(), {'task': 'ranking'}, "task must be one of ('classification', 'regression')"),
        (
            _replace(1, np.full(12, 0.5)),
            {'task': 'classification'},
            'train_targets must hold integer labels for classification, found 0.5',
        ),
        (
            _replace(1, np.zeros((12, 1), int))[:3] + [np.zeros((5, 1), int)],
            {},
            'train_targets must hold one integer label per example (shape (12,))',
        ),
        (
            _replace(3, np.zeros(5)),
            {'num_classes': 3},
            "num_classes=3 is for classification, but the task is 'regression'",
        ),
        (_replace(0, 3.0), {}, 'train_inputs must be an array of examples (one per row), got a scalar'),
        (_replace(0, [[1.0, 2.0], [3.0]]), {}, 'train_inputs is not an array of examples'),
    ],
)
def test_from_arrays_names_the_bad_argument_in_one_line(arguments, options, message):
  with pytest.raises(ValueError) as raised:
    data.from_arrays(*arguments, **options)
  assert message in str(raised.value)
  assert '\n' not in str(raised.value)


# ----------------------------------------------------------------------------------------------
# from_source


def test_from_source_reads_mappings_and_pairs_and_applies_the_transform():
  images = np.arange(20 * 4, dtype=np.uint8).reshape(20, 2, 2)
  train = [{'pixels': images[index], 'digit': index % 4} for index in range(16)]
  test = [(images[index], index % 4) for index in range(16, 20)]
  dataset = data.from_source(
      train, [{'pixels': image, 'digit': label} for image, label in test], input_key='pixels', target_key='digit'
  )
  assert (dataset.task, dataset.num_classes, dataset.input_shape) == ('classification', 4, (2, 2))
  np.testing.assert_array_equal(dataset.train_inputs, images[:16].astype(np.float32))
  np.testing.assert_array_equal(dataset.test_targets, np.arange(16, 20) % 4)
  scaled = data.from_source(test, test, transform=lambda example: (example[0] / 255.0, example[1]), name='scaled')
  chex.assert_trees_all_close(scaled.train_inputs, images[16:] / np.float32(255.0))
  assert scaled.name == 'scaled'


def test_from_source_reads_tfds_data_sources():
  with tfds.testing.mock_data(num_examples=6):
    train = tfds.data_source('mnist', split='train')
    test = tfds.data_source('mnist', split='test')
    dataset = data.from_source(train, test, transform=lambda example: {**example, 'image': example['image'] / 255.0})
    raw_images = np.stack([train[index]['image'] for index in range(6)])
    raw_labels = np.array([test[index]['label'] for index in range(6)])
  assert (dataset.task, dataset.num_train, dataset.input_shape) == ('classification', 6, (28, 28, 1))
  chex.assert_trees_all_close(dataset.train_inputs, raw_images / np.float32(255.0))
  np.testing.assert_array_equal(dataset.test_targets, raw_labels)


def test_a_transform_that_changes_shapes_is_named_with_both_examples():
  examples = [{'image': np.zeros((8, 8)), 'label': 0} for _ in range(20)]

  def crop_the_18th(example, count=[0]):  # pylint: disable=dangerous-default-value
    count[0] += 1
    return example['image'][:7] if count[0] == 18 else example['image'], example['label']

  with pytest.raises(ValueError) as raised:
    data.from_source(examples, examples, transform=crop_the_18th)
  assert str(raised.value) == (
      "train example 17: input shape (7, 8) differs from example 0's (8, 8) "
      '(a transform must give every example the same shape)'
  )


@pytest.mark.parametrize(
    'train, options, message',
    [
        ([{'x': 1.0, 'y': 0}], {}, "train example 0 has no 'image' and no 'label' (its keys: 'x', 'y')"),
        ([(1.0, 0, 2)], {}, 'train example 0 is of type tuple, neither an (input, target) pair nor a mapping'),
        ({'image': np.zeros((3, 2)), 'label': np.zeros(3)}, {}, 'train is a mapping (keys: image, label)'),
        (iter([(1.0, 0)]), {}, 'train must be a random-access source of examples'),
        ([], {}, 'train has no examples'),
        ([(np.zeros(2), 0), (np.zeros(3), 1)], {}, "train example 1: input shape (3,) differs from example 0's (2,)"),
        ([(1.0, 0), (1.0, 1)], {'num_classes': 1}, 'num_classes=1 is too small: found the label 1 in train targets'),
    ],
)
def test_from_source_names_the_bad_example(train, options, message):
  with pytest.raises(ValueError) as raised:
    data.from_source(train, [(1.0, 0)], **options)
  assert message in str(raised.value)


# ----------------------------------------------------------------------------------------------
# tfds datasets by name


def test_any_tfds_dataset_by_name_with_its_splits_and_features(monkeypatch):
  opened = []
  open_split = tfds_catalog.open_split
  monkeypatch.setattr(
      tfds_catalog,
      'open_split',
      lambda name, split, data_dir: opened.append((name, split)) or open_split(name, split, data_dir),
  )
  fields = {
      'name': 'tfds:cifar100',
      'train_split': 'train[:90%]',
      'test_split': 'train[90%:]',
      'target_key': 'coarse_label',
      'num_test': 4,
  }
  with tfds.testing.mock_data(num_examples=10):
    dataset = data.build(config_lib.data_spec(fields))
    raw = tfds.data_source('cifar100', split='train')
    raw_images = np.stack([raw[index]['image'] for index in range(10)])
    raw_labels = np.array([raw[index]['coarse_label'] for index in range(10)])
  assert opened == [('cifar100', 'train[:90%]'), ('cifar100', 'train[90%:]')]
  assert (dataset.name, dataset.task, dataset.num_classes) == ('tfds:cifar100', 'classification', 20)  # ClassLabel's
  assert (dataset.num_train, dataset.num_test, dataset.input_shape) == (10, 4, (32, 32, 3))
  # uint8 images, normalized per channel with the training split's statistics inside the compiled step.
  assert dataset.train_inputs.dtype == np.uint8
  np.testing.assert_array_equal(dataset.train_inputs, raw_images)
  np.testing.assert_array_equal(dataset.train_targets, raw_labels)
  mean, std = dataset.input_normalization
  np.testing.assert_allclose(mean, (raw_images / 255.0).mean(axis=(0, 1, 2)), rtol=1e-6)
  np.testing.assert_allclose(std, (raw_images / 255.0).std(axis=(0, 1, 2)), rtol=1e-5)


@pytest.mark.parametrize(
    'fields, message',
    [
        (
            {'name': 'tfds:fashion_mnst'},
            "dataset.name='tfds:fashion_mnst': tfds has no dataset 'fashion_mnst' (did you mean tfds:fashion_mnist?)",
        ),
        ({'name': 'tfds:'}, "dataset.name='tfds:': name a tfds dataset after 'tfds:'"),
        (
            {'name': 'tfds:mnist', 'input_key': 'pixels'},
            "dataset.input_key='pixels': tfds dataset 'mnist' has no such feature (its features: image, label)",
        ),
        ({'name': 'tfds:cifar100', 'input_key': 'id'}, "dataset.train_split's inputs must hold numbers, got dtype <U"),
        (
            {'name': 'tfds:mnist', 'num_train': 20},
            "dataset.num_train=20 exceeds the 6 examples in mnist's 'train' split",
        ),
    ],
)
def test_a_bad_tfds_dataset_field_is_named_in_one_line(fields, message):
  with tfds.testing.mock_data(num_examples=6):
    with pytest.raises(ValueError) as raised:
      data.build(config_lib.data_spec(fields))
  assert message in str(raised.value) and '\n' not in str(raised.value)


def test_a_tfds_dataset_not_prepared_says_how_to_prepare_it(tmp_path):
  with pytest.raises(data.DatasetNotPreparedError) as raised:
    data.build(config_lib.data_spec({'name': 'tfds:fashion_mnist', 'data_dir': str(tmp_path)}))
  assert f'tfds build fashion_mnist --file_format=array_record --data_dir={tmp_path}' in str(raised.value)


def test_prepared_tfds_image_splits_go_through_the_decoded_cache(tmp_path, monkeypatch):
  monkeypatch.setenv('LTH_JAX_CACHE', str(tmp_path / 'cache'))
  images, labels = synthetic_tfds.synthetic_images('mnist', 12, 0)
  synthetic_tfds.write_tfds_dataset(tmp_path / 'tfds', 'mnist', {'train': (images, labels), 'test': (images, labels)})
  fields = {'name': 'tfds:mnist', 'data_dir': str(tmp_path / 'tfds'), 'train_split': 'train[2:]'}
  dataset = data.build(config_lib.data_spec(fields))
  assert isinstance(dataset.train_inputs, np.memmap)  # decoded once, memory-mapped from the cache
  np.testing.assert_array_equal(dataset.train_inputs, images[2:])
  np.testing.assert_array_equal(dataset.train_targets, labels[2:])
  assert sorted(path.name.split('-')[2] for path in (tmp_path / 'cache' / 'tfds').iterdir()) == ['test', 'train_2__']


def test_the_decoded_cache_keys_other_features_apart():
  shards = [(__file__, 0, 1)]
  default = decoded_cache.cache_key('mnist', '3.0.1', 'train', shards)
  assert decoded_cache.cache_key('mnist', '3.0.1', 'train', shards, ('image', 'label')) == default
  assert decoded_cache.cache_key('mnist', '3.0.1', 'train', shards, ('image', 'coarse_label')) != default


# ----------------------------------------------------------------------------------------------
# Registered names and the config


@pytest.fixture(name='registered')
def fixture_registered():
  """'my_digits' registered: from_arrays of 30 + 10 examples, cut by dataset.num_train / num_test."""
  train_inputs, train_targets, test_inputs, test_targets = _arrays(30, 10)

  def build_my_digits(spec: config_lib.DataSpec) -> data.ArrayDataset:
    return data.from_arrays(train_inputs + spec.seed, train_targets, test_inputs, test_targets, name='my_digits')

  data.register('my_digits', build_my_digits)
  yield train_inputs
  data.unregister('my_digits')


def test_a_registered_name_builds_from_a_config(registered):
  dataset = data.build(config_lib.data_spec({'name': 'my_digits', 'seed': 2, 'num_train': 20}))
  assert (dataset.name, dataset.num_train, dataset.num_test, dataset.num_classes) == ('my_digits', 20, 10, 3)
  np.testing.assert_allclose(dataset.train_inputs, (registered[:20] + 2).astype(np.float32))
  names = data.dataset_names()  # the built-in names first, then every registered one (other tests register too)
  assert names[: len(data.DATASET_NAMES)] == data.DATASET_NAMES and 'my_digits' in names
  with pytest.raises(ValueError, match="dataset.name must be one of .*'my_digits'.*, or tfds:NAME"):
    data.build(config_lib.data_spec({'name': 'my_digitz'}))
  config_lib.check_config(helpers.tiny_config(dataset__name='my_digits'))


def test_register_refuses_built_in_and_tfds_names_and_builders_that_return_no_dataset():
  with pytest.raises(ValueError, match="'mnist' is a built-in dataset"):
    data.register('mnist', lambda spec: None)
  with pytest.raises(ValueError, match="names starting with 'tfds:' name tfds datasets"):
    data.register('tfds:mine', lambda spec: None)
  data.register('nothing', lambda spec: [1, 2])
  try:
    with pytest.raises(ValueError, match="dataset.name='nothing': its registered builder returned a list"):
      data.build(config_lib.data_spec({'name': 'nothing'}))
  finally:
    data.unregister('nothing')


def test_config_checks_accept_tfds_names_and_list_the_known_names():
  config_lib.check_config(helpers.tiny_config(dataset__name='tfds:fashion_mnist', dataset__test_split='test[:50%]'))
  with pytest.raises(
      config_lib.ConfigError, match=r"dataset.name='fashion': unknown dataset; known datasets: sum_of_two"
  ):
    config_lib.check_config(helpers.tiny_config(dataset__name='fashion'))
  with pytest.raises(config_lib.ConfigError, match=r"dataset.input_key='': must be a non-empty string"):
    config_lib.check_config(helpers.tiny_config(dataset__input_key=''))


def test_a_config_recorded_before_the_tfds_fields_resumes_unchanged():
  defaults = compatibility.config_to_json(schema.base_config())
  old = compatibility.config_to_json(helpers.tiny_config())
  for field in ('train_split', 'test_split', 'input_key', 'target_key'):
    del old['dataset'][field]
  assert compatibility.config_differences(old, compatibility.config_to_json(helpers.tiny_config()), defaults) == (
      [],
      [],
  )
  spec = config_lib.data_spec(old)
  assert (spec.train_split, spec.test_split, spec.input_key, spec.target_key) == ('train', 'test', 'image', 'label')


def test_the_batch_order_of_your_data_is_a_pure_function_of_seed_and_step():
  dataset = data.from_arrays(*_arrays(50, 5))
  whole = data.batch_indices(3, 0, 10, dataset.num_train, 8)
  resumed = np.concatenate(
      [data.batch_indices(3, 0, 4, dataset.num_train, 8), data.batch_indices(3, 4, 6, dataset.num_train, 8)]
  )
  np.testing.assert_array_equal(whole, resumed)


def test_one_tfds_split_may_serve_as_both_sets():
  with tfds.testing.mock_data(num_examples=6):
    dataset = data.build(config_lib.data_spec({'name': 'tfds:mnist', 'test_split': 'train'}))
  np.testing.assert_array_equal(dataset.train_inputs, dataset.test_inputs)


def test_a_tfds_dataset_by_name_streams_with_dataset_streaming():
  spec = config_lib.data_spec(
      {'name': 'tfds:cifar100', 'streaming': True, 'target_key': 'coarse_label', 'num_train': 24, 'num_test': 8}
  )
  with tfds.testing.mock_data(num_examples=32):
    streamed = data.build(spec)
    assert isinstance(streamed, data.StreamingDataset)
    assert (streamed.num_train, streamed.num_test, streamed.num_classes) == (24, 8, 20)
    assert streamed.input_shape == (32, 32, 3) and streamed.preprocessing.input_dtype == 'uint8'
    batch = streamed.step_batches(seed=0, global_batch_size=8)[0]
    assert batch['inputs'].shape == (8, 32, 32, 3) and batch['inputs'].dtype == np.uint8
    assert batch['targets'].dtype == np.int32 and np.all(batch['targets'] < 20)
  with tfds.testing.mock_data(num_examples=32), pytest.raises(ValueError, match=r'has no class-label target'):
    data.build(config_lib.data_spec({'name': 'tfds:cifar100', 'streaming': True, 'target_key': 'image'}))


def test_a_streamed_tfds_dataset_runs_a_search(tmp_path):
  from tests import helpers  # pylint: disable=import-outside-toplevel

  config = helpers.tiny_config(pruning__levels=1, branches=('reinit',))
  config.dataset.name, config.dataset.streaming = 'tfds:fashion_mnist', True
  config.dataset.num_train, config.dataset.num_test = 64, 32
  config.model.name, config.model.hidden_sizes = 'lenet', (16,)
  config.training.batch_size, config.training.eval_batch_size = 16, 32
  with tfds.testing.mock_data(num_examples=64):
    results = lottery.run(config, str(tmp_path / 'work'), log=lambda line: None)
  assert sorted((record['level'], record['branch']) for record in results.records) == [
      (0, 'ticket'),
      (1, 'reinit'),
      (1, 'ticket'),
  ]
  assert all(0.0 <= record['test_accuracy'] <= 1.0 for record in results.records)

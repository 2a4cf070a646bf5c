"""Streaming grain pipelines over tfds.data_source: augmentation, determinism, host slices."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lth_jax.data import pipeline
from lth_jax.data.tfds_source import DatasetNotPreparedError


def test_pad_crop_flip_is_a_shifted_or_flipped_crop():
  image = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
  crops = [pipeline.pad_crop_flip(image, np.random.default_rng(seed)) for seed in range(20)]
  assert all(crop.shape == (32, 32, 3) for crop in crops)
  assert len({crop.tobytes() for crop in crops}) > 5  # random offsets and flips
  padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
  for crop in crops:  # every crop is a window of the padded image, possibly mirrored
    windows = [padded[top : top + 32, left : left + 32] for top in range(9) for left in range(9)]
    assert any(np.array_equal(crop, w) or np.array_equal(crop, w[:, ::-1]) for w in windows)


def test_imagenet_crops_have_the_model_input_size():
  image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
  assert pipeline.random_resized_crop(image, np.random.default_rng(1)).shape == (224, 224, 3)
  assert pipeline.resize_center_crop(image).shape == (224, 224, 3)
  small = image[:50, :60]
  assert pipeline.resize_center_crop(small).shape == (224, 224, 3)


def test_step_batches_are_a_pure_function_of_seed_and_step_and_split_over_hosts():
  with tfds.testing.mock_data(num_examples=64):
    step_batches, evaluation_records = pipeline.open_streaming('cifar10', None, seed=3, global_batch_size=16)
    first, again, other = step_batches[5], step_batches[5], step_batches[6]
    np.testing.assert_array_equal(first['inputs'], again['inputs'])
    assert not np.array_equal(first['inputs'], other['inputs'])
    assert first['inputs'].shape == (16, 32, 32, 3) and first['inputs'].dtype == np.uint8
    assert first['targets'].dtype == np.int32
    halves = [
        pipeline.StepBatches(step_batches.records, step_batches.preprocessing, 3, 16, index, 2)[5] for index in range(2)
    ]
    np.testing.assert_array_equal(np.concatenate([half['inputs'] for half in halves]), first['inputs'])
    streamed = list(pipeline.training_batches(step_batches, 4, 7, num_threads=2))
    assert len(streamed) == 3
    np.testing.assert_array_equal(streamed[1]['inputs'], first['inputs'])
    batches = list(pipeline.evaluation_batches(evaluation_records, step_batches.preprocessing, 24))
    assert [len(batch['targets']) for batch in batches] == [24, 24, 24]
    assert batches[-1]['weights'].sum() == 64 - 48 and batches[0]['weights'].all()


def test_imagenet_pipeline_on_mock_data():
  with tfds.testing.mock_data(num_examples=8):
    step_batches, evaluation_records = pipeline.open_streaming('imagenet2012', None, seed=0, global_batch_size=4)
    batch = step_batches[0]
    assert batch['inputs'].shape == (4, 224, 224, 3) and batch['inputs'].dtype == np.uint8
    normalized = np.asarray(
        pipeline.normalize_on_device(batch['inputs'], pipeline.IMAGENET_MEAN, pipeline.IMAGENET_STD)
    )
    np.testing.assert_allclose(
        normalized, pipeline.normalize(batch['inputs'], pipeline.IMAGENET_MEAN, pipeline.IMAGENET_STD), atol=1e-5
    )
    assert np.abs(normalized.mean()) < 3.0
    evaluation = next(pipeline.evaluation_batches(evaluation_records, step_batches.preprocessing, 4))
    assert evaluation['inputs'].shape == (4, 224, 224, 3)


def test_missing_imagenet_says_how_to_prepare_it(tmp_path):
  with pytest.raises(DatasetNotPreparedError, match='tfds build imagenet2012 --file_format=array_record') as raised:
    pipeline.open_streaming('imagenet2012', str(tmp_path), seed=0, global_batch_size=8)
  assert f'ILSVRC2012_img_val.tar in {tmp_path / "downloads" / "manual"} first' in str(raised.value)


def test_unknown_streaming_dataset_and_bad_host_split():
  with pytest.raises(ValueError, match='no streaming pipeline'):
    pipeline.open_streaming('svhn', None, 0, 8)
  with pytest.raises(ValueError, match='does not divide over 3 hosts'):
    pipeline.StepBatches([], pipeline.PREPROCESSING['cifar10'], 0, 8, 0, 3)

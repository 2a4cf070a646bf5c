"""The decoded cache of tfds image splits (hit, miss, invalidation, damage, concurrent builders, an
unwritable folder, an old layout), its parallel decode, and uint8 images normalized on the devices.

The data is synthetic, written in tfds's array_record layout without TensorFlow
(`lth_jax.data.synthetic_tfds`), so tfds reads it exactly as it reads `tfds build` output."""

import dataclasses
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from lth_jax import config as config_lib
from lth_jax import data as data_lib
from lth_jax.data import decode_worker
from lth_jax.data import decoded_cache
from lth_jax.data import source_notes
from lth_jax.data import synthetic_tfds
from lth_jax.data import tfds_source
from lth_jax.search import lottery
from tests import helpers

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NUM_TRAIN, NUM_TEST = 300, 40


@pytest.fixture(name='tfds_dir', scope='module')
def fixture_tfds_dir(tmp_path_factory):
  """Synthetic MNIST (train in 3 shards) and CIFAR-10 in array_record layout, and their arrays."""
  folder = tmp_path_factory.mktemp('tfds')
  arrays = {}
  for name in ('mnist', 'cifar10'):
    arrays[name] = {
        'train': synthetic_tfds.synthetic_images(name, NUM_TRAIN, 0),
        'test': synthetic_tfds.synthetic_images(name, NUM_TEST, 1),
    }
    synthetic_tfds.write_tfds_dataset(folder, name, arrays[name], num_shards=3)
  return folder, arrays


@pytest.fixture(name='cache_dir')
def fixture_cache_dir(tmp_path, monkeypatch):
  monkeypatch.setenv('LTH_JAX_CACHE', str(tmp_path / 'cache'))
  return tmp_path / 'cache' / 'tfds'


def _cache_files(cache_dir):
  """The cache files and temporary files in the cache folder (not the notes of what tfds read)."""
  if not cache_dir.exists():
    return []
  return sorted(path.name for path in cache_dir.iterdir() if not path.name.endswith(source_notes.SUFFIX))


def _count_decodes(monkeypatch):
  calls = []
  original = decoded_cache.decode_parallel

  def counting(shards, *args, **kwargs):
    calls.append(sum(end - first for _, first, end in shards))
    return original(shards, *args, **kwargs)

  monkeypatch.setattr(decoded_cache, 'decode_parallel', counting)
  return calls


@pytest.mark.parametrize('name', ['mnist', 'cifar10'])
def test_miss_decodes_and_caches_then_a_hit_is_memory_mapped(tfds_dir, cache_dir, monkeypatch, name):
  folder, arrays = tfds_dir
  decodes = _count_decodes(monkeypatch)
  dataset = data_lib.build(config_lib.data_spec({'name': name, 'data_dir': str(folder)}))
  assert decodes == [NUM_TRAIN, NUM_TEST]
  assert len(_cache_files(cache_dir)) == 2
  for _ in range(2):
    np.testing.assert_array_equal(dataset.train_inputs, arrays[name]['train'][0])
    np.testing.assert_array_equal(dataset.train_targets, arrays[name]['train'][1])
    np.testing.assert_array_equal(dataset.test_inputs, arrays[name]['test'][0])
    assert dataset.train_inputs.dtype == np.uint8 and dataset.train_targets.dtype == np.int32
    dataset = data_lib.build(config_lib.data_spec({'name': name, 'data_dir': str(folder)}))
    assert isinstance(dataset.train_inputs, np.memmap)
  assert decodes == [NUM_TRAIN, NUM_TEST], 'a cache hit must not decode'


_WARM_BUILDER = """
import hashlib, sys
from lth_jax import config as config_lib, data
dataset = data.build(config_lib.data_spec({'name': 'mnist', 'data_dir': sys.argv[1]}))
print('tensorflow_datasets' in sys.modules, type(dataset.train_inputs).__name__)
print(hashlib.sha256(dataset.train_inputs.tobytes() + dataset.test_targets.tobytes()).hexdigest())
"""


def test_a_cached_split_is_read_without_importing_tfds(tfds_dir, cache_dir):
  folder, arrays = tfds_dir
  data_lib.build(config_lib.data_spec({'name': 'mnist', 'data_dir': str(folder)}))  # decodes, notes the sources
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get('PYTHONPATH')])))
  completed = subprocess.run(
      [sys.executable, '-c', _WARM_BUILDER, str(folder)], cwd=REPO_ROOT, env=env, capture_output=True, text=True
  )
  assert completed.returncode == 0, completed.stderr
  imported, kind, digest = completed.stdout.split()
  import hashlib  # pylint: disable=import-outside-toplevel

  expected = hashlib.sha256(
      arrays['mnist']['train'][0].tobytes() + arrays['mnist']['test'][1].astype(np.int32).tobytes()
  ).hexdigest()
  assert (imported, kind, digest) == ('False', 'memmap', expected)


def test_a_note_of_the_sources_holds_only_while_the_dataset_folder_and_tfds_are_unchanged(
    tfds_dir, cache_dir, tmp_path, monkeypatch
):
  folder = tmp_path / 'tfds'
  shutil.copytree(tfds_dir[0] / 'mnist', folder / 'mnist')
  data_lib.build(config_lib.data_spec({'name': 'mnist', 'data_dir': str(folder)}))
  note = source_notes.note_path(cache_dir, 'mnist', 'train', str(folder))
  version, shards = source_notes.read(note)
  assert version == '3.0.1' and len(shards) == 3 and sum(end - first for _, first, end in shards) == NUM_TRAIN
  assert source_notes.note_path(cache_dir, 'mnist', 'train', None) != note  # tfds's default folder: another note
  opened = []
  open_split = tfds_source.open_split
  monkeypatch.setattr(tfds_source, 'open_split', lambda *args: opened.append(args[1]) or open_split(*args))
  data_lib.build(config_lib.data_spec({'name': 'mnist', 'data_dir': str(folder)}))
  assert opened == []  # both splits found through their notes
  with monkeypatch.context() as patched:
    patched.setattr(source_notes, '_tfds_release', lambda: '0.0.1')  # another tfds may read other files
    assert source_notes.read(note) is None
  (folder / 'mnist' / '9.9.9').mkdir()  # another version prepared beside it: tfds decides which it reads
  assert source_notes.read(note) is None
  (folder / 'mnist' / '9.9.9').rmdir()
  assert source_notes.read(note) == (version, shards)
  time.sleep(0.01)
  (folder / 'mnist' / '3.0.1' / 'dataset_info.json').touch()  # re-prepared
  assert source_notes.read(note) is None
  dataset = data_lib.build(config_lib.data_spec({'name': 'mnist', 'data_dir': str(folder)}))
  assert opened == ['train', 'test']  # through tfds again, which notes them anew
  assert source_notes.read(note) == (version, shards) and isinstance(dataset.train_inputs, np.memmap)
  note.write_text('{"version": "3.0.1"')  # a damaged note is no note
  assert source_notes.read(note) is None


def test_parallel_decode_equals_tfds_record_by_record_decode(tfds_dir, monkeypatch):
  folder, _ = tfds_dir
  monkeypatch.setattr(decoded_cache, 'MIN_RECORDS_PER_WORKER', 10)  # worker processes even for 300 records
  started, popen = [], subprocess.Popen

  def counting_popen(*args, **kwargs):
    started.append(args)
    return popen(*args, **kwargs)

  monkeypatch.setattr(subprocess, 'Popen', counting_popen)
  source = tfds_source.open_split('cifar10', 'train', str(folder))
  expected_images, expected_labels = tfds_source.read_images_and_labels(source, len(source))
  shards = decoded_cache.source_shards(source, 'train')
  assert len(shards) == 3
  for workers in (1, 2, 5):
    images, labels = decoded_cache.decode_split(
        'cifar10', '3.0.2', 'train', shards, (32, 32, 3), use_cache=False, workers=workers
    )
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)
  assert len(started) == 0 + 1 + 4  # this process decodes one part, workers the others


def test_tasks_split_records_evenly_across_shard_boundaries():
  shards = [('a', 0, 5), ('b', 2, 9), ('c', 0, 3)]  # 5 + 7 + 3 = 15 records
  groups = decoded_cache._split_tasks(shards, 4)  # pylint: disable=protected-access
  rows = [row for group in groups for _, first, end, start in group for row in range(start, start + end - first)]
  assert rows == list(range(15))
  assert [sum(end - first for _, first, end, _ in group) for group in groups] == [4, 4, 3, 4]
  assert groups[1] == [('a', 4, 5, 4), ('b', 2, 5, 5)]


def test_parse_example_reads_negative_and_unpacked_int64():
  # Example{features{feature{key: "label" value{int64_list{value: -3 (unpacked varint)}}}}}
  def field(number, payload):
    return bytes([number << 3 | 2, len(payload)]) + payload

  value, varint = 2**64 - 3, bytearray()  # -3 as a two's-complement varint (10 bytes)
  while True:
    byte, value = value & 0x7F, value >> 7
    varint.append(byte | (0x80 if value else 0))
    if not value:
      break
  minus_three = bytes([1 << 3 | 0]) + bytes(varint)
  entry = field(1, b'label') + field(2, field(3, minus_three))
  example = field(1, field(1, entry))
  assert decode_worker.parse_example(example, ('label',)) == {'label': -3}
  with pytest.raises(KeyError, match='image'):
    decode_worker.parse_example(example, ('label', 'image'))


def test_a_changed_source_is_decoded_again(tfds_dir, cache_dir, tmp_path, monkeypatch):
  folder = tmp_path / 'tfds'
  shutil.copytree(tfds_dir[0] / 'mnist', folder / 'mnist')
  config = {'name': 'mnist', 'data_dir': str(folder)}
  first = data_lib.build(config_lib.data_spec(config))
  np.testing.assert_array_equal(first.train_inputs, tfds_dir[1]['mnist']['train'][0])
  # Re-prepare the data: other images under the same file names.
  time.sleep(0.01)  # a different modification time even on coarse clocks
  new_train = synthetic_tfds.synthetic_images('mnist', NUM_TRAIN, 7)
  synthetic_tfds.write_tfds_dataset(
      folder, 'mnist', {'train': new_train, 'test': tfds_dir[1]['mnist']['test']}, num_shards=3
  )
  decodes = _count_decodes(monkeypatch)
  second = data_lib.build(config_lib.data_spec(config))
  assert decodes == [NUM_TRAIN, NUM_TEST]  # the test split's files were rewritten too
  np.testing.assert_array_equal(second.train_inputs, new_train[0])
  np.testing.assert_array_equal(second.train_targets, new_train[1])
  assert len(_cache_files(cache_dir)) == 4


def _train_cache_file(cache_dir):
  (path,) = [path for path in cache_dir.iterdir() if '-train-' in path.name and path.suffix == decoded_cache.SUFFIX]
  return path


@pytest.mark.parametrize('damage', ['truncated', 'flipped_byte', 'old_layout', 'not_a_cache'])
def test_a_damaged_or_old_layout_cache_is_reported_once_and_rebuilt(tfds_dir, cache_dir, monkeypatch, damage):
  folder, arrays = tfds_dir
  config = {'name': 'mnist', 'data_dir': str(folder)}
  data_lib.build(config_lib.data_spec(config))
  path = _train_cache_file(cache_dir)
  content = bytearray(path.read_bytes())
  if damage == 'truncated':
    content = content[: len(content) // 2]
  elif damage == 'flipped_byte':
    content[len(content) // 3] ^= 0xFF
  elif damage == 'old_layout':  # a well-formed file of another layout version
    start = len(decoded_cache.MAGIC) + 4
    length = int.from_bytes(content[start - 4 : start], 'little')
    header = json.loads(bytes(content[start : start + length]))
    text = json.dumps(dict(header, layout=decoded_cache.LAYOUT_VERSION - 1)).encode()
    content[start - 4 : start + len(text)] = len(text).to_bytes(4, 'little') + text
  else:
    content = bytearray(b'written by something else' * 100)
  path.write_bytes(bytes(content))
  decodes = _count_decodes(monkeypatch)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    dataset = data_lib.build(config_lib.data_spec(config))
  cache_warnings = [warning for warning in caught if issubclass(warning.category, decoded_cache.CacheWarning)]
  assert len(cache_warnings) == 1 and str(path) in str(cache_warnings[0].message)
  expected_reason = {
      'truncated': 'bytes, expected',
      'flipped_byte': 'checksum',
      'old_layout': 'layout 0',
      'not_a_cache': 'not an lth_jax',
  }[damage]
  assert expected_reason in str(cache_warnings[0].message)
  assert decodes == [NUM_TRAIN]
  np.testing.assert_array_equal(dataset.train_inputs, arrays['mnist']['train'][0])
  np.testing.assert_array_equal(dataset.train_targets, arrays['mnist']['train'][1])
  with warnings.catch_warnings():
    warnings.simplefilter('error', decoded_cache.CacheWarning)
    assert isinstance(data_lib.build(config_lib.data_spec(config)).train_inputs, np.memmap)  # rebuilt: a clean hit


def test_a_killed_writer_leaves_nothing_that_is_read(tfds_dir, cache_dir, monkeypatch):
  folder, arrays = tfds_dir
  config = {'name': 'mnist', 'data_dir': str(folder), 'num_test': 5}

  def killed(shards, output_path, header, *_):  # (workers, keys)
    with open(output_path, 'r+b') as file:  # half the records written, then the process dies
      file.seek(header['images_offset'])
      file.write(arrays['mnist']['train'][0][: NUM_TRAIN // 2].tobytes())
    raise KeyboardInterrupt

  monkeypatch.setattr(decoded_cache, 'decode_parallel', killed)
  with pytest.raises(KeyboardInterrupt):
    data_lib.build(config_lib.data_spec(config))
  assert _cache_files(cache_dir) == []
  # A SIGKILLed writer leaves its hidden temporary file: it is never read.
  (cache_dir / f'.mnist-3.0.1-train-{"0" * 24}.lthc.abc.tmp').write_bytes(b'partial')
  monkeypatch.undo()
  os.environ['LTH_JAX_CACHE'] = str(cache_dir.parent)  # undo() restored it too; keep this test's cache
  with warnings.catch_warnings():
    warnings.simplefilter('error', decoded_cache.CacheWarning)
    dataset = data_lib.build(config_lib.data_spec(config))
  np.testing.assert_array_equal(dataset.train_inputs, arrays['mnist']['train'][0])


def test_the_temporary_files_of_a_killed_writer_on_this_host_are_swept(cache_dir):
  finished = subprocess.Popen([sys.executable, '-c', 'pass'])
  finished.wait()  # a writer that is no longer running
  host = socket.gethostname()
  name = 'mnist-3.0.1-train-key.lthc'
  cache_dir.mkdir(parents=True, exist_ok=True)
  dead = cache_dir / f'.{name}.{host}-{finished.pid}.abc.tmp'
  alive = cache_dir / f'.{name}.{host}-{os.getpid()}.abc.tmp'
  elsewhere = cache_dir / f'.{name}.another-host-{finished.pid}.abc.tmp'
  other_split = cache_dir / f'.mnist-3.0.1-test-key.lthc.{host}-{finished.pid}.abc.tmp'
  for path in (dead, alive, elsewhere, other_split):
    path.write_bytes(b'partial')
  assert decoded_cache.sweep_stale(cache_dir, name) == [dead]
  assert not dead.exists() and alive.exists() and elsewhere.exists() and other_split.exists()


_BUILDER = """
import hashlib, sys
from lth_jax import config as config_lib, data
dataset = data.build(config_lib.data_spec({'name': 'cifar10', 'data_dir': sys.argv[1]}))
print(hashlib.sha256(dataset.train_inputs.tobytes() + dataset.train_targets.tobytes()).hexdigest())
"""


def test_two_concurrent_builders_both_end_with_correct_data(tfds_dir, cache_dir):
  folder, arrays = tfds_dir
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get('PYTHONPATH')])))
  processes = [
      subprocess.Popen(
          [sys.executable, '-c', _BUILDER, str(folder)],
          cwd=REPO_ROOT,
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for _ in range(2)
  ]
  outputs = [process.communicate(timeout=300) for process in processes]
  for process, (stdout, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr
    assert 'CacheWarning' not in stderr
  import hashlib  # pylint: disable=import-outside-toplevel

  expected = hashlib.sha256(
      arrays['cifar10']['train'][0].tobytes() + arrays['cifar10']['train'][1].astype(np.int32).tobytes()
  ).hexdigest()
  assert [stdout.strip() for stdout, _ in outputs] == [expected, expected]
  assert len(_cache_files(cache_dir)) == 2  # no temporary files left
  with warnings.catch_warnings():
    warnings.simplefilter('error', decoded_cache.CacheWarning)
    dataset = data_lib.build(config_lib.data_spec({'name': 'cifar10', 'data_dir': str(folder)}))
  assert isinstance(dataset.train_inputs, np.memmap)
  np.testing.assert_array_equal(dataset.train_inputs, arrays['cifar10']['train'][0])


def test_an_unwritable_cache_folder_warns_once_naming_it_and_runs_without_the_cache(tfds_dir, tmp_path, monkeypatch):
  folder, arrays = tfds_dir
  blocker = tmp_path / 'not_a_folder'
  blocker.write_text('a file where the cache folder would be')  # unwritable even for root
  monkeypatch.setenv('LTH_JAX_CACHE', str(blocker))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    dataset = data_lib.build(config_lib.data_spec({'name': 'mnist', 'data_dir': str(folder), 'num_test': 7}))
  cache_warnings = [warning for warning in caught if issubclass(warning.category, decoded_cache.CacheWarning)]
  assert len(cache_warnings) == 1
  assert str(blocker / 'tfds') in str(cache_warnings[0].message)
  np.testing.assert_array_equal(dataset.train_inputs, arrays['mnist']['train'][0])
  np.testing.assert_array_equal(dataset.test_targets, arrays['mnist']['test'][1][:7])
  assert not isinstance(dataset.train_inputs, np.memmap)


def test_a_limit_decodes_only_its_prefix_until_the_whole_split_is_cached(tfds_dir, cache_dir, monkeypatch):
  folder, arrays = tfds_dir
  decodes = _count_decodes(monkeypatch)
  limited = data_lib.build(
      config_lib.data_spec({'name': 'mnist', 'data_dir': str(folder), 'num_train': 150, 'num_test': 10})
  )
  assert decodes == [150, 10] and _cache_files(cache_dir) == []
  np.testing.assert_array_equal(limited.train_inputs, arrays['mnist']['train'][0][:150])
  data_lib.build(config_lib.data_spec({'name': 'mnist', 'data_dir': str(folder)}))
  limited = data_lib.build(
      config_lib.data_spec({'name': 'mnist', 'data_dir': str(folder), 'num_train': 150, 'num_test': 10})
  )
  assert decodes == [150, 10, NUM_TRAIN, NUM_TEST]
  assert limited.num_train == 150 and limited.num_test == 10
  np.testing.assert_array_equal(limited.train_targets, arrays['mnist']['train'][1][:150])


def test_the_resident_feed_keeps_uint8_images_on_the_devices(tfds_dir, cache_dir):
  from lth_jax.training import feeds, parallel  # pylint: disable=import-outside-toplevel

  dataset = data_lib.build(config_lib.data_spec({'name': 'cifar10', 'data_dir': str(tfds_dir[0])}))
  feed = feeds.create(dataset, parallel.create_mesh(1), batch_size=16, eval_batch_size=8)
  images = feed.arrays[0]
  assert images.dtype == np.uint8 and images.nbytes == NUM_TRAIN * 32 * 32 * 3
  assert images.nbytes * 4 == _as_float(dataset).train_inputs.nbytes
  inputs, targets = feed.batch(feed.arrays, np.arange(16))
  assert inputs.dtype == np.float32
  np.testing.assert_allclose(inputs, dataset.model_inputs(dataset.train_inputs[:16]), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(targets, dataset.train_targets[:16])


def _as_float(dataset):
  """The same dataset normalized on the host, as the in-memory image datasets were before."""
  return dataclasses.replace(
      dataset,
      train_inputs=dataset.model_inputs(dataset.train_inputs),
      test_inputs=dataset.model_inputs(dataset.test_inputs),
      input_normalization=None,
  )


def test_uint8_on_device_training_gives_the_records_of_host_normalized_float_inputs(
    tfds_dir, cache_dir, tmp_path, monkeypatch
):
  folder, _ = tfds_dir
  config = helpers.tiny_config(
      dataset__name='mnist',
      dataset__data_dir=str(folder),
      training__num_steps=16,
      training__eval_every=8,
      training__steps_per_dispatch=8,
      training__batch_size=32,
      training__learning_rate=1e-2,
      pruning__levels=0,
      pruning__rewind_step=0,
      branches=(),
  )
  uint8_results = lottery.run(config, str(tmp_path / 'uint8'), log=lambda line: None)
  build_image_dataset = tfds_source.build_image_dataset
  monkeypatch.setitem(data_lib._BUILDERS, 'mnist', lambda dataset_config: _as_float(build_image_dataset(dataset_config)))  # pylint: disable=protected-access
  float_results = lottery.run(config, str(tmp_path / 'float'), log=lambda line: None)
  assert len(uint8_results.records) == len(float_results.records) == 1
  assert len(uint8_results.records[0]['curve']) == 2
  _assert_close_records(uint8_results.records, float_results.records)


def _assert_close_records(actual, expected, where='records'):
  """Equal structure and non-float values; floats equal to float rounding."""
  if isinstance(actual, dict):
    assert isinstance(expected, dict) and actual.keys() == expected.keys(), where
    for key in actual:
      if key != 'wall_seconds':  # timing, not a result
        _assert_close_records(actual[key], expected[key], f'{where}.{key}')
  elif isinstance(actual, (list, tuple)):
    assert isinstance(expected, (list, tuple)) and len(actual) == len(expected), where
    for index, (left, right) in enumerate(zip(actual, expected)):
      _assert_close_records(left, right, f'{where}[{index}]')
  elif isinstance(actual, float):
    assert actual == pytest.approx(expected, rel=1e-5, abs=1e-6), where
  else:
    assert actual == expected, where


def _png_with_filter(image, filter_type):
  """A PNG of a uint8 HWC image (1 or 3 channels) whose rows all use PNG filter `filter_type`."""
  import struct  # pylint: disable=import-outside-toplevel
  import zlib  # pylint: disable=import-outside-toplevel

  height, width, channels = image.shape
  pixels = image.reshape(height, width * channels).astype(np.int32)
  rows = []
  for row in range(height):
    current = pixels[row]
    above = pixels[row - 1] if row else np.zeros_like(current)
    left = np.concatenate([np.zeros(channels, np.int32), current[:-channels]])
    upper_left = np.concatenate([np.zeros(channels, np.int32), above[:-channels]])
    if filter_type == 3:
      prediction = (left + above) // 2
    elif filter_type == 4:
      estimate = left + above - upper_left
      distances = [np.abs(estimate - value) for value in (left, above, upper_left)]
      prediction = np.where(
          (distances[0] <= distances[1]) & (distances[0] <= distances[2]),
          left,
          np.where(distances[1] <= distances[2], above, upper_left),
      )
    else:
      prediction = [0 * current, left, above][filter_type]
    rows.append(bytes([filter_type]) + ((current - prediction) % 256).astype(np.uint8).tobytes())

  def chunk(kind, payload):
    return struct.pack('>I', len(payload)) + kind + payload + struct.pack('>I', zlib.crc32(kind + payload))

  header = struct.pack('>IIBBBBB', width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
  return (
      decode_worker.PNG_SIGNATURE
      + chunk(b'IHDR', header)
      + chunk(b'IDAT', zlib.compress(b''.join(rows)))
      + chunk(b'IEND', b'')
  )


@pytest.mark.parametrize('channels', [1, 3])
def test_batched_png_decode_equals_pillow_for_every_filter_type(channels):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  import io  # pylint: disable=import-outside-toplevel

  images = np.random.default_rng(channels).integers(0, 256, (10, 9, 7, channels), dtype=np.uint8)
  pngs = [_png_with_filter(image, index % 5) for index, image in enumerate(images)]
  pngs.append(synthetic_tfds._png(images[0]))  # pylint: disable=protected-access  # Pillow's own encoding
  if channels == 1:  # a palette PNG (gray palette, index = value) is not batched: Pillow decodes it
    palette_image = Image.fromarray(images[1][..., 0], 'P')
    palette_image.putpalette([value for index in range(256) for value in (index, index, index)])
    palette = io.BytesIO()
    palette_image.save(palette, format='PNG')
    pngs.append(palette.getvalue())
    assert decode_worker.png_scanlines(pngs[-1], (9, 7, channels)) is None
  decoded = decode_worker.decode_pngs(pngs, (9, 7, channels))
  for png, image in zip(pngs, decoded):
    with Image.open(io.BytesIO(png)) as reference:
      np.testing.assert_array_equal(image, np.asarray(reference).reshape(9, 7, channels))
  np.testing.assert_array_equal(decoded[:10], images)

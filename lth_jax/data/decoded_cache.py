"""Decode once: each tfds image split, decoded to uint8 images and int32 labels, cached in one file
per split and memory-mapped on later reads.

Where: `$LTH_JAX_CACHE/tfds/`, else `~/.cache/lth_jax/tfds/`. One file per split,
`NAME-VERSION-SPLIT-KEY.lthc` (characters other than letters, digits, `_`, `.` and `-` of the name and
split written as `_`), where KEY is a hash of the dataset name, version, split, the identity of every
source shard (path, size, modification time, record range) and the image and label features read
(when they are not `image` and `label`): re-prepared data gets a new key and is decoded again, never
served stale. Beside them, a note per split of what tfds read (`source_notes`) lets a later read find
the file without importing tfds. Delete the folder to clear the cache.

File layout (little-endian): the 8-byte magic `LTHJAXDC`, a uint32 header length, a JSON header
(layout version, key, count, image shape, data offsets and the CRC-32 of the data), then the uint8
images (count, H, W, C) and the int32 labels (count,).

Writes are atomic: the split is decoded into a hidden temporary file in the same folder (named by the
writer's host and process), checked and renamed over the final name, so a killed writer leaves nothing
that is read later (and the next build of the split on that host removes what it left), and two processes
building the same split at once both end with complete, identical files. A file that does not match
its header (truncated, damaged, another layout) is reported in one warning and rebuilt. A cache
folder that cannot be written is reported in one warning and the data is decoded without a cache.

The first decode of a split runs in parallel: one worker process (`decode_worker.py`, started as a
plain script so it imports neither JAX nor tfds) per available core, each decoding a contiguous range
of records straight into the temporary file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import pathlib
import socket
import struct
import subprocess
import sys
import tempfile
import warnings
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from lth_jax.data import decode_worker
from lth_jax.data.embedded import resolve_cache_dir

MAGIC = b'LTHJAXDC'
DEFAULT_KEYS = ('image', 'label')  # the image and label features of tfds's image-classification datasets
LAYOUT_VERSION = 1
SUFFIX = '.lthc'
_HEADER_LENGTH = struct.Struct('<I')
_ALIGNMENT = 64
_UNWRITABLE_FOLDERS: set[pathlib.Path] = set()
# Fewer records than this per process are decoded in this process alone (a worker takes ~0.2 s to start).
MIN_RECORDS_PER_WORKER = 1000


class CacheWarning(UserWarning):
  """The decoded-data cache could not be used or was damaged (the data is decoded again)."""


def cache_folder() -> pathlib.Path:
  """The decoded tfds cache: $LTH_JAX_CACHE/tfds, else ~/.cache/lth_jax/tfds."""

  return resolve_cache_dir(None) / 'tfds'


def source_shards(source: Any, split: str) -> list[tuple[str, int, int]] | None:
  """The (shard filename, first record, end record) ranges a tfds array_record source reads, in
  order; None when the source is not backed by files (e.g. under tfds.testing.mock_data)."""
  info = getattr(source, 'dataset_info', None)
  if info is None or not hasattr(source, 'data_source'):
    return None
  try:
    from tensorflow_datasets.core.data_sources import base

    instructions = base.file_instructions(info, split)
  except Exception:  # pylint: disable=broad-except  # any failure: no file identity, no cache
    return None
  shards = []
  for instruction in instructions:
    filename = os.fspath(instruction.filename)
    if not os.path.isfile(filename):
      return None
    shards.append((filename, int(instruction.skip), int(instruction.skip + instruction.take)))
  return shards or None


def cache_key(
    name: str,
    version: str,
    split: str,
    shards: Sequence[tuple[str, int, int]],
    keys: Sequence[str] = DEFAULT_KEYS,
) -> str:
  """Hash of the dataset name, version, split, each shard's path, size, mtime and record range, and
  the (image, label) features read when they are not the default ones."""
  identity = []
  for filename, first, end in shards:
    status = os.stat(filename)
    identity.append([os.path.abspath(filename), status.st_size, status.st_mtime_ns, first, end])
  fields: dict[str, Any] = {'name': name, 'version': version, 'split': split, 'shards': identity}
  if tuple(keys) != DEFAULT_KEYS:  # (so that the caches of the default features keep their keys)
    fields['keys'] = list(keys)
  text = json.dumps(fields, sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:24]


def _file_name_part(text: str) -> str:
  """`text` with every character but letters, digits, `_`, `.` and `-` written as `_` (tfds names
  such as `cifar10_corrupted/brightness_1` and splits such as `train[:80%]` make file names)."""
  return re.sub(r'[^A-Za-z0-9_.-]', '_', text)


def cache_path(folder: pathlib.Path, name: str, version: str, split: str, key: str) -> pathlib.Path:
  """The cache file of one split."""
  return folder / f'{_file_name_part(name)}-{_file_name_part(version)}-{_file_name_part(split)}-{key}{SUFFIX}'


def _layout(count: int, image_shape: Sequence[int], key: str) -> tuple[dict[str, Any], int]:
  """The header (without the checksum) and the total file size of a cache of `count` examples."""
  image_bytes = count * int(np.prod(image_shape))
  # The header is padded to a fixed size so the data offsets do not depend on the checksum text.
  header_space = 1024
  images_offset = len(MAGIC) + _HEADER_LENGTH.size + header_space
  labels_offset = -(-(images_offset + image_bytes) // _ALIGNMENT) * _ALIGNMENT
  header = {
      'layout': LAYOUT_VERSION,
      'key': key,
      'count': count,
      'image_shape': list(image_shape),
      'images_offset': images_offset,
      'labels_offset': labels_offset,
  }
  return header, labels_offset + 4 * count


def _checksum(images: np.ndarray, labels: np.ndarray) -> int:
  images_bytes = memoryview(np.ascontiguousarray(images)).cast('B')  # type: ignore[arg-type]  # an ndarray is a buffer
  return zlib.crc32(labels.tobytes(), zlib.crc32(images_bytes))


def _write_header(path: str, header: dict[str, Any]) -> None:
  text = json.dumps(header).encode()
  space = header['images_offset'] - len(MAGIC) - _HEADER_LENGTH.size
  if len(text) > space:
    raise ValueError('decoded cache header too long')
  with open(path, 'r+b') as file:
    file.write(MAGIC + _HEADER_LENGTH.pack(len(text)) + text.ljust(space, b' '))


def read_cache(
    path: pathlib.Path, key: str, image_shape: Sequence[int], report: bool = True
) -> tuple[np.ndarray, np.ndarray] | None:
  """The cached (images, labels) memory-mapped read-only, or None when there is no cache file.
  A file that does not check out (layout, key, size, checksum) is reported in one warning (unless not
  `report`) and None is returned, so that it is rebuilt."""
  try:
    file = open(path, 'rb')
  except (FileNotFoundError, NotADirectoryError):
    return None
  except OSError as error:
    if report:
      warnings.warn(
          f'lth_jax: cannot read the decoded-data cache {path} ({error}); decoding again', CacheWarning, stacklevel=3
      )
    return None
  try:
    with file:
      if file.read(len(MAGIC)) != MAGIC:
        raise ValueError('not an lth_jax decoded-data cache')
      (length,) = _HEADER_LENGTH.unpack(file.read(_HEADER_LENGTH.size))
      header = json.loads(file.read(length))
      if header.get('layout') != LAYOUT_VERSION:
        raise ValueError(f"layout {header.get('layout')!r}, this lth_jax writes {LAYOUT_VERSION}")
      if header.get('key') != key or header.get('image_shape') != list(image_shape):
        raise ValueError('header does not match the source')
      expected, size = _layout(int(header['count']), image_shape, key)
      if any(header[field] != value for field, value in expected.items()):
        raise ValueError('inconsistent header')
      actual_size = os.fstat(file.fileno()).st_size
      if actual_size != size:
        raise ValueError(f'{actual_size} bytes, expected {size}')
    count = int(header['count'])
    images = np.memmap(path, np.uint8, 'r', header['images_offset'], (count, *image_shape))
    labels = np.memmap(path, np.int32, 'r', header['labels_offset'], (count,))
    if _checksum(images, labels) != header.get('crc32'):
      raise ValueError('checksum mismatch')
    return images, labels
  except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as error:
    if report:
      warnings.warn(f'lth_jax: damaged decoded-data cache {path} ({error}); rebuilding it', CacheWarning, stacklevel=3)
    return None


def available_workers() -> int:
  """How many decode processes to run: the cores this process may use."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:
    return max(1, os.cpu_count() or 1)


def _split_tasks(shards: Sequence[tuple[str, int, int]], parts: int) -> list[list[tuple[str, int, int, int]]]:
  """Splits the shards' record ranges into `parts` contiguous groups of about equal size, as
  (filename, first, end, output row) tasks."""
  total = sum(end - first for _, first, end in shards)
  bounds = [round(total * part / parts) for part in range(parts + 1)]
  groups: list[list[tuple[str, int, int, int]]] = [[] for _ in range(parts)]
  row = 0
  for filename, first, end in shards:
    for part in range(parts):
      low, high = max(row, bounds[part]), min(row + end - first, bounds[part + 1])
      if low < high:
        groups[part].append((filename, first + low - row, first + high - row, low))
    row += end - first
  return [group for group in groups if group]


def decode_parallel(
    shards: Sequence[tuple[str, int, int]],
    output_path: str,
    header: dict[str, Any],
    workers: int,
    keys: Sequence[str] = DEFAULT_KEYS,
) -> None:
  """Decodes the shards (the image and label features `keys` of their records) into `output_path`
  laid out as `header`: this process takes one part and `workers - 1` worker processes the rest."""
  arguments = {
      'output_path': output_path,
      'images_offset': header['images_offset'],
      'labels_offset': header['labels_offset'],
      'total_count': header['count'],
      'image_shape': header['image_shape'],
      'keys': list(keys),
  }
  groups = _split_tasks(shards, max(1, min(workers, header['count'] // MIN_RECORDS_PER_WORKER)))
  processes = [
      subprocess.Popen(
          [sys.executable, decode_worker.__file__, json.dumps({'tasks': group, **arguments})],
          stdout=subprocess.DEVNULL,
          stderr=subprocess.PIPE,
      )
      for group in groups[1:]
  ]
  try:
    decode_worker.decode_into(groups[0], **arguments)
  finally:
    errors = [(process.communicate()[1], process.returncode) for process in processes]
  failed = [stderr.decode(errors='replace').strip() for stderr, returncode in errors if returncode]
  if failed:
    raise RuntimeError(f'decoding tfds records failed in a worker process:\n{failed[0]}')


def _writer_tag() -> str:
  """'host-pid': who writes a temporary file (so that a later build can tell a killed writer's)."""
  return f'{socket.gethostname()}-{os.getpid()}'


def sweep_stale(folder: pathlib.Path, prefix: str) -> list[pathlib.Path]:
  """Removes the temporary files of `prefix` in `folder` left by writers of this host that are no longer
  running (killed mid-decode); returns them. Files of other hosts, or of live writers, stay."""
  host = socket.gethostname()
  removed = []
  for path in folder.glob(f'.{prefix}.*.tmp'):
    writer = path.name[len(prefix) + 2 :].split('.')[0]
    writer_host, _, pid = writer.rpartition('-')
    if writer_host != host or not pid.isdigit() or _running(int(pid)):
      continue
    with contextlib.suppress(FileNotFoundError):
      path.unlink()
      removed.append(path)
  return removed


def _running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  return True


def _new_file(folder: pathlib.Path, prefix: str, size: int) -> str:
  folder.mkdir(parents=True, exist_ok=True)
  sweep_stale(folder, prefix)
  descriptor, temp_name = tempfile.mkstemp(dir=folder, prefix=f'.{prefix}.{_writer_tag()}.', suffix='.tmp')
  with os.fdopen(descriptor, 'wb') as file:
    file.truncate(size)
  return temp_name


def prefix_shards(shards: Sequence[tuple[str, int, int]], count: int) -> list[tuple[str, int, int]]:
  """The shard ranges of the first `count` records."""
  prefix, remaining = [], count
  for filename, first, end in shards:
    if remaining <= 0:
      break
    take = min(end - first, remaining)
    prefix.append((filename, first, first + take))
    remaining -= take
  return prefix


def cached_split(
    name: str, version: str, split: str, shards: Sequence[tuple[str, int, int]], image_shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray] | None:
  """The split's cached images and labels (memory-mapped) when its cache file is there and sound, else
  None, without a warning: `decode_split` reports a damaged file as it rebuilds it. Raises OSError
  when a shard is gone."""
  image_shape = tuple(int(size) for size in image_shape)
  key = cache_key(name, version, split, shards)
  return read_cache(cache_path(cache_folder(), name, version, split, key), key, image_shape, report=False)


def decode_split(
    name: str,
    version: str,
    split: str,
    shards: Sequence[tuple[str, int, int]],
    image_shape: Sequence[int],
    prefix: int | None = None,
    use_cache: bool = True,
    workers: int | None = None,
    keys: Sequence[str] = DEFAULT_KEYS,
) -> tuple[np.ndarray, np.ndarray]:
  """The split's uint8 images and int32 labels (the features `keys`: image, label): from the cache
  when it holds them (memory-mapped), else decoded in parallel and cached (in memory only when the
  cache folder is not writable).

  With `prefix`, at least the first `prefix` records are returned: the whole cached split when
  there is a cache, else only those records, decoded and not cached.
  """
  image_shape = tuple(int(size) for size in image_shape)
  workers = available_workers() if workers is None else workers
  key = cache_key(name, version, split, shards, keys)
  folder = cache_folder()
  path = cache_path(folder, name, version, split, key)
  if use_cache:
    cached = read_cache(path, key, image_shape)
    if cached is not None:
      return cached
  count = sum(end - first for _, first, end in shards)
  if prefix is not None and prefix < count:
    shards, count, use_cache = prefix_shards(shards, prefix), prefix, False
  header, size = _layout(count, image_shape, key)
  temp_name: str | None = None
  if use_cache:
    try:
      temp_name = _new_file(folder, path.name, size)
    except OSError as error:
      if folder not in _UNWRITABLE_FOLDERS:  # one warning per folder and process
        _UNWRITABLE_FOLDERS.add(folder)
        warnings.warn(
            f'lth_jax: the decoded-data cache folder {folder} is not writable ({error}); '
            f'decoding without the cache',
            CacheWarning,
            stacklevel=2,
        )
  in_memory = temp_name is None
  if temp_name is None:
    temp_name = _new_file(pathlib.Path(tempfile.gettempdir()), path.name, size)
  try:
    decode_parallel(shards, temp_name, header, workers, keys)
    images = np.memmap(temp_name, np.uint8, 'r', header['images_offset'], (count, *image_shape))
    labels = np.memmap(temp_name, np.int32, 'r', header['labels_offset'], (count,))
    if in_memory:
      return np.array(images), np.array(labels)
    header['crc32'] = _checksum(images, labels)
    _write_header(temp_name, header)
    os.replace(temp_name, path)
    return images, labels
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(temp_name)

"""What tfds read for a split, noted beside its decoded cache, so that a later read finds the cache
without importing tfds (a quarter of a second, more than reading the cache itself).

When a split is read through tfds (`tfds_source.read_split`), a note is kept in the decoded cache's
folder, `NAME-SPLIT-WHERE.source.json` (WHERE: a hash of the data_dir as given, with $TFDS_DATA_DIR
and the home folder when none is): the dataset version and the shard files tfds read, and the
identity of what decided them: the tfds release, the version folders of the dataset, and the name,
size and modification time of every file in the version folder read. A later read of the same split
and data_dir takes the version and shards from the note only while all of that is unchanged; the
cache key (`decoded_cache.cache_key`) then checks the shards themselves. Anything else (no note, a
changed folder, another tfds, an unreadable note) goes through tfds again, which writes a new note.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import tempfile
from typing import Any

SUFFIX = '.source.json'


def note_path(folder: pathlib.Path, name: str, split: str, data_dir: str | None) -> pathlib.Path:
  """The note of `name`'s `split` read from `data_dir` (None: tfds's default folder) in `folder`."""
  where = [os.path.abspath(data_dir)] if data_dir is not None else [None, os.environ.get('TFDS_DATA_DIR')]
  where.append(os.path.expanduser('~'))
  digest = hashlib.sha256(json.dumps(where).encode()).hexdigest()[:16]
  return folder / f'{name}-{split}-{digest}{SUFFIX}'


def _tfds_release() -> str | None:
  """The installed tensorflow-datasets release (without importing it), or None."""
  import importlib.metadata  # pylint: disable=import-outside-toplevel  (jax has imported it already)

  try:
    return importlib.metadata.version('tensorflow-datasets')
  except importlib.metadata.PackageNotFoundError:
    return None


def _identity(version_dir: str) -> dict[str, Any]:
  """What decides which files tfds reads in `version_dir` (raises OSError when it is gone)."""
  files = []
  with os.scandir(version_dir) as entries:
    for entry in entries:
      status = entry.stat()
      files.append([entry.name, status.st_size, status.st_mtime_ns])
  return {
      'tfds': _tfds_release(),
      'version_dir': os.path.abspath(version_dir),
      'versions': sorted(os.listdir(os.path.dirname(os.path.abspath(version_dir)))),
      'files': sorted(files),
  }


def write(path: pathlib.Path, version: str, version_dir: str, shards: list[tuple[str, int, int]]) -> None:
  """Notes that tfds read `shards` of `version` from `version_dir` (atomically; a folder that cannot be
  written leaves no note, and the next read goes through tfds again)."""
  try:
    text = json.dumps({'version': version, 'shards': [list(shard) for shard in shards], **_identity(version_dir)})
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
      with os.fdopen(descriptor, 'w', encoding='utf-8') as file:
        file.write(text)
      os.replace(temporary, path)
    finally:
      with contextlib.suppress(FileNotFoundError):
        os.remove(temporary)
  except OSError:
    pass


def read(path: pathlib.Path) -> tuple[str, list[tuple[str, int, int]]] | None:
  """(version, shards) of the note at `path` while what decided them is unchanged, else None."""
  try:
    with open(path, encoding='utf-8') as file:
      note = json.load(file)
    if _identity(note['version_dir']) != {key: note[key] for key in ('tfds', 'version_dir', 'versions', 'files')}:
      return None
    return str(note['version']), [(str(name), int(first), int(end)) for name, first, end in note['shards']]
  except (OSError, ValueError, KeyError, TypeError):
    return None

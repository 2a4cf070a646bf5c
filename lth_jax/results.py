"""The results file: one JSON record per finished (level, branch, trial), written atomically."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from typing import IO, Any, Iterable, Iterator, Sequence

_logger = logging.getLogger(__name__)


class CorruptResultsError(ValueError):
  """A results file is damaged before its last line (not a torn append)."""


def _parse_record(line: bytes) -> dict[str, Any]:
  """One line of a results file as a record; ValueError when it is not UTF-8 text of a JSON object."""
  record = json.loads(line.decode('utf-8'))
  if not isinstance(record, dict):
    raise ValueError(f'expected a JSON object, got {type(record).__name__}')
  return record


def read_records(path: str) -> list[dict[str, Any]]:
  """All records of a results file ([] when it does not exist).

  A corrupt last line (an append torn by a crash, e.g. in a file written by an older version or by
  another tool) is skipped with a warning; a corrupt line before the last one is real damage and
  raises CorruptResultsError (a ValueError) naming the file and line.
  """
  if not os.path.exists(path):
    return []
  with open(path, 'rb') as file:  # bytes: a torn write may end inside a multi-byte character
    lines = [(number, line) for number, line in enumerate(file, start=1) if line.strip()]
  records = []
  for index, (number, line) in enumerate(lines):
    try:
      records.append(_parse_record(line))
    except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
      if index == len(lines) - 1:
        _logger.warning('%s, line %d: skipping a truncated or corrupt last record (%s)', path, number, error)
      else:
        raise CorruptResultsError(f'{path}, line {number}: corrupt record ({error}); only a torn last line '
                                  'is skipped, so this file is damaged: repair or remove that line (its run '
                                  'is redone)') from error
  return records


@contextlib.contextmanager
def atomic_open(path: str, mode: str = 'w') -> Iterator[IO[Any]]:
  """Opens a temporary file in the folder of `path` for writing; on a clean exit it is flushed,
  fsynced and renamed onto `path`, otherwise removed, so `path` is never seen half written."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  temporary = os.path.join(directory, f'.{os.path.basename(path)}-{secrets.token_hex(8)}.tmp')
  # O_EXCL never reuses a file; mode 0o666 lets the umask decide the permissions (mkstemp's 0600 would
  # make the results readable by their owner only).
  handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with os.fdopen(handle, mode) as file:
      yield file
      file.flush()
      os.fsync(file.fileno())
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.unlink(temporary)
    raise


def write_records(path: str, records: Iterable[dict[str, Any]]) -> None:
  """Replaces the results file atomically: a temporary file in the same folder, fsync, rename."""
  with atomic_open(path) as file:
    for record in records:
      file.write(json.dumps(record, sort_keys=True) + '\n')


def append_record(path: str, record: dict[str, Any]) -> None:
  """Adds one record to the results file without ever leaving it half written."""
  append_records(path, [record])


def append_records(path: str, records: Sequence[dict[str, Any]]) -> None:
  """Adds records to the results file in one atomic write: all of them, or (after a crash) none."""
  write_records(path, [*read_records(path), *records])


def test_metric_name(records: Sequence[dict[str, Any]]) -> str:
  """'test_accuracy' or 'test_rmse', whichever the records carry."""
  return 'test_accuracy' if any('test_accuracy' in record for record in records) else 'test_rmse'


def format_table(records: Sequence[dict[str, Any]]) -> str:
  """A plain-text table: one row per record, sorted by trial, level and branch."""
  if not records:
    return '(no results)'
  metric = test_metric_name(records)
  header = f'{"trial":>5} {"level":>5} {"branch":<16} {"remaining":>10} {"nonzero":>10} {metric:>14} {"steps":>7}'
  lines = [header, '-' * len(header)]
  for record in sorted(records, key=lambda r: (r['trial'], r['level'], r['branch'] != 'ticket', r['branch'])):
    lines.append(f'{record["trial"]:>5} {record["level"]:>5} {record["branch"]:<16} '
                 f'{100 * record["fraction_remaining"]:>9.2f}% {record["nonzero_weights"]:>10} '
                 f'{record[metric]:>14.6g} {record["steps"]:>7}')
  return '\n'.join(lines)


def format_sparsity_table(records: Sequence[dict[str, Any]]) -> str:
  """Test metric against fraction of weights remaining: one row per level, one column per branch,
  each cell the mean over trials (with min-max when there are several trials)."""
  if not records:
    return '(no results)'
  metric = test_metric_name(records)
  branches = sorted({record['branch'] for record in records}, key=lambda name: (name != 'ticket', name))
  levels = sorted({record['level'] for record in records})
  header = f'{"level":>5} {"remaining":>10} ' + ' '.join(f'{name:>24}' for name in branches)
  lines = [f'{metric} against fraction of weights remaining', header, '-' * len(header)]
  for level in levels:
    at_level = [record for record in records if record['level'] == level]
    remaining = at_level[0]['fraction_remaining']
    cells = []
    for name in branches:
      values = [record[metric] for record in at_level if record['branch'] == name]
      if not values:
        cells.append(f'{"-":>24}')
      elif len(values) == 1:
        cells.append(f'{values[0]:>24.4g}')
      else:
        cells.append(f'{sum(values) / len(values):.4g} [{min(values):.4g}, {max(values):.4g}]'.rjust(24))
    lines.append(f'{level:>5} {100 * remaining:>9.2f}% ' + ' '.join(cells))
  return '\n'.join(lines)

"""The results file: one JSON record per finished (level, branch, trial), written atomically."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import secrets
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence

_logger = logging.getLogger(__name__)


class CorruptResultsError(ValueError):
  """A results file is damaged before its last line (not a torn append)."""


class WriteError(OSError):
  """A file of the workdir could not be written: no space left, permission denied, a read-only file
  system, an I/O error. Nothing already recorded is lost; re-running the same command resumes."""


# What each storage failure asks of the user.
RESULTS_FILE = 'results.jsonl'  # a workdir's records: one JSON line per finished (level, branch, trial)

_STORAGE_FAILURES = {
    errno.ENOSPC: ('No space left on device', 'free some space'),
    errno.EDQUOT: ('Disk quota exceeded', 'free some space or raise the quota'),
    errno.EACCES: ('Permission denied', 'give this user write permission there'),
    errno.EPERM: ('Operation not permitted', 'give this user write permission there'),
    errno.EROFS: ('Read-only file system', 'make it writable or use another --workdir'),
    errno.EIO: ('Input/output error', 'check the disk'),
}
_QUOTED_PATH = re.compile(r'["\'](/[^"\']+)["\']')


def _storage_failure(error: BaseException) -> tuple[int, str | None] | None:
  """(errno, path or None) when `error` is a storage failure: an OSError with one of those errnos, or
  another library's error (orbax, tensorstore) whose message names one."""
  if isinstance(error, OSError) and error.errno in _STORAGE_FAILURES:
    return error.errno, error.filename if isinstance(error.filename, str) else None
  text = str(error)
  for code, (cause, _) in _STORAGE_FAILURES.items():
    if cause in text:
      match = _QUOTED_PATH.search(text)
      return code, match.group(1) if match else None
  return None


def as_write_error(error: BaseException, workdir: str) -> WriteError | None:
  """A one-line WriteError naming the path and the cause when `error` (or an error it was raised from)
  is a storage failure while writing the workdir; None otherwise."""
  seen = 0
  current: BaseException | None = error
  while current is not None and seen < 10:
    failure = _storage_failure(current)
    if failure is not None:
      code, path = failure
      cause, remedy = _STORAGE_FAILURES[code]
      written = WriteError(
          f'cannot write {os.path.normpath(path or workdir)}: {cause}. Nothing already recorded is lost: '
          f'{remedy} and run the same command again to resume.'
      )
      written.errno = code
      return written
    current, seen = current.__cause__ or current.__context__, seen + 1
  return None


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
        raise CorruptResultsError(
            f'{path}, line {number}: corrupt record ({error}); only a torn last line '
            'is skipped, so this file is damaged: repair or remove that line (its run '
            'is redone)'
        ) from error
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


def finite_or_none(value: Any) -> Any:
  """`value` with every non-finite float (NaN, infinities) replaced by None, in nested dicts and lists:
  what strict JSON can hold (a diverged run's record says why its numbers are missing)."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {key: finite_or_none(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [finite_or_none(item) for item in value]
  return value


def strict_json(value: Any, **options: Any) -> str:
  """`json.dumps` that writes strict JSON (RFC 8259): non-finite numbers become null."""
  return json.dumps(finite_or_none(value), allow_nan=False, **options)


def write_records(path: str, records: Iterable[dict[str, Any]]) -> None:
  """Replaces the results file atomically: a temporary file in the same folder, fsync, rename. Strict
  JSON: non-finite numbers are written as null (files written before, holding NaN, still load)."""
  with atomic_open(path) as file:
    for record in records:
      file.write(strict_json(record, sort_keys=True) + '\n')


def append_record(path: str, record: dict[str, Any]) -> None:
  """Adds one record to the results file without ever leaving it half written."""
  append_records(path, [record])


def append_records(path: str, records: Sequence[dict[str, Any]]) -> None:
  """Adds records to the results file in one atomic write: all of them, or (after a crash) none."""
  write_records(path, [*read_records(path), *records])


PENDING_SUFFIX = '.records.json'  # records written together before they are appended to several files


def append_to_workdirs(root: str, records: Mapping[str, Sequence[dict[str, Any]]], pending_path: str) -> None:
  """Appends to several workdirs' results files as one step ({workdir below `root`: its records}): each
  record exactly once, even when the process is killed between two files. With more than one file, the
  records are first written together to `pending_path` (atomically), then appended to each file, then
  `pending_path` is removed; `complete_pending` finishes the appends of a process killed in between."""
  records = {workdir: found for workdir, found in records.items() if found}
  if len(records) > 1:
    with atomic_open(pending_path) as file:
      json.dump(records, file)
  for workdir, found in records.items():
    append_records(os.path.join(root, workdir, RESULTS_FILE), found)
  if len(records) > 1:
    os.remove(pending_path)


def complete_pending(root: str, pending_path: str) -> dict[str, int]:
  """Appends the records of `pending_path` (written by `append_to_workdirs` under `root`) that their
  results file lacks, then removes it; returns how many each workdir took."""
  with open(pending_path) as file:
    pending = json.load(file)
  written = {}
  for workdir, found in pending.items():
    path = os.path.join(root, workdir, RESULTS_FILE)
    recorded = read_records(path) if os.path.isfile(path) else []
    done = {(record['trial'], record['level'], record['branch']) for record in recorded}
    missing = [record for record in found if (record['trial'], record['level'], record['branch']) not in done]
    if missing:
      append_records(path, missing)
      written[workdir] = len(missing)
  os.remove(pending_path)
  return written


def is_diverged(record: dict[str, Any]) -> bool:
  """Whether a record is of a run that diverged: marked so, or (in files written before the mark) with
  a test metric that is missing or not finite."""
  if record.get('diverged'):
    return True
  value = record.get(metric_of(record))
  return not isinstance(value, (int, float)) or not math.isfinite(value)


def split_diverged(records: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """(records of runs that trained normally, records of diverged runs)."""
  return (
      [record for record in records if not is_diverged(record)],
      [record for record in records if is_diverged(record)],
  )


def _metric_cell(record: dict[str, Any], metric: str, width: int) -> str:
  if is_diverged(record):
    step = record.get('diverged_step')
    return (f'diverged@{step}' if step is not None else 'diverged').rjust(width)
  return f'{record[metric]:>{width}.6g}'


def metric_of(entry: Mapping[str, Any]) -> str:
  """The run's metric of a record or a curve entry: the one its 'metric' field names ('test_accuracy',
  'test_top_5_accuracy', ...); in records written before that field, test_accuracy or test_rmse."""
  if 'metric' in entry:
    return str(entry['metric'])
  return 'test_accuracy' if 'test_accuracy' in entry else 'test_rmse'


def higher_is_better(entry: Mapping[str, Any]) -> bool:
  """Whether a larger value of a record's metric is better (records written before the field: accuracy)."""
  if 'higher_is_better' in entry:
    return bool(entry['higher_is_better'])
  return metric_of(entry).endswith('accuracy')


def test_metric_name(records: Sequence[dict[str, Any]]) -> str:
  """The run's metric of `records` (`metric_of` their first record; test_accuracy when there are none)."""
  if any('metric' in record for record in records):
    return metric_of(next(record for record in records if 'metric' in record))
  return 'test_accuracy' if any('test_accuracy' in record for record in records) else 'test_rmse'


def format_table(records: Sequence[dict[str, Any]]) -> str:
  """A plain-text table: one row per record, sorted by trial, level and branch."""
  if not records:
    return '(no results)'
  metric = test_metric_name(records)
  header = f'{"trial":>5} {"level":>5} {"branch":<16} {"remaining":>10} {"nonzero":>10} {metric:>14} {"steps":>7}'
  lines = [header, '-' * len(header)]
  for record in sorted(records, key=lambda r: (r['trial'], r['level'], r['branch'] != 'ticket', r['branch'])):
    lines.append(
        f'{record["trial"]:>5} {record["level"]:>5} {record["branch"]:<16} '
        f'{100 * record["fraction_remaining"]:>9.2f}% {record["nonzero_weights"]:>10} '
        f'{_metric_cell(record, metric, 14)} {record["steps"]:>7}'
    )
  return '\n'.join(lines)


def format_sparsity_table(records: Sequence[dict[str, Any]]) -> str:
  """Test metric against fraction of weights remaining: one row per level, one column per branch,
  each cell the mean over trials (with min-max when there are several trials). Diverged runs are left
  out of the means, and a last line says how many."""
  if not records:
    return '(no results)'
  records, diverged = split_diverged(records)
  if not records:
    return f'(every one of the {len(diverged)} run(s) diverged)'
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
  if diverged:
    lines.append(
        f'({len(diverged)} diverged run(s) left out: '
        + ', '.join(f'trial {r["trial"]} level {r["level"]} {r["branch"]}' for r in diverged)
        + ')'
    )
  return '\n'.join(lines)

"""The numbers of a lottery run's report, read from `WORKDIR/results.jsonl`: per branch and level the
test metric over trials (`sparsity_summary`, the CSV table), and the training curves; diverged runs
are left out (`usable`)."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Any, Sequence

import numpy as np

from lth_jax import results as results_lib
from lth_jax.results import RESULTS_FILE


@dataclasses.dataclass(frozen=True)
class SparsityPoint:
  """One branch at one level: the test metric over trials."""

  level: int
  fraction_remaining: float
  mean: float
  minimum: float
  maximum: float
  trials: int


@dataclasses.dataclass(frozen=True)
class TrainingCurve:
  """One branch at one level: the test metric at each evaluated step, over trials."""

  level: int
  fraction_remaining: float
  steps: np.ndarray
  mean: np.ndarray
  minimum: np.ndarray
  maximum: np.ndarray
  trials: int


REQUIRED_FIELDS = ('trial', 'level', 'branch', 'fraction_remaining')  # and a test metric


def load(workdir: str) -> list[dict[str, Any]]:
  """The records of `workdir/results.jsonl`; FileNotFoundError naming the path when either is missing,
  ValueError when a line before the last is corrupt."""
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'workdir {workdir} does not exist (or is not a folder)')
  path = os.path.join(workdir, RESULTS_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'no results file {path}: run `python -m lth_jax.main --config=... ' f'--workdir={workdir}` first'
    )
  records = results_lib.read_records(path)
  for number, record in enumerate(records, start=1):
    missing = [field for field in REQUIRED_FIELDS if field not in record]
    if results_lib.metric_of(record) not in record:
      missing.append(results_lib.metric_of(record) if 'metric' in record else 'test_accuracy or test_rmse')
    if missing:
      raise ValueError(f'{path}: record {number} has no {", ".join(missing)} (not a record lth_jax wrote)')
  return records


def branches(records: Sequence[dict[str, Any]]) -> list[str]:
  """Branch names in table order: the ticket first, then the rest alphabetically."""
  return sorted({record['branch'] for record in records}, key=lambda name: (name != 'ticket', name))


def test_metric(records: Sequence[dict[str, Any]]) -> str:
  """The test metric name of `records`; ValueError when there are none."""
  if not records:
    raise ValueError('no records to report')
  return results_lib.test_metric_name(records)


def usable(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """The records of runs that did not diverge: what the means, plots and CSV are made of (a diverged
  run's numbers are missing or meaningless); ValueError when every run diverged."""
  kept, diverged = results_lib.split_diverged(records)
  if records and not kept:
    raise ValueError(f'every one of the {len(diverged)} run(s) diverged: nothing to plot')
  return kept


def winning(
    values: Sequence[float], dense_values: Sequence[float], metric: str, higher_is_better: bool | None = None
) -> bool:
  """Whether a ticket whose trials reached `values` is a winning ticket against a dense network whose
  trials reached `dense_values`: its whole spread clear of the dense network's, every trial at least the
  best dense trial (at most the best, for an error such as RMSE). With one trial each, the one value
  against the other; never with no values. `higher_is_better`: the metric's direction (None: from its
  name, as `results.higher_is_better` reads it)."""
  if not len(values) or not len(dense_values):
    return False
  if higher_is_better is None:
    higher_is_better = results_lib.higher_is_better({'metric': metric})
  if higher_is_better:
    return min(values) >= max(dense_values)
  return max(values) <= min(dense_values)


def sparsity_summary(records: Sequence[dict[str, Any]]) -> dict[str, list[SparsityPoint]]:
  """Per branch (ticket first), one point per level: fraction remaining and the test metric's mean,
  minimum and maximum over trials."""
  records = usable(records)
  metric = test_metric(records)
  summary = {}
  for branch in branches(records):
    points = []
    for level in sorted({record['level'] for record in records if record['branch'] == branch}):
      selected = [record for record in records if record['branch'] == branch and record['level'] == level]
      values = np.array([record[metric] for record in selected], dtype=np.float64)
      points.append(
          SparsityPoint(
              level=level,
              fraction_remaining=float(np.mean([record['fraction_remaining'] for record in selected])),
              mean=float(np.mean(values)),
              minimum=float(np.min(values)),
              maximum=float(np.max(values)),
              trials=len(values),
          )
      )
    summary[branch] = points
  return summary


def training_curves(records: Sequence[dict[str, Any]], branch: str = 'ticket') -> list[TrainingCurve]:
  """One curve per level of `branch`: the test metric at each evaluated step, mean/min/max over the
  trials that evaluated that step."""
  records = usable(records)
  metric = test_metric(records)
  curves = []
  for level in sorted({record['level'] for record in records if record['branch'] == branch}):
    selected = [record for record in records if record['branch'] == branch and record['level'] == level]
    by_step: dict[int, list[float]] = {}
    for record in selected:
      for entry in record.get('curve', ()):
        if metric in entry:
          by_step.setdefault(int(entry['step']), []).append(float(entry[metric]))
    steps = sorted(by_step)
    curves.append(
        TrainingCurve(
            level=level,
            fraction_remaining=float(np.mean([record['fraction_remaining'] for record in selected])),
            steps=np.array(steps, dtype=np.int64),
            mean=np.array([np.mean(by_step[step]) for step in steps], dtype=np.float64),
            minimum=np.array([np.min(by_step[step]) for step in steps], dtype=np.float64),
            maximum=np.array([np.max(by_step[step]) for step in steps], dtype=np.float64),
            trials=len(selected),
        )
    )
  return curves


def sparsity_rows(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
  """The sparsity table as a header and rows: level, fraction_remaining, then per branch the test
  metric's mean, min and max over trials and the number of trials (empty where a branch has no record)."""
  records = usable(records)
  metric = test_metric(records)
  summary = sparsity_summary(records)
  header = ['level', 'fraction_remaining']
  for branch in summary:
    header += [f'{branch}_{metric}_mean', f'{branch}_{metric}_min', f'{branch}_{metric}_max', f'{branch}_trials']
  rows = []
  for level in sorted({record['level'] for record in records}):
    row: list[Any] = [
        level,
        float(np.mean([record['fraction_remaining'] for record in records if record['level'] == level])),
    ]
    for points in summary.values():
      point = next((point for point in points if point.level == level), None)
      row += ['', '', '', 0] if point is None else [point.mean, point.minimum, point.maximum, point.trials]
    rows.append(row)
  return header, rows


def write_csv(records: Sequence[dict[str, Any]], path: str) -> None:
  """Writes the sparsity table (see `sparsity_rows`) as CSV, atomically."""
  header, rows = sparsity_rows(records)
  text = io.StringIO()
  writer = csv.writer(text, lineterminator='\n')
  writer.writerow(header)
  writer.writerows(rows)
  with results_lib.atomic_open(path) as file:
    file.write(text.getvalue())

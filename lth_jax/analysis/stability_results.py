"""The results of stability to pruning (`lth_jax.analysis.stability`): one `StabilityResult` per
(ticket, rewind step), its JSON record, and a lottery workdir's file of them (stability.jsonl), read
back and searched."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from lth_jax import results as results_lib
from lth_jax.analysis.metrics import metric_key

# A lottery workdir's measurements (see `ticket_stability.measure_lottery_ticket_once`).
STABILITY_FILE = 'stability.jsonl'


@dataclasses.dataclass
class StabilityResult:
  """Stability of one ticket (and its random ticket) to pruning at one rewind step.

  Distances are normalized by `normalizer` (the final ||W_F - W'_F||) under their own keys and by
  `max_normalizer` (the largest ||W_F - W'_F|| of `full_pair_distances`) under the keys of
  `metric_key(name, 'max')`. Records written before the max normalization have no `max_normalizer`.
  """

  rewind_step: int
  final: dict[str, dict[str, float]]  # 'ticket' / 'random_ticket' -> metrics at the end
  curve: list[dict[str, Any]]  # per measured step: {'step', 'ticket': {...}, 'random_ticket': {...}}
  test_metrics: dict[str, float]  # member -> final test accuracy (or RMSE)
  normalizer: float
  max_normalizer: float | None = None
  full_pair_distances: list[dict[str, float]] = dataclasses.field(default_factory=list)  # {'step', 'distance'}
  level: int | None = None  # the lottery level whose ticket was measured (set by measure_lottery_ticket)
  trial: int = 0

  def as_record(self) -> dict[str, Any]:
    """A JSON-friendly summary."""
    return dataclasses.asdict(self)

  @classmethod
  def from_record(cls, record: Mapping[str, Any]) -> 'StabilityResult':
    """The result of `as_record` (also of records written before `max_normalizer`, `level` and `trial`)."""
    fields = {field.name for field in dataclasses.fields(cls)}
    missing = {'rewind_step', 'final', 'curve', 'test_metrics', 'normalizer'} - set(record)
    if missing:
      raise ValueError(f'not a stability record: missing {", ".join(sorted(missing))}')
    return cls(**{key: value for key, value in record.items() if key in fields})

  @property
  def steps(self) -> list[int]:
    """The measured steps (the last is the end of training)."""
    return [int(entry['step']) for entry in self.curve]

  def has_normalization(self, normalization: str) -> bool:
    """Whether the metrics of `normalization` were recorded ('max' is missing from older records)."""
    return normalization == 'final' or self.max_normalizer is not None

  def metric(self, member: str, metric: str, normalization: str = 'final') -> float:
    """`metric` of `member` ('ticket' or 'random_ticket') at the end of training."""
    return self.final[member][metric_key(metric, normalization)]

  def metric_curve(self, member: str, metric: str, normalization: str = 'final') -> list[float]:
    """`metric` of `member` at each of `steps`."""
    key = metric_key(metric, normalization)
    return [entry[member][key] for entry in self.curve]


def load_results(path: str) -> list[StabilityResult]:
  """The stability results of a JSONL file ([] when it does not exist; older records load too)."""
  return [StabilityResult.from_record(record) for record in results_lib.read_records(path)]


def find_result(
    results: Sequence[StabilityResult], rewind_step: int, level: int, trial: int, steps: Sequence[int]
) -> StabilityResult | None:
  """The result of `results` measured at this rewind step, level and trial over exactly `steps`, if any."""
  return next(
      (
          result
          for result in results
          if (result.rewind_step, result.level, result.trial) == (rewind_step, level, trial)
          and result.steps == list(steps)
      ),
      None,
  )

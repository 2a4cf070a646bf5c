"""A search: one lottery search the level loop trains (a plain run, a sweep's variant or a dense run
shared by several variants), as built once before anything trains."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from lth_jax import config as config_lib
from lth_jax import results as results_lib
from lth_jax.search.experiment import Experiment


@dataclasses.dataclass(frozen=True)
class Search:
  """One lottery search: what its config built, the folder it keeps its records and checkpoints in, and
  what its records and level 0 keep beyond a plain run's."""

  experiment: Experiment
  workdir: str
  variant: str = ''  # its folder below a sweep's workdir: its members' names in shared populations
  keep_snapshots: tuple[int, ...] = ()  # level-0 steps whose weights are kept (the starts of variants)
  record_fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # added to every record

  @property
  def spec(self) -> config_lib.RunSpec:
    """The search's resolved config."""
    return self.experiment.spec

  @property
  def results_path(self) -> str:
    """Its results file, `WORKDIR/results.jsonl`."""
    return os.path.join(self.workdir, results_lib.RESULTS_FILE)

  def read_records(self) -> list[dict[str, Any]]:
    """The records its results file holds so far (none before its first)."""
    return results_lib.read_records(self.results_path) if os.path.isfile(self.results_path) else []

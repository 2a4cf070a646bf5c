"""The lottery runner: levels of training, pruning and resetting, with control branches.

Level 0 trains the dense network from W_0 and keeps the weights at `pruning.rewind_step` (W_k; W_0
when the rewind step is 0). Each later level prunes the previous ticket's trained weights by
magnitude, resets the survivors to W_k and trains them from step k to the end; each control branch
(random reinitialization, permuted mask, ...) trains from the same level's mask. Every finished
(level, branch, trial) is appended to `WORKDIR/results.jsonl`; re-running in the same workdir skips
what is already recorded.

Each level's runs that are not yet recorded (level 0: every trial's dense run; level L: every trial's
ticket and controls) train together, in populations of at most `parallel.members_per_program` runs
(`lth_jax.search.population`). Runs survive being killed: a population in progress is checkpointed every
`checkpointing.every_steps` steps (and at the current step on SIGTERM), and a re-run continues it from
its newest good checkpoint with the same result as a run never interrupted. What a config builds
lives in `lth_jax.search.experiment`; the workdir's lock and config check in `lth_jax.search.workdir`; a trial's state
between levels in `lth_jax.search.trial`; the level loop, for which a run is a sweep of one search, in
`lth_jax.search.loop`; the pruning plan in `lth_jax.config.PruningPlan`. This module is the entry point, `lth_jax.run`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Mapping, Sequence

import ml_collections

from lth_jax.config import errors
from lth_jax import results as results_lib
from lth_jax.search import custom as custom_lib
from lth_jax.search import scalars as scalars_lib
from lth_jax.search import sweep_plan
from lth_jax.search import workdir as workdir_lib
from lth_jax.search.experiment import Experiment
from lth_jax.search.experiment import prepare
from lth_jax.search import loop
from lth_jax.search import population
from lth_jax.search.searches import Search
from lth_jax.training.preemption import StopRequest
from lth_jax.data import Dataset
from lth_jax.masks import PrunableRule
from lth_jax.results import RESULTS_FILE
from lth_jax.tasks import Task
from lth_jax.search.workdir import workdir_lock

__all__ = [
    'LotteryResults',
    'run',
]


@dataclasses.dataclass
class LotteryResults:
  """What a lottery run produced: its records (one per level, branch and trial) and where it lives."""

  workdir: str
  records: list[dict[str, Any]]

  def table(self) -> str:
    """The records as a printable table."""
    return results_lib.format_table(self.records)

  def sparsity_table(self) -> str:
    """Test metric against fraction of weights remaining, one column per branch."""
    return results_lib.format_sparsity_table(self.records)

  def select(self, **fields: Any) -> list[dict[str, Any]]:
    """Records whose fields equal the given values, e.g. `select(branch='ticket', trial=0)`."""
    return [record for record in self.records if all(record.get(k) == v for k, v in fields.items())]


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    log: Callable[[str], None] = workdir_lib.log_on_process_zero,
    *,
    allow_config_change: bool = False,
    keep_snapshots: Sequence[int] = (),
    record_fields: Mapping[str, Any] | None = None,
    model: custom_lib.ModelOrBuilder | None = None,
    dataset: Dataset | None = None,
    task: Task | None = None,
    prunable: PrunableRule | None = None,
) -> LotteryResults:
  """Runs (or resumes) the lottery experiment of `config` in `workdir`; returns its records.

  Every config check runs before any training: a bad field raises `errors.ConfigError` naming it,
  a workdir that is a file or not writable `compatibility.WorkdirError`, and a config whose results
  would differ from those of the config in `WORKDIR/config.json` a ConfigError listing the differing
  fields (unless `allow_config_change`). On SIGTERM, the run in progress is checkpointed at its
  current step and `Preempted` is raised; re-running continues it. A finished level whose checkpoint
  is damaged raises `checkpoints.CheckpointError` naming it.

  `keep_snapshots`: steps of level 0 whose weights are kept (`workdir.snapshot_directory`), for runs that
  start from them (a sweep's variants); `record_fields`: added to every record (a sweep's variant).

  Your own parts, instead of the config's (see README, "Your own model and data"): `model`, a flax
  module or a function num_outputs -> module; `dataset`, from `lth_jax.data.from_arrays` or
  `from_source`; `task`, an `lth_jax.tasks.Task` (loss and metrics); `prunable`, a rule
  (path, leaf) -> bool choosing the leaves pruning may touch. Pass the same ones to resume.
  """
  if sweep_plan.axes_from_config(config):
    raise errors.ConfigError(
        f'sweep: the config names sweep axes ({", ".join(sweep_plan.axes_from_config(config))}); run it with '
        'lth_jax.sweep(config, None, workdir) or python -m lth_jax.main, which run every variant'
    )
  custom = custom_lib.CustomParts(model, dataset, task, prunable)
  config = workdir_lib.recorded_packing(config, workdir, log)
  experiment = prepare(config, custom)
  config = custom.recorded(config, experiment.model)
  workdir_lib.check_writable(workdir)
  experiment.trainer()  # built before WORKDIR/config.json is written
  with workdir_lib.writes_named(workdir), workdir_lock(workdir, log):
    return _run_locked(
        config, experiment, workdir, log, allow_config_change, tuple(keep_snapshots), dict(record_fields or {})
    )


def _run_locked(
    config: ml_collections.ConfigDict,
    experiment: 'Experiment',
    workdir: str,
    log: Callable[[str], None],
    allow_config_change: bool,
    keep_snapshots: tuple[int, ...],
    record_fields: dict[str, Any],
) -> LotteryResults:
  """`run` once the workdir is locked."""
  workdir_lib.check_config_file(config, workdir, allow_config_change, log, resolved=experiment.spec)
  spec = experiment.spec
  plan = spec.pruning
  records = results_lib.read_records(os.path.join(workdir, RESULTS_FILE))
  scalars = scalars_lib.Scalars(workdir_lib.tensorboard_directory(workdir) if spec.checkpointing.tensorboard else None)
  started = time.perf_counter()
  log(
      f'lth_jax: {config.model.name} on {config.dataset.name}, {experiment.total_steps} steps per level, '
      f'{plan.levels} pruning levels of {plan.fraction:.3g} ({plan.scope}, {plan.mode}), rewind step '
      f'{plan.rewind_step}, {spec.trials} trial(s), {experiment.mesh.devices.size} device(s), '
      f'up to {experiment.members_per_program} run(s) per program'
      + (f'; {len(records)} record(s) already in {workdir}' if records else '')
  )
  stop = StopRequest()
  stop.install()
  try:
    search = Search(experiment, workdir, keep_snapshots=keep_snapshots, record_fields=record_fields)
    (searched,) = loop.train([search], range(plan.levels + 1), workdir, population.Watch(log, stop, scalars))
    loop.finish(searched, log)
    records = searched.records
  finally:
    stop.restore()
    scalars.close()
  log(f'finished in {time.perf_counter() - started:.1f} s; results in {os.path.join(workdir, RESULTS_FILE)}')
  log(results_lib.format_table(records))
  log(results_lib.format_sparsity_table(records))
  return LotteryResults(workdir=workdir, records=records)

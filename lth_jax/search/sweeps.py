"""A sweep: one search over the variants of a base config (`sweep_plan`), in one workdir.

    WORKDIR/sweep.json          the base config and the axes (a re-run with other axes or another base
                                config is refused; more values on the same axes are welcome)
    WORKDIR/dense/<key>/        one dense run per group of variants that share level 0: each trial's
                                level 0, trained once, keeping its weights at every rewind and
                                turnaround step the group's variants need (a variant that shares its
                                level 0 with no other trains it in its own folder)
    WORKDIR/variants/<label>/   each variant, a lottery workdir whose level 0 is taken from its dense
                                run (records, naming it under 'dense_run'; final weights; rewind and
                                turnaround points), then its own levels; every record carries the
                                variant's values under 'variant'
    WORKDIR/checkpoints/running/ the periodic checkpoints of populations in progress (and the records
                                of one killed while appending them: `results.append_to_workdirs`)

(the paths: `lth_jax.search.workdir`; the sweep file: `sweep_file`; the dense runs' level 0 given to
their variants: `dense_runs`)

Training goes by levels, not by variants: level 0 of every dense run (and of every variant that shares
it with none) first, then each pruned level of every variant. At each level, the runs of all searches
of one program shape train side by side in shared populations (`lth_jax.search.loop`): each member from
its own rewind point, with its own learning rate, warmup and weight decay where the variants differ.

Every variant is checked (config and data) before anything trains. A re-run continues where the sweep
stopped; a shared dense run is never trained twice, except when a new rewind or turnaround point needs
a snapshot it did not keep (then its level 0 is trained again, with every point, and a line says so).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping, Sequence

import ml_collections

from lth_jax import config as config_lib
from lth_jax import results as results_lib
from lth_jax.search import custom as custom_lib
from lth_jax.search import dense_runs
from lth_jax.search import loop
from lth_jax.search import packing
from lth_jax.search import population
from lth_jax.search import scalars as scalars_lib
from lth_jax.search import sweep_file
from lth_jax.search import sweep_plan
from lth_jax.search import workdir as workdir_lib
from lth_jax.search.experiment import Experiment
from lth_jax.search.experiment import prepare
from lth_jax.search.searches import Search
from lth_jax.data import Dataset
from lth_jax.masks import PrunableRule
from lth_jax.tasks import Task
from lth_jax.training.preemption import StopRequest


@dataclasses.dataclass
class SweepResults:
  """A sweep's variants and every record of them (each with its 'variant')."""

  workdir: str
  variants: list[sweep_plan.Variant]
  records: list[dict[str, Any]]

  def select(self, **fields: Any) -> list[dict[str, Any]]:
    """Records whose fields equal the given values, e.g. `select(variant={'pruning.rewind_step': 100})`."""
    return [record for record in self.records if all(record.get(k) == v for k, v in fields.items())]


@dataclasses.dataclass(frozen=True)
class _VariantRun:
  """One variant of the sweep, resolved."""

  variant: sweep_plan.Variant
  config: ml_collections.ConfigDict  # as the variant's config.json records it
  experiment: Experiment
  directory: str
  custom: custom_lib.CustomParts  # the parts given from Python, for every variant and dense run

  @property
  def spec(self) -> config_lib.RunSpec:
    return self.experiment.spec


def run(
    config: ml_collections.ConfigDict,
    axes: Mapping[str, Sequence[Any]] | None,
    workdir: str,
    log: Callable[[str], None] = workdir_lib.log_on_process_zero,
    *,
    model: custom_lib.ModelOrBuilder | None = None,
    dataset: Dataset | None = None,
    task: Task | None = None,
    prunable: PrunableRule | None = None,
) -> SweepResults:
  """Runs (or resumes) the sweep of `config` over `axes` ({field: values}; None: the config's own
  `sweep` section) in `workdir`; returns every variant's records. `model`, `dataset`, `task` and
  `prunable`: your own parts for every variant, as `lth_jax.run` takes them."""
  axes = sweep_plan.check_axes(config, sweep_plan.axes_from_config(config) if axes is None else axes)
  base = sweep_plan.Variant(()).config(config)
  variants = [(variant, variant.config(base)) for variant in sweep_plan.variants(axes)]
  custom = custom_lib.CustomParts(model, dataset, task, prunable)
  return _run_variants(base, variants, {'axes': json.loads(json.dumps(axes))}, workdir, log, custom)


def run_named(
    base: ml_collections.ConfigDict,
    configs: Mapping[str, ml_collections.ConfigDict],
    workdir: str,
    log: Callable[[str], None] = workdir_lib.log_on_process_zero,
    *,
    model: custom_lib.ModelOrBuilder | None = None,
    dataset: Dataset | None = None,
    task: Task | None = None,
    prunable: PrunableRule | None = None,
) -> SweepResults:
  """Runs (or resumes) named variants of `base` ({name: config}, each any change of `base`) as one
  sweep in `workdir`; each record's 'variant' holds the fields its config changes. A name already in
  the workdir must keep its config; new names are added. `model`, `dataset`, `task` and `prunable`:
  your own parts for every variant, as `lth_jax.run` takes them."""
  variants = [(sweep_plan.named_variant(name, base, config), config) for name, config in configs.items()]
  named = {variant.label: variant.as_dict() for variant, _ in variants}
  custom = custom_lib.CustomParts(model, dataset, task, prunable)
  return _run_variants(base, variants, {'named': named}, workdir, log, custom)


def _run_variants(
    base: ml_collections.ConfigDict,
    variants: Sequence[tuple[sweep_plan.Variant, ml_collections.ConfigDict]],
    entry: dict[str, Any],
    workdir: str,
    log: Callable[[str], None],
    custom: custom_lib.CustomParts | None = None,
) -> SweepResults:
  """Checks every variant, then trains the sweep under the workdir's lock (see `_train`)."""
  custom = custom or custom_lib.CustomParts()
  runs = []
  for variant, variant_config in variants:
    try:
      experiment = prepare(variant_config, custom)
    except config_lib.ConfigError as error:
      raise config_lib.ConfigError(f'sweep variant {variant.label}: {error}') from error
    if experiment.spec.pruning.turnaround == 'early_bird':  # its level 0 would be a shared dense run's
      raise config_lib.ConfigError(
          f"sweep variant {variant.label}: pruning.turnaround='early_bird' runs with lth_jax.run, not in a sweep "
          '(whose variants share dense runs that keep no early-bird weights); run each variant in its own workdir'
      )
    recorded = custom.recorded(variant_config, experiment.model)
    runs.append(_VariantRun(variant, recorded, experiment, workdir_lib.variant_directory(workdir, variant), custom))
  if runs:
    base = custom.recorded(base, runs[0].experiment.model)
  shared: dict[str, Experiment] = {}
  runs = [dataclasses.replace(run, experiment=_sharing(run.experiment, shared)) for run in runs]
  workdir_lib.check_writable(workdir)
  runs[0].experiment.trainer()  # built before anything is written
  with workdir_lib.writes_named(workdir), workdir_lib.workdir_lock(workdir, log):
    sweep_file.check_sweep_file(workdir, base, entry)
    stop = StopRequest()
    stop.install()
    try:
      _train(runs, workdir, log, stop, shared)
    finally:
      stop.restore()
  return load(workdir)


def _sharing(experiment: Experiment, shared: dict[str, Experiment]) -> Experiment:
  """`experiment` with the dataset and Trainers of the first experiment of its program shape in `shared`
  (`packing.shape_key`), so that every program of that shape is compiled once in the sweep."""
  first = shared.setdefault(packing.shape_key(experiment.spec), experiment)
  return experiment if first is experiment else first.for_variant(experiment.spec, experiment.ticket)


def _train(
    runs: list[_VariantRun],
    workdir: str,
    log: Callable[[str], None],
    stop: StopRequest,
    shared: dict[str, Experiment],
) -> None:
  """Level 0 of every dense run (and of each variant that shares it with none) in shared populations,
  each shared dense run's level 0 given to its variants, then every variant's pruned levels in shared
  populations (`shared`: the first experiment of each program shape, whose Trainers every search of
  that shape uses)."""
  groups: dict[str, list[_VariantRun]] = {}
  for member in runs:
    groups.setdefault(sweep_plan.dense_key(member.spec), []).append(member)
  log(
      f'lth_jax sweep: {len(runs)} variant(s); {len(groups)} dense run(s) of {runs[0].spec.trials} trial(s) '
      f'shared by them; {sum(run.spec.pruning.levels for run in runs)} pruning level(s) in all'
  )
  lone = {
      id(group[0])
      for key, group in groups.items()
      if len(group) == 1 and not os.path.isdir(workdir_lib.dense_directory(workdir, key))
  }
  dense = {
      key: _dense_search(group, workdir, workdir_lib.dense_directory(workdir, key), log, shared)
      for key, group in groups.items()
      if id(group[0]) not in lone
  }
  level_zero = [(_variant_search(run, workdir), run.config) for run in runs if id(run) in lone] + list(dense.values())
  for search, config in level_zero:
    workdir_lib.check_config_file(config, search.workdir, False, log, resolved=search.spec)
  scalars = scalars_lib.Scalars(
      workdir_lib.tensorboard_directory(workdir) if runs[0].spec.checkpointing.tensorboard else None
  )
  try:
    watch = population.Watch(log, stop, scalars)
    started = {
        searched.search.workdir: searched
        for searched in loop.train([s for s, _ in level_zero], range(1), workdir, watch)
    }
    for key, (search, _) in dense.items():
      for member in groups[key]:
        dense_runs.adopt_level_zero(
            member.directory,
            member.config,
            member.spec,
            member.variant,
            search.workdir,
            started[search.workdir].records,
            log,
        )
    searches = [_variant_search(run, workdir) for run in runs]
    levels = range(1, max(run.spec.pruning.levels for run in runs) + 1)
    for run, searched in zip(runs, loop.train(searches, levels, workdir, watch, started)):
      loop.finish(searched, log)
      log(f'lth_jax sweep: variant {run.variant.label}\n' + results_lib.format_sparsity_table(searched.records))
    for search, _ in dense.values():
      started[search.workdir].scalars.close()
  finally:
    scalars.close()


def _variant_search(run: _VariantRun, workdir: str) -> Search:
  """The search of one variant, its records carrying the variant's values."""
  return Search(
      run.experiment,
      run.directory,
      variant=os.path.relpath(run.directory, workdir),
      record_fields={'variant': run.variant.as_dict()},
  )


def _dense_search(
    group: list[_VariantRun], workdir: str, directory: str, log: Callable[[str], None], shared: dict[str, Experiment]
) -> tuple[Search, ml_collections.ConfigDict]:
  """The dense run of a group of variants and its config, keeping its weights at every step they start
  from (a finished dense run missing one of them is removed, to be trained again)."""
  steps = sweep_plan.snapshot_steps([member.spec for member in group])
  dense_runs.remove_dense_run_without(directory, steps, log)
  config = sweep_plan.dense_config(group[0].config)
  experiment = _sharing(prepare(config, group[0].custom), shared)
  return Search(experiment, directory, variant=os.path.relpath(directory, workdir), keep_snapshots=steps), config


def load(workdir: str) -> SweepResults:
  """The variants and records of the sweep in `workdir` (those trained so far)."""
  variants = sweep_file.recorded_variants(workdir)
  records = []
  for variant in variants:
    results_path = os.path.join(workdir_lib.variant_directory(workdir, variant), results_lib.RESULTS_FILE)
    records += results_lib.read_records(results_path) if os.path.isfile(results_path) else []
  return SweepResults(workdir=workdir, variants=variants, records=records)

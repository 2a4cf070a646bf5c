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
    WORKDIR/checkpoints/running/ the periodic checkpoints of programs in progress (and the journal of
                                one killed while writing its records: `packs.replay_journals`)

Training goes by levels, not by variants: level 0 of every dense run (and of every variant that shares
it with none) first, then each pruned level of every variant. At each level, the runs of all searches
of one program shape train side by side in shared programs (`lth_jax.search.packs`): each member from
its own rewind point, with its own learning rate, warmup and weight decay where the variants differ.

Every variant is checked (config and data) before anything trains. A re-run continues where the sweep
stopped; a shared dense run is never trained twice, except when a new rewind or turnaround point needs
a snapshot it did not keep (then its level 0 is trained again, with every point, and a line says so).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Callable, Mapping, Sequence

import jax
import ml_collections

from lth_jax import config as config_lib
from lth_jax import results as results_lib
from lth_jax.search import custom as custom_lib
from lth_jax.search import packs
from lth_jax.search import scalars as scalars_lib
from lth_jax.search import sweep_plan
from lth_jax.search import workdir as workdir_lib
from lth_jax.search.experiment import Experiment
from lth_jax.search.experiment import prepare
from lth_jax.search.levels import LevelRunner
from lth_jax.training import checkpoints
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


@dataclasses.dataclass(frozen=True)
class _Search:
  """A lottery search the sweep trains: a variant, or a dense run shared by several."""

  config: ml_collections.ConfigDict
  experiment: Experiment
  directory: str
  keep_snapshots: tuple[int, ...] = ()
  record_fields: dict[str, Any] = dataclasses.field(default_factory=dict)


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
    recorded = custom.recorded(variant_config, experiment.model)
    runs.append(_VariantRun(variant, recorded, experiment, workdir_lib.variant_directory(workdir, variant), custom))
  if runs:
    base = custom.recorded(base, runs[0].experiment.model)
  shared: dict[str, Experiment] = {}
  runs = [dataclasses.replace(run, experiment=_sharing(run.experiment, shared)) for run in runs]
  workdir_lib.check_writable(workdir)
  runs[0].experiment.trainer()  # built before anything is written
  with workdir_lib.writes_named(workdir), workdir_lib.workdir_lock(workdir, log):
    _check_sweep_file(workdir, base, entry)
    stop = StopRequest()
    stop.install()
    try:
      _train(runs, workdir, log, stop, shared)
    finally:
      stop.restore()
  return load(workdir)


def _sharing(experiment: Experiment, shared: dict[str, Experiment]) -> Experiment:
  """`experiment` with the dataset and Trainers of the first experiment of its program shape in `shared`
  (`packs.pack_key`), so that every program of that shape is compiled once in the sweep."""
  first = shared.setdefault(packs.pack_key(experiment.spec), experiment)
  return experiment if first is experiment else first.for_variant(experiment.spec, experiment.ticket)


def _train(
    runs: list[_VariantRun],
    workdir: str,
    log: Callable[[str], None],
    stop: StopRequest,
    shared: dict[str, Experiment],
) -> None:
  """Level 0 of every dense run (and of each variant that shares it with none) in shared programs, each
  shared dense run's level 0 given to its variants, then every variant's pruned levels in shared programs
  (`shared`: the first experiment of each program shape, whose Trainers every search of that shape uses)."""
  packs.replay_journals(workdir, log)
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
      key: _dense_search(group, workdir_lib.dense_directory(workdir, key), log, shared)
      for key, group in groups.items()
      if id(group[0]) not in lone
  }
  level_zero = [_variant_search(run) for run in runs if id(run) in lone] + list(dense.values())
  started = _train_searches(level_zero, workdir, log, stop, range(1))
  for key, search in dense.items():
    for member in groups[key]:
      _adopt_level_zero(member, search.directory, started[search.directory].records, log)
  searches = [_variant_search(run) for run in runs]
  runners = _train_searches(
      searches, workdir, log, stop, range(1, max(run.spec.pruning.levels for run in runs) + 1), started
  )
  for run in runs:
    runner = runners[run.directory]
    runner.end()
    runner.scalars.close()
    log(f'lth_jax sweep: variant {run.variant.label}\n' + results_lib.format_sparsity_table(runner.records))
  for search in dense.values():
    started[search.directory].scalars.close()


def _variant_search(run: _VariantRun) -> _Search:
  return _Search(run.config, run.experiment, run.directory, record_fields={'variant': run.variant.as_dict()})


def _dense_search(
    group: list[_VariantRun], directory: str, log: Callable[[str], None], shared: dict[str, Experiment]
) -> _Search:
  """The dense run of a group of variants, keeping its weights at every step they start from (a finished
  dense run missing one of them is removed, to be trained again)."""
  steps = sweep_plan.snapshot_steps([member.spec for member in group])
  _remove_dense_run_without(directory, steps, log)
  config = sweep_plan.dense_config(group[0].config)
  return _Search(config, _sharing(prepare(config, group[0].custom), shared), directory, keep_snapshots=steps)


def _train_searches(
    searches: list[_Search],
    workdir: str,
    log: Callable[[str], None],
    stop: StopRequest,
    levels: range,
    started: dict[str, LevelRunner] | None = None,
) -> dict[str, LevelRunner]:
  """Trains `levels` of `searches`, those of one program shape in shared programs; returns each search's
  level runner by folder (those in `started` continue from where they are)."""
  runners = dict(started or {})
  for indices in packs.searches_by_pack([search.experiment for search in searches]):
    members = [searches[index] for index in indices]
    scalars = scalars_lib.Scalars(
        workdir_lib.tensorboard_directory(workdir) if members[0].experiment.spec.checkpointing.tensorboard else None
    )
    pack = packs.create([search.experiment for search in members], workdir, log, stop, scalars)
    pack_runners = [runners.get(search.directory) or _runner(search, pack, log, stop) for search in members]
    for search, runner in zip(members, pack_runners):
      runner.programs, runner.hyperparameters = pack.programs, pack.hyperparameters(search.experiment.spec)
      runners[search.directory] = runner
    if levels:
      log(f'lth_jax sweep: levels {levels.start}-{levels.stop - 1}: {packs.describe(pack, members)}')
    try:
      packs.train_levels(pack, pack_runners, levels)
    finally:
      scalars.close()
  return runners


def _runner(search: _Search, pack: packs.Pack, log: Callable[[str], None], stop: StopRequest) -> LevelRunner:
  """The started level runner of one search in `pack` (its config checked against its folder's)."""
  spec = search.experiment.spec
  workdir_lib.check_config_file(search.config, search.directory, False, log, resolved=spec)
  results_path = os.path.join(search.directory, results_lib.RESULTS_FILE)
  runner = LevelRunner(
      pack.experiment.for_variant(spec, search.experiment.ticket),
      search.directory,
      results_lib.read_records(results_path) if os.path.isfile(results_path) else [],
      log,
      stop,
      scalars_lib.Scalars(
          workdir_lib.tensorboard_directory(search.directory) if spec.checkpointing.tensorboard else None
      ),
      search.keep_snapshots,
      search.record_fields,
      pack.programs,
      os.path.relpath(search.directory, pack.workdir),
      pack.hyperparameters(spec),
  )
  runner.start(spec.trials)
  return runner


def load(workdir: str) -> SweepResults:
  """The variants and records of the sweep in `workdir` (those trained so far)."""
  path = os.path.join(workdir, workdir_lib.SWEEP_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{workdir} holds no sweep ({workdir_lib.SWEEP_FILE} is missing)')
  with open(path) as file:
    recorded = json.load(file)
  if 'named' in recorded:
    variants = [sweep_plan.Variant(tuple(values.items()), name) for name, values in recorded['named'].items()]
  else:
    variants = sweep_plan.variants({field: tuple(values) for field, values in recorded['axes'].items()})
  records = []
  for variant in variants:
    results_path = os.path.join(workdir_lib.variant_directory(workdir, variant), results_lib.RESULTS_FILE)
    records += results_lib.read_records(results_path) if os.path.isfile(results_path) else []
  return SweepResults(workdir=workdir, variants=variants, records=records)


def _check_sweep_file(workdir: str, base: ml_collections.ConfigDict, entry: dict[str, Any]) -> None:
  """Refuses a workdir holding a sweep of other axes (or a named variant changed), or of a base config
  with other results; records this sweep's base config and variants (an earlier run's kept, new ones
  added)."""
  path = os.path.join(workdir, workdir_lib.SWEEP_FILE)
  new = {'config': config_lib.config_to_json(base), **entry}
  if os.path.isfile(path):
    with open(path) as file:
      old = json.load(file)
    _check_same_base(workdir, path, old, new)
    _merge_variants(workdir, old, new)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with results_lib.atomic_open(path) as file:
      json.dump(new, file, indent=1, sort_keys=True)


def _check_same_base(workdir: str, path: str, old: dict[str, Any], new: dict[str, Any]) -> None:
  """A ConfigError when the recorded base config gives other results than the new one."""
  defaults = config_lib.config_to_json(config_lib.base_config())
  changing, _ = config_lib.config_differences(old['config'], new['config'], defaults)
  if changing:
    raise config_lib.ConfigError(
        f'{workdir} holds a sweep of a different base config ({path}); fields that differ (old -> new):\n  '
        + '\n  '.join(changing)
        + '\nUse the same config or another --workdir.'
    )


def _merge_variants(workdir: str, old: dict[str, Any], new: dict[str, Any]) -> None:
  """Adds the recorded variants to `new` (in place), refusing other axes or a named variant changed."""
  if 'axes' in new:
    if sorted(old.get('axes', ())) != sorted(new['axes']):
      raise config_lib.ConfigError(
          f'{workdir} holds a sweep over {", ".join(old.get("axes", ())) or "named variants"}, not over '
          f'{", ".join(new["axes"]) or "no axis"}; use another --workdir'
      )
    for field, values in old['axes'].items():  # values of an earlier run stay part of the sweep
      new['axes'][field] = values + [value for value in new['axes'][field] if value not in values]
    return
  for name, values in old.get('named', {}).items():
    if name in new['named'] and new['named'][name] != values:
      raise config_lib.ConfigError(
          f'{workdir}: sweep variant {name} changes {new["named"][name]} now, {values} when it was trained; '
          'use another name or another --workdir'
      )
    new['named'].setdefault(name, values)


def _remove_dense_run_without(directory: str, steps: tuple[int, ...], log: Callable[[str], None]) -> None:
  """Removes the dense run in `directory` when a trial it finished kept no weights at one of `steps`
  (it is then trained again, keeping them all), saying so."""
  results_path = os.path.join(directory, results_lib.RESULTS_FILE)
  records = results_lib.read_records(results_path) if os.path.isfile(results_path) else []
  missing = [  # a diverged dense run keeps no weights after its divergence
      step
      for record in records
      if not results_lib.is_diverged(record)
      for step in steps
      if not os.path.isdir(workdir_lib.snapshot_directory(directory, record['trial'], step))
  ]
  if missing:
    log(
        f'lth_jax sweep: the dense run in {directory} kept no weights at step(s) {sorted(set(missing))}; '
        'training its level 0 again to keep them'
    )
    if jax.process_index() == 0:  # out of the way at once (a kill during the deletion leaves no half run)
      shutil.rmtree(directory + '.stale', ignore_errors=True)
      os.replace(directory, directory + '.stale')
      shutil.rmtree(directory + '.stale')


def _adopt_level_zero(
    member: _VariantRun, dense_dir: str, dense_records: list[dict[str, Any]], log: Callable[[str], None]
) -> None:
  """Gives a variant its level 0 from the dense run: the record (with the variant), the final weights
  and mask, and the weights at its rewind and turnaround steps, as its own level 0 would have left them."""
  os.makedirs(member.directory, exist_ok=True)
  workdir_lib.check_config_file(member.config, member.directory, False, log, resolved=member.spec)
  results_path = os.path.join(member.directory, results_lib.RESULTS_FILE)
  recorded = results_lib.read_records(results_path) if os.path.isfile(results_path) else []
  done = {record['trial'] for record in recorded if record['level'] == 0}
  adopted = []
  for record in dense_records:
    trial = record['trial']
    if trial in done:
      continue
    _copy_level_zero_weights(member, dense_dir, trial)
    adopted.append({**record, 'variant': member.variant.as_dict(), 'dense_run': os.path.basename(dense_dir)})
  if adopted and jax.process_index() == 0:
    results_lib.append_records(results_path, adopted)


def _copy_level_zero_weights(member: _VariantRun, dense_dir: str, trial: int) -> None:
  """The checkpoints a finished level 0 leaves for the levels after it, written into the variant: its
  rewind point, and the final weights and mask (with the weights at its turnaround step, if any)."""
  plan = member.spec.pruning
  target = workdir_lib.level_directory(member.directory, trial, 0)
  rewind = workdir_lib.snapshot_directory(dense_dir, trial, plan.rewind_step)
  if os.path.isdir(rewind) and jax.process_index() == 0:  # absent when the dense run diverged before it
    _replace_directory(rewind, workdir_lib.rewind_directory(member.directory, trial))
  if not plan.turnaround_step:
    if jax.process_index() == 0:
      _replace_directory(workdir_lib.level_directory(dense_dir, trial, 0), target)
    return
  level_zero = checkpoints.restore_tree(workdir_lib.level_directory(dense_dir, trial, 0))
  turnaround = workdir_lib.snapshot_directory(dense_dir, trial, plan.turnaround_step)
  # Diverged before the turnaround step: the next level is pruned from the final weights.
  level_zero['turnaround_params'] = (
      checkpoints.restore_tree(turnaround)[0] if os.path.isdir(turnaround) else level_zero['params']
  )
  checkpoints.save_tree(target, level_zero)


def _replace_directory(source: str, target: str) -> None:
  """A copy of the checkpoint folder `source` at `target` (replacing a partial copy left by a kill)."""
  if os.path.isdir(target):
    shutil.rmtree(target)
  os.makedirs(os.path.dirname(target), exist_ok=True)
  shutil.copytree(source, target + '.partial', dirs_exist_ok=True)
  os.replace(target + '.partial', target)

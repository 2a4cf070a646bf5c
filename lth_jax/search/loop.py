"""The level loop: every search's levels in order, a plain run being a sweep of one search.

At each level, every search builds its runs (`trial.prepare_level`: level 0, the trials' dense runs; a
pruned level, every active trial's ticket and controls); the runs of searches that share compiled
programs (`packing.shape_key`) are grouped, in the order of the searches, into populations of at most
`parallel.members_per_program` runs (`packing.groups`: recorded runs included, so that a resumed level
forms the same populations); each population's unrecorded runs train together (`population.train`),
each search takes its results (`trial.absorb`), and their records are appended to the searches'
results files as one step (`results.append_to_workdirs`). Only then do the population's periodic
checkpoints go: the records are what mark its runs done.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Any, Callable, Mapping, Sequence

import jax

from lth_jax import results as results_lib
from lth_jax.search import packing
from lth_jax.search import population as population_lib
from lth_jax.search import records as records_lib
from lth_jax.search import scalars as scalars_lib
from lth_jax.search import trial as trial_lib
from lth_jax.search import workdir as workdir_lib
from lth_jax.search.experiment import Experiment
from lth_jax.search.members import Member
from lth_jax.search.searches import Search
from lth_jax.training import checkpoints


@dataclasses.dataclass
class SearchProgress:
  """Where one search stands: its records so far and its trials' states."""

  search: Search
  records: list[dict[str, Any]]
  trials: dict[int, trial_lib.TrialState]
  scalars: scalars_lib.Scalars  # its level scalars


@dataclasses.dataclass(frozen=True)
class ProgramShape:
  """Searches whose runs share compiled programs: the first one's experiment (its Trainers), the cap on
  runs per population, the hyperparameters each member carries for itself, and how populations train."""

  experiment: Experiment
  searches: tuple[int, ...]  # indices into the loop's searches
  members_per_program: int
  hyperparameter_names: tuple[str, ...]
  settings: population_lib.TrainingSettings

  def describe(self) -> str:
    """'3 search(es) in programs of up to 8 run(s), each member with its own learning_rate'."""
    names = ', '.join(self.hyperparameter_names)
    own = f', each member with its own {names}' if names else ''
    return f'{len(self.searches)} search(es) in programs of up to {self.members_per_program} run(s){own}'


def program_shapes(searches: Sequence[Search]) -> list[ProgramShape]:
  """The searches grouped by `packing.shape_key`, in order of first appearance; the cap on runs per
  population is resolved for each group's whole levels."""
  indices: dict[str, list[int]] = {}
  for index, search in enumerate(searches):
    indices.setdefault(packing.shape_key(search.spec), []).append(index)
  shapes = []
  for members in indices.values():
    specs = [searches[index].spec for index in members]
    first = searches[members[0]].experiment
    if len(members) == 1:
      members_per_program = first.members_per_program
    else:
      level_zero = sum(spec.trials for spec in specs)
      pruned = sum(spec.trials * len(spec.branch_names) for spec in specs if spec.pruning.levels)
      members_per_program = first.members_per_program_cap((level_zero, pruned))
    settings = population_lib.TrainingSettings.from_spec(first.spec, max(spec.pruning.levels for spec in specs))
    shapes.append(
        ProgramShape(first, tuple(members), members_per_program, packing.varying_hyperparameters(specs), settings)
    )
  return shapes


def start(search: Search, log: Callable[[str], None], scalars: scalars_lib.Scalars | None = None) -> SearchProgress:
  """A search before its first level: its records so far and every trial's W_0; `scalars`: its level
  scalars' writer when it has one already (a plain run's, shared with its populations)."""
  spec = search.spec
  if scalars is None:
    scalars = scalars_lib.Scalars(
        workdir_lib.tensorboard_directory(search.workdir) if spec.checkpointing.tensorboard else None
    )
  records = search.read_records()
  trials = {trial: trial_lib.start(search, trial, records, log) for trial in range(spec.trials)}
  if any(name.startswith('synflow') for name in spec.branches) and jax.tree_util.tree_leaves(trials[0].model_state0):
    log(
        'lth_jax: synflow scores this model in evaluation mode, as Tanaka et al. do: batch norm normalizes '
        'with its running statistics (made positive), not with the statistics of a batch as in training'
    )
  return SearchProgress(search, records, trials, scalars)


def train(
    searches: Sequence[Search],
    levels: range,
    root: str,
    watch: population_lib.Watch,
    started: Mapping[str, SearchProgress] | None = None,
) -> list[SearchProgress]:
  """Trains `levels` of every search, level by level, the runs of searches of one program shape in shared
  populations checkpointed under `root` (a search's own workdir, or a sweep's); returns where each
  search stands (those in `started`, by workdir, continue from there)."""
  complete_pending_records(root, watch.log)
  progress = [
      (started or {}).get(search.workdir)
      or start(search, watch.log, watch.scalars if os.path.abspath(search.workdir) == os.path.abspath(root) else None)
      for search in searches
  ]
  shapes = program_shapes(searches)
  if any(search.variant for search in searches) and levels:
    for shape in shapes:
      watch.log(f'lth_jax sweep: levels {levels.start}-{levels.stop - 1}: {shape.describe()}')
  finished: set[int] = set()  # the shapes with no run left
  for level in levels:
    for number, shape in enumerate(shapes):
      if number in finished:
        continue
      runs = _level_runs(shape, progress, level, watch.log)
      if not runs:
        finished.add(number)
        continue
      for group in packing.groups(runs, shape.members_per_program):
        _train_population(shape, progress, level, group, root, watch)
      if level:
        for index in shape.searches:
          searched = progress[index]
          for trial, state in searched.trials.items():
            searched.trials[trial] = trial_lib.after_level(state, level, searched.search, watch.log)
  return progress


def _level_runs(
    shape: ProgramShape, progress: Sequence[SearchProgress], level: int, log: Callable[[str], None]
) -> list[tuple[int, int, str]]:
  """The (search index, trial, branch) runs of `level` of the shape's searches, recorded ones included
  (none of a search past its last level), each trial prepared for the level."""
  runs = []
  for index in shape.searches:
    searched = progress[index]
    if level > searched.search.spec.pruning.levels:
      continue
    for trial, state in searched.trials.items():
      state = trial_lib.prepare_level(state, level, searched.search, searched.records, log)
      searched.trials[trial] = state
      runs += [(index, trial, branch) for branch in trial_lib.level_branches(state, level, searched.search)]
  return runs


def _train_population(
    shape: ProgramShape,
    progress: Sequence[SearchProgress],
    level: int,
    group: list[tuple[int, int, str]],
    root: str,
    watch: population_lib.Watch,
) -> None:
  """Trains the unrecorded runs of one population of (search index, trial, branch) runs, then appends each
  search's records and removes the population's checkpoints."""
  directory = workdir_lib.population_directory(
      root, level, [(progress[index].search.variant, trial, branch) for index, trial, branch in group]
  )
  members: list[Member] = []
  owners: list[int] = []  # each member's search index
  for index, trial, branch in group:
    searched = progress[index]
    if not trial_lib.recorded(searched.search, searched.records, trial, level, branch):
      state = searched.trials[trial]
      members.append(trial_lib.member(state, level, branch, searched.search, shape.hyperparameter_names))
      owners.append(index)
  if members:
    trainer, slots = shape.experiment.program_trainer(len(members), shape.hyperparameter_names)
    results = population_lib.train(members, trainer, slots, shape.settings, root, watch)
    written: dict[int, list[dict[str, Any]]] = {}
    for index, result in sorted(zip(owners, results), key=lambda pair: pair[0]):
      searched = progress[index]
      trial = result.member.trial
      searched.trials[trial], record = trial_lib.absorb(searched.trials[trial], result, searched.search, watch.log)
      written.setdefault(index, []).append(record)
    if jax.process_index() == 0:
      results_lib.append_to_workdirs(
          root,
          {os.path.relpath(progress[index].search.workdir, root): found for index, found in written.items()},
          directory + results_lib.PENDING_SUFFIX,
      )
    for index, found in written.items():
      progress[index].records.extend(found)
      records_lib.write_level_scalars(progress[index].scalars, found)
  checkpoints.remove(directory)


def complete_pending_records(root: str, log: Callable[[str], None]) -> None:
  """Appends the records of populations killed between their searches' results files (each record once),
  then removes those populations' checkpoints: they are recorded."""
  for pending in sorted(glob.glob(os.path.join(workdir_lib.running_folder(root), '*' + results_lib.PENDING_SUFFIX))):
    if jax.process_index() == 0:
      for workdir, count in results_lib.complete_pending(root, pending).items():
        log(f'lth_jax sweep: wrote {count} record(s) of {workdir} left in {pending}')
    checkpoints.remove(pending[: -len(results_lib.PENDING_SUFFIX)])


def finish(searched: SearchProgress, log: Callable[[str], None]) -> None:
  """Removes a search's emptied folders of populations in progress, prints its surviving weights if
  asked to, and closes its scalars."""
  workdir = searched.search.workdir
  if jax.process_index() == 0:
    for folder in [
        *(workdir_lib.running_folder(workdir, trial) for trial in searched.trials),
        workdir_lib.running_folder(workdir),
    ]:
      if os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)
  if searched.search.spec.report.print_surviving_weights:
    for state in searched.trials.values():
      for branch, (record, final_params, branch_mask) in state.last_level.items():
        metric = results_lib.metric_of(record)
        log(
            f'trial {state.trial} level {record["level"]} {branch}: {record["kept_weights"]} weights '
            f'kept, {metric}={record[metric]:.6g}\n'
            + records_lib.format_surviving_weights(final_params, branch_mask, state.prunable)
        )
  searched.scalars.close()

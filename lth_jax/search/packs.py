"""Packs: the level runners of several searches of one program shape (a sweep's variants and dense runs)
trained side by side, level by level, in shared cohort programs.

Searches share a pack when their compiled programs are the same: same data, model, mesh, optimizer,
schedule, batch and length of training (`pack_key`). Within it, members differ in their weights, mask,
batch order, start step (each variant's rewind point) and, where the searches differ in them, their own
learning rate, warmup and weight decay (`optim.MEMBER_HYPERPARAMETERS`). At each level, every search's
runs (recorded ones included, so that a resumed pack forms the same programs) are grouped into programs
of at most the pack's `members_per_program` runs, in the order of the searches.

A program's records belong to several results files, which cannot be written in one atomic step. Its
records are first written together to `SWEEP/checkpoints/running/<program>.records.json` (atomically),
then appended to each search's results file; `replay_journals` finishes the appends of a program whose
process was killed in between, before anything else reads the records.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from typing import Any, Callable, Sequence

import jax

from lth_jax import config as config_lib
from lth_jax import optim
from lth_jax import results as results_lib
from lth_jax.search import cohorts
from lth_jax.search import packing
from lth_jax.search import workdir as workdir_lib
from lth_jax.search.members import MemberResult
from lth_jax.search import scalars as scalars_lib
from lth_jax.search.experiment import Experiment
from lth_jax.search.levels import LevelRunner
from lth_jax.training import checkpoints

JOURNAL_SUFFIX = '.records.json'


def pack_key(spec: config_lib.RunSpec) -> str:
  """A name for the programs a resolved search trains: equal for searches whose runs can share programs
  (everything but the seed, trials, pruning, controls, transfer and the per-member hyperparameters)."""
  fields = dataclasses.asdict(spec)
  for unused in ('seed', 'trials', 'branches', 'pruning', 'transfer'):
    del fields[unused]
  for name in optim.MEMBER_HYPERPARAMETERS:
    del fields['training'][name]
  del fields['report']['print_surviving_weights']
  return hashlib.sha1(json.dumps(fields, sort_keys=True, default=repr).encode()).hexdigest()[:12]


def varying_hyperparameters(specs: Sequence[config_lib.RunSpec]) -> tuple[str, ...]:
  """The names of `optim.MEMBER_HYPERPARAMETERS` whose values differ between `specs`."""
  return tuple(
      name for name in optim.MEMBER_HYPERPARAMETERS if len({getattr(spec.training, name) for spec in specs}) > 1
  )


@dataclasses.dataclass
class Pack:
  """The shared programs of searches with one `pack_key`: the Trainers (of the first search's experiment),
  the cap on runs per program, and the hyperparameters each member carries for itself."""

  experiment: Experiment
  programs: cohorts.ProgramRunner
  members_per_program: int
  hyperparameter_names: tuple[str, ...]
  workdir: str  # where its programs keep their checkpoints and journals

  def hyperparameters(self, spec: config_lib.RunSpec) -> dict[str, float]:
    """A search's own values of the pack's per-member hyperparameters."""
    return {name: getattr(spec.training, name) for name in self.hyperparameter_names}


def create(
    experiments: Sequence[Experiment],
    workdir: str,
    log: Callable[[str], None],
    should_stop: Callable[[int], bool] | None,
    scalars: scalars_lib.Scalars,
) -> Pack:
  """The pack of searches with the resolved `experiments` (one `pack_key`), its programs checkpointed
  under `workdir`; the cap on runs per program is resolved for the pack's whole cohorts."""
  first = experiments[0]
  specs = [experiment.spec for experiment in experiments]
  level_zero = sum(spec.trials for spec in specs)
  pruned = sum(spec.trials * len(spec.branch_names) for spec in specs if spec.pruning.levels)
  members_per_program = packing.resolve_members_per_program(first, (level_zero, pruned))
  settings = dataclasses.replace(
      cohorts.ProgramSettings.from_spec(first.spec), levels=max(spec.pruning.levels for spec in specs)
  )
  programs = cohorts.ProgramRunner(workdir, first.program_trainer, settings, log, should_stop, scalars)
  return Pack(first, programs, members_per_program, varying_hyperparameters(specs), workdir)


def train_levels(pack: Pack, searches: Sequence[LevelRunner], levels: Sequence[int]) -> None:
  """Trains `levels` of every search (each started, its `variant` its folder below the pack's workdir),
  level by level, each level's runs of all searches in shared programs."""
  for level in levels:
    runs = [(index, *run) for index, search in enumerate(searches) for run in _level_runs(search, level)]
    if not runs:
      return
    for group in packing.groups(runs, pack.members_per_program):
      _train_program(pack, searches, level, group)
    if level:
      for search in searches:
        search.level_finished(level)


def _level_runs(search: LevelRunner, level: int) -> list[tuple[int, str]]:
  """The (trial, branch) runs of `level` of one search (none past its last level)."""
  return search.level_runs(level) if level <= search.plan.levels else []


def _train_program(pack: Pack, searches: Sequence[LevelRunner], level: int, group: list[tuple[int, int, str]]) -> None:
  """Trains the unrecorded runs of one program of (search index, trial, branch) runs, then writes each
  search's records (through the journal)."""
  directory = workdir_lib.program_directory(
      pack.workdir, level, [(searches[index].variant, trial, branch) for index, trial, branch in group]
  )
  program, owners = [], {}  # the members to train; id(member) -> its search's index
  for index, trial, branch in group:
    member = searches[index].member(level, trial, branch)
    if member is not None:
      program.append(member)
      owners[id(member)] = index
  if program:
    results: dict[int, list[MemberResult]] = {}
    for result in pack.programs.train(program):
      results.setdefault(owners[id(result.member)], []).append(result)
    written = {index: searches[index].finish(found) for index, found in sorted(results.items())}
    journal = directory + JOURNAL_SUFFIX
    if jax.process_index() == 0:
      with results_lib.atomic_open(journal) as file:
        json.dump({searches[index].variant: records for index, records in written.items()}, file)
    for index, records in written.items():
      searches[index].write(records)
    if jax.process_index() == 0:
      os.remove(journal)
  checkpoints.remove(directory)


def replay_journals(workdir: str, log: Callable[[str], None]) -> None:
  """Appends the records of programs killed between their journal and their last results file (each
  record once), then removes the journal and the program's checkpoints: they are recorded."""
  for journal in sorted(glob.glob(os.path.join(workdir_lib.running_folder(workdir), '*' + JOURNAL_SUFFIX))):
    with open(journal) as file:
      written = json.load(file)
    for variant, records in written.items():
      path = os.path.join(workdir, variant, results_lib.RESULTS_FILE)
      recorded = results_lib.read_records(path) if os.path.isfile(path) else []
      done = {(record['trial'], record['level'], record['branch']) for record in recorded}
      missing = [record for record in records if (record['trial'], record['level'], record['branch']) not in done]
      if missing and jax.process_index() == 0:
        results_lib.append_records(path, missing)
        log(f'lth_jax sweep: wrote {len(missing)} record(s) of {variant} left in {journal}')
    checkpoints.remove(journal[: -len(JOURNAL_SUFFIX)])
    if jax.process_index() == 0:
      os.remove(journal)


def searches_by_pack(experiments: Sequence[Experiment]) -> list[list[int]]:
  """The indices of `experiments` grouped by `pack_key`, in order of first appearance."""
  packs: dict[str, list[int]] = {}
  for index, experiment in enumerate(experiments):
    packs.setdefault(pack_key(experiment.spec), []).append(index)
  return list(packs.values())


def describe(pack: Pack, searches: Sequence[Any]) -> str:
  """'3 searches in programs of up to 8 runs, each member with its own learning_rate'."""
  names = ', '.join(pack.hyperparameter_names)
  own = f', each member with its own {names}' if names else ''
  return f'{len(searches)} search(es) in programs of up to {pack.members_per_program} run(s){own}'

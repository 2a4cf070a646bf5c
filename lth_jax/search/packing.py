"""The packing of a level's runs into populations: which searches can share compiled programs
(`shape_key`), the hyperparameters their members hold for themselves, the largest populations a search
forms, and the groups of a level's runs under a cap (the cap itself, by device memory where it is set
to 0, is `Experiment.members_per_program_cap`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Sequence


from lth_jax import config as config_lib
from lth_jax import optim


def groups(keys: Sequence[Any], members_per_program: int) -> list[list[Any]]:
  """A level's whole runs (recorded ones included) in populations of at most `members_per_program`, in
  order and as evenly sized as that allows (10 runs, at most 8 per program: 5 and 5, not 8 and 2).
  Grouping all the runs, not only what is left to train, keeps a resumed level's populations (and
  so their numbers) those of an uninterrupted run: a program's records are written together."""
  if not keys:
    return []
  count = math.ceil(len(keys) / max(1, members_per_program))
  size = math.ceil(len(keys) / count)
  return [list(keys[start : start + size]) for start in range(0, len(keys), size)]


def largest_cohort(spec: config_lib.RunSpec) -> tuple[int, int]:
  """(level 0's cohort: the trials, a pruned level's cohort: trials x branches)."""
  trials = spec.trials
  return trials, trials * len(spec.branch_names) if spec.pruning.levels else trials


def shape_key(spec: config_lib.RunSpec) -> str:
  """A name for the compiled programs a resolved search trains: equal for searches whose runs can share
  populations (everything but the seed, trials, pruning, controls, transfer and the per-member
  hyperparameters)."""
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

"""Stability to pruning of the tickets of a lottery workdir: `measure_lottery_ticket` measures the ticket a
level found (running the lottery first if that level is missing), `measure_lottery_ticket_once` keeps
each result in the workdir's stability.jsonl and returns a stored one without training
(`lth_jax.analysis.stability` measures; `stability_results` holds the records)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax

from lth_jax.config import compatibility
from lth_jax.config import errors
from lth_jax import results as results_lib
from lth_jax.search import custom as custom_lib
from lth_jax.search import experiment as experiment_lib
from lth_jax.search import lottery
from lth_jax.search import trial as trial_lib
from lth_jax.search import workdir as workdir_lib
from lth_jax.training import checkpoints
from lth_jax.analysis.stability import MEMBERS
from lth_jax.analysis.stability import measure
from lth_jax.analysis.stability import measured_steps
from lth_jax.analysis.stability_results import find_result
from lth_jax.analysis.stability_results import load_results
from lth_jax.analysis.stability_results import STABILITY_FILE
from lth_jax.analysis.stability_results import StabilityResult


def measure_lottery_ticket(
    config: Any,
    workdir: str,
    level: int,
    trial: int = 0,
    measure_steps: Sequence[int] = (),
    **parts: Any,
) -> StabilityResult:
  """Stability of the ticket that `lottery.run(config, workdir)` found at `level` (trial `trial`):
  its mask came from pruning (`pruning.mode`) with late resetting to `config.pruning.rewind_step`, which is
  also the step the population's tickets start from. Runs the lottery first if that level is missing.
  `parts`: your own `model`, `dataset`, `task` and `prunable`, as `lth_jax.run` takes them.
  """
  custom = custom_lib.CustomParts(**parts)
  return _measure_prepared(config, experiment_lib.prepare(config, custom), workdir, level, trial, measure_steps, custom)


def measure_lottery_ticket_once(
    config: Any,
    workdir: str,
    level: int,
    trial: int = 0,
    measure_steps: Sequence[int] = (),
    **parts: Any,
) -> tuple[StabilityResult, bool]:
  """`measure_lottery_ticket`, kept in WORKDIR/stability.jsonl: a result of the same rewind step, level,
  trial and measured steps already there is returned without training; a new one is appended
  atomically. Returns (the result, whether it was measured now)."""
  custom = custom_lib.CustomParts(**parts)
  experiment = experiment_lib.prepare(config, custom)
  path = os.path.join(workdir, STABILITY_FILE)
  rewind_step = experiment.spec.pruning.rewind_step
  steps = measured_steps(rewind_step, experiment.total_steps, measure_steps)
  found = find_result(load_results(path), rewind_step, level, trial, steps)
  if found is not None and os.path.isfile(os.path.join(workdir, compatibility.CONFIG_FILE)):
    recorded = custom.recorded(config, experiment.model)
    workdir_lib.check_workdir_config(recorded, experiment.spec, workdir)  # the stored result is of this config
    return found, False
  result = _measure_prepared(config, experiment, workdir, level, trial, measure_steps, custom)
  if jax.process_index() == 0:  # one writer on a pod, as for the lottery's records
    results_lib.append_record(path, results_lib.finite_or_none(result.as_record()))
  return result, True


def _measure_prepared(
    config: Any,
    experiment: experiment_lib.Experiment,
    workdir: str,
    level: int,
    trial: int,
    measure_steps: Sequence[int],
    custom: custom_lib.CustomParts,
) -> StabilityResult:
  """`measure_lottery_ticket` with `experiment_lib.prepare(config, custom)` already done."""
  spec = experiment.spec
  levels, trials = spec.pruning.levels, spec.trials
  if not (isinstance(level, int) and 1 <= level <= levels):
    raise errors.ConfigError(
        f'level={level!r}: the ticket of a pruned level is measured, 1..{levels} ' '(pruning.levels)'
    )
  if not (isinstance(trial, int) and 0 <= trial < trials):
    raise errors.ConfigError(f'trial={trial!r}: must be in 0..{trials - 1} (trials={trials})')
  level_dir = workdir_lib.level_directory(workdir, trial, level)
  if not os.path.isdir(level_dir):
    lottery.run(config, workdir, **custom.arguments())
  else:  # the level's mask must come from this config
    workdir_lib.check_workdir_config(custom.recorded(config, experiment.model), experiment.spec, workdir)
  if not os.path.isdir(level_dir):
    raise ValueError(f'the lottery run in {workdir} stopped before level {level} (see pruning.levels)')
  single, population = experiment.trainer(), experiment.trainer(len(MEMBERS))
  init_seed, data_seed = trial_lib.trial_seeds(spec.seed, trial)
  other_init_seed, other_data_seed = trial_lib.trial_seeds(spec.seed + 7919, trial)
  initial = single.init_variables(init_seed)
  keep_mask = checkpoints.restore_tree(level_dir)['mask']
  keep_mask = jax.tree_util.tree_unflatten(
      jax.tree_util.tree_structure(initial[0]), jax.tree_util.tree_leaves(keep_mask)
  )
  result = measure(
      population,
      initial,
      single.init_variables(other_init_seed),
      keep_mask,
      experiment.prunable(initial[0]),
      spec.pruning.rewind_step,
      experiment.total_steps,
      data_seed,
      other_data_seed,
      random_ticket_seed=init_seed + level,
      measure_steps=measure_steps,
  )
  return dataclasses.replace(result, level=level, trial=trial)

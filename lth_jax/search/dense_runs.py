"""The dense runs a sweep's variants share: a dense run that lacks a snapshot a variant needs is removed
(to be trained again), and a finished dense run's level 0 is given to each of its variants (records,
final weights and mask, rewind and turnaround points), as the variant's own level 0 would have left it."""

from __future__ import annotations

import os
import shutil
from typing import Any, Callable

import jax
import ml_collections

from lth_jax import config as config_lib
from lth_jax import results as results_lib
from lth_jax.search import sweep_plan
from lth_jax.search import workdir as workdir_lib
from lth_jax.training import checkpoints


def remove_dense_run_without(directory: str, steps: tuple[int, ...], log: Callable[[str], None]) -> None:
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


def adopt_level_zero(
    directory: str,
    config: ml_collections.ConfigDict,
    spec: config_lib.RunSpec,
    variant: sweep_plan.Variant,
    dense_dir: str,
    dense_records: list[dict[str, Any]],
    log: Callable[[str], None],
) -> None:
  """Gives a variant (its workdir `directory`, its recorded `config` and resolved `spec`) its level 0 from
  the dense run in `dense_dir`: the record (with the variant), the final weights and mask, and the weights
  at its rewind and turnaround steps, as its own level 0 would have left them."""
  os.makedirs(directory, exist_ok=True)
  workdir_lib.check_config_file(config, directory, False, log, resolved=spec)
  results_path = os.path.join(directory, results_lib.RESULTS_FILE)
  recorded = results_lib.read_records(results_path) if os.path.isfile(results_path) else []
  done = {record['trial'] for record in recorded if record['level'] == 0}
  adopted = []
  for record in dense_records:
    trial = record['trial']
    if trial in done:
      continue
    _copy_level_zero_weights(directory, spec, dense_dir, trial)
    adopted.append({**record, 'variant': variant.as_dict(), 'dense_run': os.path.basename(dense_dir)})
  if adopted and jax.process_index() == 0:
    results_lib.append_records(results_path, adopted)


def _copy_level_zero_weights(directory: str, spec: config_lib.RunSpec, dense_dir: str, trial: int) -> None:
  """The checkpoints a finished level 0 leaves for the levels after it, written into the variant's workdir
  `directory`: its rewind point, and the final weights and mask (with the weights at its turnaround step,
  if any)."""
  plan = spec.pruning
  target = workdir_lib.level_directory(directory, trial, 0)
  rewind = workdir_lib.snapshot_directory(dense_dir, trial, plan.rewind_step)
  if os.path.isdir(rewind) and jax.process_index() == 0:  # absent when the dense run diverged before it
    _replace_directory(rewind, workdir_lib.rewind_directory(directory, trial))
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

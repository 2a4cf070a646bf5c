"""Stability of training to pruning (Frankle et al., "The Lottery Ticket Hypothesis at Scale", §3.1 and
appendix A), measured on a population (`measure`). The tickets of a lottery workdir are measured by
`lth_jax.analysis.ticket_stability` (kept in its stability.jsonl), the results are
`lth_jax.analysis.stability_results`, the metrics themselves are in `lth_jax.analysis.metrics`, linear mode
connectivity in `lth_jax.analysis.connectivity`.

A population trained in lockstep by one vmapped step:
  full          the full network from W_0, continuing its own trajectory through step i
  ticket        m ⊙ W_i, trained from step i with the same batches as `full`
  random_ticket m' ⊙ W_i with m' the ticket's mask permuted within each layer, same batches
  full_other    a second full network from another initialization and batch order (normalization)
With W_F = m ⊙ (full's weights), W_T = m ⊙ (ticket's weights) and W_* = the full network's final
weights, the metrics (on the ticket's surviving weights) are:
  l2_distance          ||W_F - W_T|| / ||full_final - full_other_final|| (all prunable weights)
  angle                the angle between (W_F - W_0) and (W_T - W_0), in degrees
  angle_ticket_to_final, angle_full_to_final   angles of (W_T - W_0) and (W_F - W_0) to (W_* - W_0)
  correlation          Pearson correlation of W_F and W_T
  full_distance_from_init, ticket_distance_from_init   ||W_F - W_0||, ||W_T - W_0||, normalized alike
The random ticket gets the same metrics with its own mask m'.

Two normalizations of the distances (l2_distance and the distances from init):
  final  by ||W_F - W'_F|| at the end of training (Figures 4, 11-13): the keys above;
  max    by the maximum of ||W_F - W'_F|| over every measured step, the initializations (step 0) and
         the rewind step included (Figures 6 and 14): the same keys with the suffix '_max_normalized'.
W_F, W'_F here are all prunable weights of the two full networks (members 0 and 3).
"""

from __future__ import annotations

from typing import Any, cast, Sequence

import jax
import numpy as np

from lth_jax import masks as masks_lib
from lth_jax import pruning
from lth_jax.training import parallel
from lth_jax.training import steps as steps_lib
from lth_jax.training import trainer as trainer_lib
from lth_jax.analysis.metrics import l2_distance
from lth_jax.analysis.metrics import masked_vector
from lth_jax.analysis.metrics import max_distance
from lth_jax.analysis.metrics import stability_metrics
from lth_jax.analysis.metrics import with_max_normalized
from lth_jax.analysis.stability_results import StabilityResult

__all__ = ['MEMBERS', 'measure', 'measured_steps']

MEMBERS = ('full', 'ticket', 'random_ticket', 'full_other')


def measure(
    trainer: trainer_lib.Trainer,
    initial: tuple[Any, Any],
    other_initial: tuple[Any, Any],
    keep_mask: Any,
    prunable: Any,
    rewind_step: int,
    end_step: int,
    data_seed: int,
    other_data_seed: int,
    random_ticket_seed: int,
    measure_steps: Sequence[int] = (),
) -> StabilityResult:
  """Trains the four-member population (see the module docstring) and computes the metrics.

  Args:
    trainer: a Trainer with population_size == 4 (one member per entry of MEMBERS).
    initial: (params, model_state) W_0 of the full network.
    other_initial: (params, model_state) of the second full network.
    keep_mask: the winning ticket's mask m (found with late resetting to `rewind_step`).
    rewind_step: i, the step whose weights the tickets start from.
    end_step: n, the end of training.
    data_seed: batch order shared by full, ticket and random ticket; `other_data_seed` for full_other.
    measure_steps: steps (after `rewind_step`) at which metrics are also computed; always the end.
      Those before `rewind_step` (and step 0 and the rewind step) measure ||W_F - W'_F|| for the
      max normalization only.
  """
  if trainer.population_size != len(MEMBERS):
    raise ValueError(f'stability.measure needs a Trainer with population_size={len(MEMBERS)}')
  params0 = initial[0]
  ones = jax.tree_util.tree_map(lambda leaf: np.ones(np.shape(leaf), bool), params0)
  random_mask = pruning.permute_within_layers(keep_mask, prunable, random_ticket_seed)
  seeds = [data_seed, data_seed, data_seed, other_data_seed]
  warm, full_pair_distances = _train_to_rewind(
      trainer, initial, other_initial, ones, prunable, rewind_step, seeds, measure_steps
  )
  state = _ticket_state(trainer, warm, keep_mask, random_mask, ones, rewind_step)
  steps = measured_steps(rewind_step, end_step, measure_steps)
  result = trainer.train(state, end_step, seeds, snapshot_steps=steps)

  full_pair_distances += [
      {'step': step, 'distance': _full_pair_distance(result.snapshots[step][0], ones, prunable)} for step in steps
  ]
  normalizer = full_pair_distances[-1]['distance'] or 1.0
  max_normalizer = max_distance(full_pair_distances)
  curve = _stability_curve(
      params0, result.snapshots, steps, keep_mask, random_mask, prunable, normalizer, max_normalizer
  )
  metric = trainer.task.metric_name
  return StabilityResult(
      rewind_step=rewind_step,
      final={name: curve[-1][name] for name in ('ticket', 'random_ticket')},
      curve=curve,
      test_metrics=dict(zip(MEMBERS, cast(list[float], result.curve[-1][metric]))),  # one per member
      normalizer=normalizer,
      max_normalizer=max_normalizer,
      full_pair_distances=full_pair_distances,
  )


def _full_pair_distance(params: Any, ones: Any, prunable: Any) -> float:
  """||W_F - W'_F|| over all prunable weights of the two full networks (members 0 and 3 of `params`)."""
  return l2_distance(
      masked_vector(steps_lib.member(params, 0), ones, prunable),
      masked_vector(steps_lib.member(params, 3), ones, prunable),
  )


def _train_to_rewind(
    trainer: trainer_lib.Trainer,
    initial: tuple[Any, Any],
    other_initial: tuple[Any, Any],
    ones: Any,
    prunable: Any,
    rewind_step: int,
    seeds: list[int],
    measure_steps: Sequence[int],
) -> tuple[steps_lib.TrainState, list[dict[str, float]]]:
  """Phase 1 of `measure`: the population's host state at the rewind step, and ||W_F - W'_F|| at step 0,
  at the steps of `measure_steps` before the rewind step and at the rewind step."""
  params0, model_state0 = initial
  other_params, other_model_state = other_initial
  # The two full networks train from their initializations to the rewind step. Members 1 and 2 (the
  # tickets) ride along as copies of the full network and are replaced afterwards.
  warm = trainer.create_state(
      steps_lib.stack_members([params0, params0, params0, other_params]),
      steps_lib.stack_members([model_state0, model_state0, model_state0, other_model_state]),
      steps_lib.stack_members([ones, ones, ones, ones]),
      0,
  )
  early_steps = sorted({step for step in measure_steps if 0 < step < rewind_step})
  full_pair_distances = [
      {
          'step': 0,
          'distance': l2_distance(masked_vector(params0, ones, prunable), masked_vector(other_params, ones, prunable)),
      }
  ]
  if rewind_step:
    early = trainer.train(warm, rewind_step, seeds, snapshot_steps=early_steps)
    full_pair_distances += [
        {'step': step, 'distance': _full_pair_distance(early.snapshots[step][0], ones, prunable)}
        for step in early_steps
    ]
    warm = early.state
  warm = parallel.to_host(warm)
  if rewind_step:
    full_pair_distances.append({'step': rewind_step, 'distance': _full_pair_distance(warm.params, ones, prunable)})
  return warm, full_pair_distances


def _ticket_state(
    trainer: trainer_lib.Trainer,
    warm: steps_lib.TrainState,
    keep_mask: Any,
    random_mask: Any,
    ones: Any,
    rewind_step: int,
) -> steps_lib.TrainState:
  """The population that phase 2 of `measure` trains: full and full_other continue from the host state `warm`;
  the tickets start from m ⊙ W_i and m' ⊙ W_i with fresh optimizer state."""
  full_at_rewind = steps_lib.member(warm.params, 0)
  model_state_at_rewind = steps_lib.member(warm.model_state, 0)
  ticket_params = masks_lib.apply(full_at_rewind, keep_mask)
  random_params = masks_lib.apply(full_at_rewind, random_mask)
  fresh = [trainer.fresh_optimizer_state(ticket_params), trainer.fresh_optimizer_state(random_params)]
  opt_state = steps_lib.stack_members(
      [steps_lib.member(warm.opt_state, 0), *fresh, steps_lib.member(warm.opt_state, 3)]
  )
  return trainer.create_state(
      steps_lib.stack_members([full_at_rewind, ticket_params, random_params, steps_lib.member(warm.params, 3)]),
      steps_lib.stack_members(
          [model_state_at_rewind, model_state_at_rewind, model_state_at_rewind, steps_lib.member(warm.model_state, 3)]
      ),
      steps_lib.stack_members([ones, jax.tree_util.tree_map(np.asarray, keep_mask), random_mask, ones]),
      rewind_step,
      opt_state,
  )


def _stability_curve(
    params0: Any,
    snapshots: dict[int, tuple[Any, Any]],
    steps: Sequence[int],
    keep_mask: Any,
    random_mask: Any,
    prunable: Any,
    normalizer: float,
    max_normalizer: float,
) -> list[dict[str, Any]]:
  """Per measured step, the metrics of the ticket and the random ticket (both normalizations) from the
  population's snapshots; W_* is the full network's weights at the last of `steps`."""
  full_final = steps_lib.member(snapshots[steps[-1]][0], 0)
  curve: list[dict[str, Any]] = []
  for step in steps:
    params = snapshots[step][0]
    full = steps_lib.member(params, 0)
    entry: dict[str, Any] = {'step': step}
    for index, name, mask in ((1, 'ticket', keep_mask), (2, 'random_ticket', random_mask)):
      metrics = stability_metrics(
          params0, full, steps_lib.member(params, index), full_final, mask, prunable, normalizer
      )
      entry[name] = with_max_normalized(metrics, normalizer, max_normalizer)
    curve.append(entry)
  return curve


def measured_steps(rewind_step: int, end_step: int, measure_steps: Sequence[int]) -> list[int]:
  """The steps whose metrics `measure` records: those of `measure_steps` after the rewind step, and the end."""
  return sorted({int(step) for step in measure_steps if rewind_step < step < end_step} | {int(end_step)})

"""Linear mode connectivity: two copies of a network trained from one point with different batch
orders, and the test error along the straight path between them (its barrier and instability)."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import jax

from lth_jax import masks as masks_lib
from lth_jax.training import parallel
from lth_jax.training import steps
from lth_jax.training import trainer as trainer_lib


def interpolate(first: Any, second: Any, alpha: float) -> Any:
  """(1 - alpha) * first + alpha * second, leaf by leaf."""
  return jax.tree_util.tree_map(
      lambda a, b: ((1.0 - alpha) * np.asarray(a, np.float64) + alpha * np.asarray(b, np.float64)).astype(
          np.asarray(a).dtype
      ),
      first,
      second,
  )


@dataclasses.dataclass
class ConnectivityResult:
  """Test error along the straight line between two trained copies, and its barrier."""

  alphas: list[float]
  errors: list[float]  # 1 - accuracy (classification) or RMSE (regression) at each alpha
  barrier: float  # max over alpha of error(alpha) - the linear interpolation of the end errors
  instability: float  # max over alpha of error(alpha) - the mean of the end errors (Frankle et al. 2020)


def error_barrier(alphas: Sequence[float], errors: Sequence[float]) -> float:
  """max_alpha [error(alpha) - ((1 - alpha) error(0) + alpha error(1))] (0 when the path is convex)."""
  alpha, error = np.asarray(alphas, np.float64), np.asarray(errors, np.float64)
  baseline = (1 - alpha) * error[0] + alpha * error[-1]
  return float(max(0.0, np.max(error - baseline)))


def error_barrier_height(errors: Sequence[float]) -> float:
  """max_alpha error(alpha) - (error(0) + error(1)) / 2: the instability of linear mode connectivity
  (Frankle et al. 2020). It differs from `error_barrier` only when the end errors differ."""
  error = np.asarray(errors, np.float64)
  return float(max(0.0, np.max(error) - (error[0] + error[-1]) / 2))


def linear_mode_connectivity(
    trainer: trainer_lib.Trainer,
    evaluator: trainer_lib.Trainer,
    start: tuple[Any, Any],
    keep_mask: Any,
    start_step: int,
    end_step: int,
    data_seeds: tuple[int, int],
    num_points: int = 11,
) -> ConnectivityResult:
  """Trains two copies of (params, model_state) `start` (masked by `keep_mask`) from `start_step` with
  different batch orders in lockstep, then evaluates the straight path between them.

  The non-parameter state (batch-norm running statistics) is interpolated with the parameters, so
  both ends are exactly the two trained networks.

  `trainer` must have population_size == 2; `evaluator` is a Trainer of the same model and data for a
  run alone (population_size == 1: it evaluates one interpolated network at a time).
  """
  if trainer.population_size != 2:
    raise ValueError('linear_mode_connectivity needs a Trainer with population_size=2 (experiment.trainer(2))')
  if evaluator.population_size != 1:
    raise ValueError(
        f'linear_mode_connectivity evaluates one network at a time: its evaluator must be a Trainer of a run '
        f'alone (experiment.trainer()), not one of population_size={evaluator.population_size}'
    )
  params, model_state = start
  params = masks_lib.apply(params, keep_mask)
  state = trainer.create_state(
      steps.stack_members([params, params]),
      steps.stack_members([model_state, model_state]),
      steps.stack_members([keep_mask, keep_mask]),
      start_step,
  )
  final = parallel.to_host(trainer.train(state, end_step, list(data_seeds)).state)
  ends = [(steps.member(final.params, index), steps.member(final.model_state, index)) for index in (0, 1)]
  alphas = [float(alpha) for alpha in np.linspace(0.0, 1.0, num_points)]
  errors = []
  for alpha in alphas:
    params, model_state = interpolate(ends[0], ends[1], alpha)
    metrics = evaluator.evaluate_params(steps.stack_members([params]), steps.stack_members([model_state]))
    value = metrics[evaluator.task.metric_name][0]
    # An error: one minus a metric that grows (accuracy), the metric itself where smaller is better (RMSE).
    errors.append(1.0 - value if evaluator.task.higher_is_better else value)
  return ConnectivityResult(
      alphas=alphas, errors=errors, barrier=error_barrier(alphas, errors), instability=error_barrier_height(errors)
  )

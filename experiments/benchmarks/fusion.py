"""Fused steps against one step per dispatch through the Trainer (trainer_speed's fusion_* figures).

`train.Trainer.train` of two tiny models with steps_per_dispatch=1 and 64, timed interleaved, and
the host work each dispatch costs before it. `trainer_speed`'s docstring describes each figure.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import numpy as np

from lth_jax.data import arrays
from lth_jax.training import parallel
from lth_jax.training import steps
from lth_jax.training import trainer as trainer_lib

from experiments.benchmarks.builders import FUSED_STEPS
from experiments.benchmarks.builders import adam_optimizers
from experiments.benchmarks.builders import build_model
from experiments.benchmarks.builders import classification_data
from experiments.benchmarks.builders import random_variables
from experiments.benchmarks.builders import sum_of_two_data
from experiments.benchmarks.harness import Report
from experiments.benchmarks.harness import interleaved
from experiments.benchmarks.harness import median
from experiments.benchmarks.harness import paired_ratio
from experiments.benchmarks.harness import parallel_map


@dataclasses.dataclass(frozen=True)
class Settings:
  """How much to measure."""

  fusion_steps: int  # steps per Trainer.train call
  fusion_reps: int


class FusionCase:
  """One tiny model in two Trainers: steps_per_dispatch 1 and 64."""

  def __init__(self, name: str, model: Any, dataset: arrays.ArrayDataset, batch_size: int) -> None:
    self.name, self.dataset, self.batch_size = name, dataset, batch_size
    self.mesh = parallel.create_mesh(1)
    optimizer, _ = adam_optimizers(1e-3, 10**6)
    params, model_state = random_variables(model, dataset.input_shape, seed=0)
    keep_mask = jax.tree_util.tree_map(lambda leaf: np.ones(leaf.shape, bool), params)
    # One run alone: a population of one member (leading member axis of size 1).
    self.params, self.model_state, self.keep_mask = (
        steps.stack_members([tree]) for tree in (params, model_state, keep_mask)
    )
    self.trainers = {
        dispatch: trainer_lib.Trainer(
            model, dataset, optimizer, self.mesh, batch_size, dispatch, eval_batch_size=dataset.num_test
        )
        for dispatch in (1, FUSED_STEPS)
    }

  def timer(self, dispatch: int, num_steps: int) -> Callable[[], float]:
    """A measurement: seconds per step of `Trainer.train` over `num_steps` steps from a fresh state
    (its one evaluation at the end included)."""
    trainer = self.trainers[dispatch]

    def measure() -> float:
      state = jax.block_until_ready(trainer.create_state(self.params, self.model_state, self.keep_mask, 0))
      started = time.perf_counter()
      trainer.train(state, num_steps, data_seed=[0])
      return (time.perf_counter() - started) / num_steps

    return measure

  def host_prep(self, chunk: int, dispatches: int = 32) -> float:
    """Seconds of host work per dispatch that Trainer.train does before it: the batch indices
    (`data.batch_indices`) of its one member and their transfer (`parallel.put_batch`, leading axes
    (steps, members))."""
    started = time.perf_counter()
    for position in range(dispatches):
      indices = np.zeros((chunk, 1, self.batch_size), np.int32)
      indices[:, 0] = arrays.batch_indices(0, position * chunk, chunk, self.dataset.num_train, self.batch_size)
      jax.block_until_ready(parallel.put_batch(indices, self.mesh, 2))
    return (time.perf_counter() - started) / dispatches


def fusion_figures(report: Report, settings: Settings) -> None:
  """Emits fusion_linear_2_200_1 and fusion_lenet_mnist1d."""
  cases = [
      FusionCase('fusion_linear_2_200_1', build_model('linear', 1), sum_of_two_data(2000, 100), 32),
      FusionCase('fusion_lenet_mnist1d', build_model('lenet', 10), classification_data((40,), 4000, 100), 64),
  ]
  # Compile (and warm up) all four trainers, two at a time.
  parallel_map(lambda measure: measure(), [case.timer(dispatch, 1) for case in cases for dispatch in case.trainers])
  for case in cases:
    times = interleaved(
        {f'dispatch{dispatch}': case.timer(dispatch, settings.fusion_steps) for dispatch in case.trainers},
        settings.fusion_reps,
    )
    single, fused = median(times['dispatch1']), median(times[f'dispatch{FUSED_STEPS}'])
    report.emit(
        case.name,
        raw=times,
        batch=case.batch_size,
        steps=settings.fusion_steps,
        reps=settings.fusion_reps,
        dispatch1_steps_per_s=1 / single,
        **{
            f'dispatch{FUSED_STEPS}_steps_per_s': 1 / fused,
            'fused/single': paired_ratio(times, 'dispatch1', f'dispatch{FUSED_STEPS}'),
        },
        dispatch1_step_us=single * 1e6,
        **{f'dispatch{FUSED_STEPS}_step_us': fused * 1e6},
        host_prep_us_per_dispatch_1=case.host_prep(1) * 1e6,
        **{f'host_prep_us_per_dispatch_{FUSED_STEPS}': case.host_prep(FUSED_STEPS) * 1e6},
    )

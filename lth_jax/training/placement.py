"""A population on the mesh: the compiled programs and feed of K >= 1 members, and where their trees live.

A `Placement` is what the loop of one train call (`lth_jax.training.train_loop`) runs and what the
Trainer (`lth_jax.training.trainer`) builds once: it places state trees (leading axis: members) on the
mesh, brings a dispatch's items, and evaluates. It holds no training state.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from lth_jax import tasks
from lth_jax.training import feeds as feeds_lib
from lth_jax.training import parallel
from lth_jax.training import programs as programs_lib
from lth_jax.training.steps import summarize
from lth_jax.training.steps import TrainState


@dataclasses.dataclass(frozen=True)
class Placement:
  """The compiled programs and feed of a population of `population_size` members on `mesh`.

  A population of several members is split over the mesh's 'members' axis; a population of one is
  replicated over its member groups, like each of its batches.
  """

  mesh: jax.sharding.Mesh
  population_size: int
  batch_size: int  # of one member's step
  steps_per_dispatch: int
  task: tasks.Task
  feed: feeds_lib.Feed
  programs: programs_lib.Programs

  @property
  def split_members(self) -> bool:
    """Whether the members are split over the mesh's member groups (else replicated over them)."""
    return self.population_size > 1

  def put_state(self, tree: Any) -> Any:
    """Places a state tree (leading axis: members) on the mesh, split over its 'members' axis (one
    member: replicated)."""
    if self.split_members:
      return parallel.put_member_sharded(tree, self.mesh)
    return parallel.put_replicated(tree, self.mesh)

  def items(self, seeds: list[int], start_step: int, num_steps: int) -> Any:
    """The feed's items for the next `num_steps` steps on the mesh, leading axes (steps_per_dispatch,
    members); the unused tail of the chunk is zeros. Members with the same seed share one read."""
    by_seed = {seed: self.feed.host_steps(seed, start_step, num_steps) for seed in dict.fromkeys(seeds)}
    items = feeds_lib.pad_steps(feeds_lib.stack([by_seed[seed] for seed in seeds], 1), self.steps_per_dispatch)
    return self.feed.put(items, 2, member_axis=1 if self.split_members else None)

  def zero_train_sums(self, state: TrainState) -> Any:
    """Zero metric sums on the mesh, shaped like one train step's sums for `state`."""
    shapes = self.programs.sums_shape(state)
    return self.put_state(jax.tree_util.tree_map(lambda shape: np.zeros(shape.shape, shape.dtype), shapes))

  def evaluate(self, state: TrainState) -> dict[str, Any]:
    """Test metrics of the state's parameters (see `evaluate_params`)."""
    return self.evaluate_params(state.params, state.model_state)

  def evaluate_params(self, params: Any, model_state: Any) -> dict[str, Any]:
    """Test metrics of any parameters (host or device trees, leading axis members): test_loss and
    test_<metric> for each of the task's metrics, each a list of one value per member."""
    params = self.put_state(params)
    model_state = self.put_state(model_state)
    totals = self.put_state(
        jax.tree_util.tree_map(
            lambda shape: np.zeros(shape.shape, shape.dtype), self.programs.evaluation_sums_shape(params, model_state)
        )
    )
    for group in self.feed.evaluation_groups():
      totals = self.programs.evaluate(params, model_state, totals, group)
    return summarize(self.task, parallel.to_host(totals), 'test')

"""Early-bird turnaround (You et al. 2020, "Drawing Early-Bird Tickets"): when the mask that pruning would
produce has settled, the next level is pruned from the weights of that moment.

A ticket run with `pruning.turnaround='early_bird'` keeps its weights at every evaluation. Once it has
finished, the mask that pruning would cut from each evaluation's weights (the level's criterion and
rule, `lth_jax.pruning.next_mask`) is compared with the previous evaluation's: `mask_distance`, the
normalized Hamming distance (differing prunable positions over all prunable positions), goes into the
record's curve. The early-bird step is the first evaluation at which the last `early_bird_window`
distances all fall below `early_bird_threshold`; the record states it (`early_bird_step`, None when the
mask never settled and the next level prunes from the final weights), with the distance between its
mask and the mask of the end of training (`early_bird_distance_to_end`) and the share of the run's steps
after it (`early_bird_steps_after`: what a search that stopped there would not train).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import numpy as np

from lth_jax import config as config_lib
from lth_jax import pruning


def evaluation_steps(start_step: int, end_step: int, eval_every: int) -> tuple[int, ...]:
  """The evaluation steps of a run from `start_step` to `end_step` before its end (every `eval_every`)."""
  if not eval_every:
    return ()
  return tuple(range(start_step - start_step % eval_every + eval_every, end_step, eval_every))


def mask_distance(mask: Any, other: Any, prunable: Any) -> float:
  """The normalized Hamming distance of two keep masks: differing prunable positions over all prunable ones."""
  differing = total = 0
  for keep, other_keep, flag in zip(
      jax.tree_util.tree_leaves(mask), jax.tree_util.tree_leaves(other), jax.tree_util.tree_leaves(prunable)
  ):
    if flag:
      differing += int(np.sum(np.asarray(keep, bool) != np.asarray(other_keep, bool)))
      total += int(np.size(keep))
  return differing / total if total else 0.0


def settled_index(distances: Sequence[float | None], threshold: float, window: int) -> int | None:
  """The first index whose last `window` distances (this one included) are all below `threshold` (None
  marks the first evaluation, which has no earlier mask), or None."""
  for index in range(window - 1, len(distances)):
    recent = distances[index - window + 1 : index + 1]
    if all(distance is not None and distance < threshold for distance in recent):
      return index
  return None


@dataclasses.dataclass(frozen=True)
class EarlyBird:
  """What early-bird turnaround found in one finished ticket run."""

  steps: tuple[int, ...]  # the evaluation steps, the end included
  distances: tuple[float | None, ...]  # mask_distance at each (None at the first)
  step: int | None  # the early-bird step (None: the mask never settled)
  distance_to_end: float | None  # between the early-bird mask and the mask of the end of training
  steps_after: float | None  # the share of the run's steps after the early-bird step

  def annotate(self, record: dict[str, Any]) -> dict[str, Any]:
    """`record` with `mask_distance` in its curve entries and the early-bird fields."""
    by_step = dict(zip(self.steps, self.distances))
    curve = [{**entry, 'mask_distance': by_step.get(entry['step'])} for entry in record['curve']]
    return {
        **record,
        'curve': curve,
        'early_bird_step': self.step,
        'early_bird_distance_to_end': self.distance_to_end,
        'early_bird_steps_after': self.steps_after,
    }


def find(
    plan: config_lib.PruningPlan,
    level: int,
    snapshots: dict[int, tuple[Any, Any]],
    final_params: Any,
    keep_mask: Any,
    prunable: Any,
    start_step: int,
    end_step: int,
    eval_every: int,
    loss_gradients: Callable[[Any], Any] | None = None,
) -> EarlyBird:
  """Early-bird turnaround of a finished level-`level` ticket run: the mask pruning would cut for level
  `level + 1` at each evaluation (`snapshots` of the evaluation steps, `final_params` at `end_step`),
  their distances, and the step whose weights the next level prunes from."""
  steps = tuple(step for step in evaluation_steps(start_step, end_step, eval_every) if step in snapshots)
  weights = [snapshots[step][0] for step in steps] + [final_params]
  steps = (*steps, end_step)
  criterion = pruning.criterion(plan.criterion)

  def would_prune(params: Any) -> Any:
    inputs = pruning.CriterionInputs(params, keep_mask, prunable, loss_gradients)
    return pruning.next_mask(plan, level + 1, criterion(inputs), keep_mask, prunable)

  masks = [would_prune(params) for params in weights]
  distances = (None, *(mask_distance(mask, previous, prunable) for previous, mask in zip(masks, masks[1:])))
  index = settled_index(distances, plan.early_bird_threshold, plan.early_bird_window)
  if index is None:
    return EarlyBird(steps, distances, None, None, None)
  return EarlyBird(
      steps,
      distances,
      steps[index],
      mask_distance(masks[index], masks[-1], prunable),
      (end_step - steps[index]) / max(1, end_step - start_step),
  )

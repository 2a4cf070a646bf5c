"""Pruning at initialization: the scores of GraSP, SynFlow and magnitude at init, and the choice of a
mask of the winning ticket's size from scores (one global pool, or the ticket's count in every layer),
in one shot or, for SynFlow, over rounds of shrinking density.

Pure functions of host (numpy) trees, like `lth_jax.pruning`; the gradients they score from come from
the Trainer's programs (`Trainer.mean_gradients`, `hessian_gradient`, `synflow_gradients`). Scores mean
"higher: keep", as every criterion of `lth_jax.pruning`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from lth_jax import masks as masks_lib
from lth_jax import pruning

# 'global': as many weights as the ticket keeps in all, from one pool of every prunable layer (as SNIP,
# GraSP and SynFlow prune); 'layerwise': in every layer, as many as the ticket keeps there.
SCOPES = ('global', 'layerwise')


def grasp_scores(params: Any, hessian_gradient: Any) -> Any:
  """GraSP (Wang et al. 2020) as a keep score: w * (H g). GraSP removes the weights of largest -w * (H g),
  those whose removal reduces the gradient flow least, so it keeps the largest w * (H g) (signed)."""
  return jax.tree_util.tree_map(
      lambda weight, product: np.asarray(weight, np.float32) * np.asarray(product, np.float32),
      params,
      hessian_gradient,
  )


def synflow_scores(params: Any, synflow_gradients: Any) -> Any:
  """SynFlow's synaptic saliency (Tanaka et al. 2020): |w * dR/dw|, R the network's output summed over an
  input of ones with every weight replaced by its absolute value (`Trainer.synflow_gradients`)."""
  return jax.tree_util.tree_map(
      lambda weight, gradient: np.abs(np.asarray(weight, np.float32) * np.asarray(gradient, np.float32)),
      params,
      synflow_gradients,
  )


def select(scores: Any, keep_mask: Any, prunable: Any, ticket_mask: Any, scope: str, progress: float = 1.0) -> Any:
  """The keep mask of the highest `scores` among the survivors of `keep_mask` (a pruned weight is never
  revived), of the size the ticket has at `progress` = 1: `scope` 'global' keeps round(N (c / N)^progress)
  of the N prunable weights, c the ticket's count in all; 'layerwise' does so in every layer with its own
  N and c. Fractional `progress` gives SynFlow's rounds their exponentially shrinking densities. Ties keep
  the higher index (as `pruning.keep_top`)."""
  if scope not in SCOPES:
    raise ValueError(f'pruning at initialization: scope must be one of {SCOPES}, got {scope!r}')
  ranked = jax.tree_util.tree_map(
      lambda score, keep: np.where(np.asarray(keep, bool), np.asarray(score, np.float32), -np.inf), scores, keep_mask
  )
  flat_prunable = jax.tree_util.tree_leaves(prunable)
  flat_ticket = jax.tree_util.tree_leaves(ticket_mask)
  if scope == 'global':
    sizes = [np.size(keep) for keep, flag in zip(flat_ticket, flat_prunable) if flag]
    counts = [int(np.sum(keep)) for keep, flag in zip(flat_ticket, flat_prunable) if flag]
    return pruning.keep_top(ranked, prunable, _count_at(sum(sizes), sum(counts), progress))
  flat_ranked, treedef = jax.tree_util.tree_flatten(ranked)
  kept = [
      pruning.keep_top([score], [True], _count_at(np.size(keep), int(np.sum(keep)), progress))[0]
      if flag
      else np.ones(np.shape(score), bool)
      for score, keep, flag in zip(flat_ranked, flat_ticket, flat_prunable)
  ]
  return jax.tree_util.tree_unflatten(treedef, kept)


def _count_at(size: int, ticket_count: int, progress: float) -> int:
  """round(size * (ticket_count / size)^progress): the count after a fraction `progress` of the way from
  `size` weights down to `ticket_count`, exponentially."""
  if size == 0:
    return 0
  return int(np.round(size * (ticket_count / size) ** progress))


def iterative_synflow(
    params: Any,
    prunable: Any,
    ticket_mask: Any,
    scope: str,
    rounds: int,
    synflow_gradients: Callable[[Any], Any],
) -> Any:
  """SynFlow's mask (Tanaka et al., Algorithm 1): `rounds` rounds of scoring the masked weights
  (`synflow_gradients`: masked params -> dR/dw) and keeping the best of them at a density that shrinks
  exponentially to the ticket's (`select`); 1 round is the one-shot form. A ValueError names the round at
  which the scores overflow (a deep network's product of weights past float32)."""
  if rounds < 1:
    raise ValueError(f'synflow needs at least one round, got {rounds}')
  keep_mask = masks_lib.ones_like(ticket_mask)
  for round_index in range(1, rounds + 1):
    masked = masks_lib.apply(params, keep_mask)
    scores = synflow_scores(masked, synflow_gradients(masked))
    if not all(np.all(np.isfinite(score)) for score in jax.tree_util.tree_leaves(scores)):
      raise ValueError(
          f'synflow: the scores of round {round_index} of {rounds} are not finite: the network output on an input '
          'of ones overflows float32 at these weights (try fewer layers, or smaller initial weights)'
      )
    keep_mask = select(scores, keep_mask, prunable, ticket_mask, scope, round_index / rounds)
  return keep_mask

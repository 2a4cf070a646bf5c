"""Branches: what is trained at each pruning level, from the level's winning-ticket mask.

A branch is one small function registered by name that returns the starting (params, model_state,
keep_mask) of its training run; adding a control experiment is adding one function here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from lth_jax import masks as masks_lib
from lth_jax import pruning


@dataclasses.dataclass(frozen=True)
class BranchInputs:
  """What a branch may start from (host trees)."""

  ticket_mask: Any  # the winning ticket's keep mask at this level
  rewind_params: Any  # W_k: the weights at the rewind step (W_0 if 0)
  rewind_model_state: Any
  prunable: Any  # bool tree from masks.prunable_tree
  init_variables: Callable[[int], tuple[Any, Any]]  # seed -> fresh (params, model_state)
  seed: int  # seed for this branch's randomness
  # (params, model_state) -> mean loss gradient over a few training batches (for SNIP)
  loss_gradients: Callable[[Any, Any], Any] | None = None


BranchStart = tuple[Any, Any, Any]  # (params, model_state, keep_mask)
Branch = Callable[[BranchInputs], BranchStart]


def winning_ticket(inputs: BranchInputs) -> BranchStart:
  """The lottery ticket: surviving weights reset to their values at the rewind step."""
  return (masks_lib.apply(inputs.rewind_params, inputs.ticket_mask), inputs.rewind_model_state, inputs.ticket_mask)


def random_reinit(inputs: BranchInputs) -> BranchStart:
  """Same mask, fresh random initialization (Frankle & Carbin's random reinitialization)."""
  params, model_state = inputs.init_variables(inputs.seed)
  return masks_lib.apply(params, inputs.ticket_mask), model_state, inputs.ticket_mask


def permuted_mask(inputs: BranchInputs) -> BranchStart:
  """Random ticket: the mask permuted within each layer, weights from the rewind step."""
  keep_mask = pruning.permute_within_layers(inputs.ticket_mask, inputs.prunable, inputs.seed)
  return masks_lib.apply(inputs.rewind_params, keep_mask), inputs.rewind_model_state, keep_mask


def permuted_reinit(inputs: BranchInputs) -> BranchStart:
  """Random ticket with a fresh initialization: permuted mask and new weights."""
  keep_mask = pruning.permute_within_layers(inputs.ticket_mask, inputs.prunable, inputs.seed)
  params, model_state = inputs.init_variables(inputs.seed)
  return masks_lib.apply(params, keep_mask), model_state, keep_mask


def random_pruning(inputs: BranchInputs) -> BranchStart:
  """Random pruning to the ticket's per-layer density: positions drawn uniformly, weights from the
  rewind step. (Same distribution as `permuted`, drawn without reference to the ticket's positions.)"""
  keep_mask = pruning.random_mask_like(inputs.ticket_mask, inputs.prunable, inputs.seed)
  return masks_lib.apply(inputs.rewind_params, keep_mask), inputs.rewind_model_state, keep_mask


def snip(inputs: BranchInputs) -> BranchStart:
  """SNIP (Lee et al.): keep the weights with the largest connection sensitivity |g * w|, measured at
  the rewind weights (the initialization when the rewind step is 0), in one global pool, as many
  as the ticket keeps; weights from the rewind step."""
  if inputs.loss_gradients is None:
    raise ValueError('the snip branch needs loss gradients (BranchInputs.loss_gradients)')
  gradients = inputs.loss_gradients(inputs.rewind_params, inputs.rewind_model_state)
  keep_count = sum(masks_lib.count_per_layer(inputs.ticket_mask, inputs.prunable).values())
  keep_mask = pruning.keep_top(pruning.snip_scores(inputs.rewind_params, gradients), inputs.prunable, keep_count)
  return masks_lib.apply(inputs.rewind_params, keep_mask), inputs.rewind_model_state, keep_mask


def sign_preserving_reinit(inputs: BranchInputs) -> BranchStart:
  """Zhou et al.: the ticket's mask and the signs of its rewind weights, with fresh magnitudes."""
  fresh_params, model_state = inputs.init_variables(inputs.seed)

  def signed(rewind, fresh, is_prunable):
    rewind, fresh = np.asarray(rewind), np.asarray(fresh)
    return np.where(rewind < 0, -1.0, 1.0).astype(fresh.dtype) * np.abs(fresh) if is_prunable else fresh

  params = jax.tree_util.tree_map(signed, inputs.rewind_params, fresh_params, inputs.prunable)
  return masks_lib.apply(params, inputs.ticket_mask), model_state, inputs.ticket_mask


REGISTRY: dict[str, Branch] = {
    'ticket': winning_ticket,
    'reinit': random_reinit,
    'permuted': permuted_mask,
    'permuted_reinit': permuted_reinit,
    'random_pruning': random_pruning,
    'snip': snip,
    'sign_reinit': sign_preserving_reinit,
}
BRANCH_NAMES = tuple(REGISTRY)


def register(name: str, branch: Branch) -> None:
  """Adds a branch under `name` (then usable in `config.branches`)."""
  REGISTRY[name] = branch


def start(name: str, inputs: BranchInputs) -> BranchStart:
  """The starting (params, model_state, keep_mask) of branch `name`."""
  if name not in REGISTRY:
    raise ValueError(f'branches: unknown branch {name!r}; known branches: {", ".join(REGISTRY)}')
  return REGISTRY[name](inputs)

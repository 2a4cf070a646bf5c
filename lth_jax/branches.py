"""Branches: what is trained at each pruning level, from the level's winning-ticket mask.

A branch is one small function registered by name that returns the starting (params, model_state,
keep_mask) of its training run; adding a control experiment is adding one function here.

The pruning-at-initialization baselines (SNIP, GraSP, SynFlow, magnitude at init) choose a mask of the
ticket's size from the rewind weights (`lth_jax.init_pruning`); each is registered with the two ablations
of Frankle et al. 2021 ("Pruning Neural Networks at Initialization: Why are We Missing the Mark?"):
`<name>_shuffled` (its mask shuffled within each layer) and `<name>_reinit` (its mask, fresh weights).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import numpy as np

from lth_jax import init_pruning
from lth_jax import masks as masks_lib
from lth_jax import pruning
from lth_jax import structured


@dataclasses.dataclass(frozen=True)
class BranchInputs:
  """What a branch may start from (host trees)."""

  ticket_mask: Any  # the winning ticket's keep mask at this level
  rewind_params: Any  # W_k: the weights at the rewind step (W_0 if 0)
  rewind_model_state: Any
  prunable: Any  # bool tree from masks.prunable_tree
  init_variables: Callable[[int], tuple[Any, Any]]  # seed -> fresh (params, model_state)
  seed: int  # seed for this branch's randomness
  structure: str  # 'unstructured' | 'N:M' (`pruning.structure`): the random controls keep an N:M pattern
  layer_fractions: Mapping[str, float]  # the layers with a fraction of their own (outside an N:M pattern)
  at_init_scope: str  # how pruning at init sizes its mask: 'global' | 'layerwise' (`init_pruning.SCOPES`)
  synflow_rounds: int  # SynFlow's rounds of pruning (1: one shot)
  # (params, model_state) -> mean loss gradient over a few training batches (for SNIP)
  loss_gradients: Callable[[Any, Any], Any] | None = None
  # (params, model_state) -> GraSP's Hessian-gradient product over the same batches
  hessian_gradient: Callable[[Any, Any], Any] | None = None
  # (params, model_state) -> SynFlow's gradient dR/dw at |w| (data-free)
  synflow_gradients: Callable[[Any, Any], Any] | None = None


BranchStart = tuple[Any, Any, Any]  # (params, model_state, keep_mask)
Branch = Callable[[BranchInputs], BranchStart]


def winning_ticket(inputs: BranchInputs) -> BranchStart:
  """The lottery ticket: surviving weights reset to their values at the rewind step."""
  return (masks_lib.apply(inputs.rewind_params, inputs.ticket_mask), inputs.rewind_model_state, inputs.ticket_mask)


def random_reinit(inputs: BranchInputs) -> BranchStart:
  """Same mask, fresh random initialization (Frankle & Carbin's random reinitialization)."""
  params, model_state = inputs.init_variables(inputs.seed)
  return masks_lib.apply(params, inputs.ticket_mask), model_state, inputs.ticket_mask


def _random_mask(inputs: BranchInputs, draw: Callable[[Any, Any, int], Any]) -> Any:
  """`draw(ticket_mask, prunable, seed)`, a random mask of the ticket's per-layer counts; under an N:M
  structure the pattern's layers shuffled within each group instead (`structured.shuffle_within_groups`),
  so that the random ticket holds the pattern too."""
  keep_mask = draw(inputs.ticket_mask, inputs.prunable, inputs.seed)
  pattern = structured.parse(inputs.structure)
  if pattern is None:
    return keep_mask
  leaves = structured.structured_leaves(inputs.prunable, inputs.layer_fractions)
  grouped = structured.shuffle_within_groups(inputs.ticket_mask, leaves, pattern[1], inputs.seed)
  return jax.tree_util.tree_map(lambda drawn, shuffled, flag: shuffled if flag else drawn, keep_mask, grouped, leaves)


def permuted_mask(inputs: BranchInputs) -> BranchStart:
  """Random ticket: the mask permuted within each layer, weights from the rewind step."""
  keep_mask = _random_mask(inputs, pruning.permute_within_layers)
  return masks_lib.apply(inputs.rewind_params, keep_mask), inputs.rewind_model_state, keep_mask


def permuted_reinit(inputs: BranchInputs) -> BranchStart:
  """Random ticket with a fresh initialization: permuted mask and new weights."""
  keep_mask = _random_mask(inputs, pruning.permute_within_layers)
  params, model_state = inputs.init_variables(inputs.seed)
  return masks_lib.apply(params, keep_mask), model_state, keep_mask


def random_pruning(inputs: BranchInputs) -> BranchStart:
  """Random pruning to the ticket's per-layer density: positions drawn uniformly, weights from the
  rewind step. (Same distribution as `permuted`, drawn without reference to the ticket's positions.)"""
  keep_mask = _random_mask(inputs, pruning.random_mask_like)
  return masks_lib.apply(inputs.rewind_params, keep_mask), inputs.rewind_model_state, keep_mask


def sign_preserving_reinit(inputs: BranchInputs) -> BranchStart:
  """Zhou et al.: the ticket's mask and the signs of its rewind weights, with fresh magnitudes."""
  fresh_params, model_state = inputs.init_variables(inputs.seed)

  def signed(rewind, fresh, is_prunable):
    rewind, fresh = np.asarray(rewind), np.asarray(fresh)
    return np.where(rewind < 0, -1.0, 1.0).astype(fresh.dtype) * np.abs(fresh) if is_prunable else fresh

  params = jax.tree_util.tree_map(signed, inputs.rewind_params, fresh_params, inputs.prunable)
  return masks_lib.apply(params, inputs.ticket_mask), model_state, inputs.ticket_mask


def _needed(function: Callable[..., Any] | None, what: str, method: str) -> Callable[..., Any]:
  """`function`, or a ValueError saying that `method` needs it."""
  if function is None:
    raise ValueError(f'the {method} branch needs {what} (BranchInputs)')
  return function


def snip_mask(inputs: BranchInputs) -> Any:
  """SNIP (Lee et al. 2019): the largest connection sensitivity |g * w| at the rewind weights."""
  gradients = _needed(inputs.loss_gradients, 'loss gradients (loss_gradients)', 'snip')
  scores = pruning.snip_scores(inputs.rewind_params, gradients(inputs.rewind_params, inputs.rewind_model_state))
  return _ticket_sized(scores, inputs)


def grasp_mask(inputs: BranchInputs) -> Any:
  """GraSP (Wang et al. 2020): the weights whose removal reduces the gradient flow least, scored by
  w * (H g) at the rewind weights (`init_pruning.grasp_scores`)."""
  product = _needed(inputs.hessian_gradient, 'Hessian-gradient products (hessian_gradient)', 'grasp')
  scores = init_pruning.grasp_scores(inputs.rewind_params, product(inputs.rewind_params, inputs.rewind_model_state))
  return _ticket_sized(scores, inputs)


def synflow_mask(inputs: BranchInputs) -> Any:
  """SynFlow (Tanaka et al. 2020): data-free, `synflow_rounds` rounds of iterative synaptic-flow pruning
  from the rewind weights (the model in evaluation mode)."""
  gradients = _needed(inputs.synflow_gradients, 'SynFlow gradients (synflow_gradients)', 'synflow')
  return init_pruning.iterative_synflow(
      inputs.rewind_params,
      inputs.prunable,
      inputs.ticket_mask,
      inputs.at_init_scope,
      inputs.synflow_rounds,
      lambda params: gradients(params, inputs.rewind_model_state),
  )


def magnitude_at_init_mask(inputs: BranchInputs) -> Any:
  """Magnitude pruning at initialization: the largest |w| of the rewind weights."""
  return _ticket_sized(pruning.magnitude_scores(inputs.rewind_params), inputs)


def _ticket_sized(scores: Any, inputs: BranchInputs) -> Any:
  """The mask of the highest `scores`, as large as the ticket (`init_pruning.select` at `at_init_scope`)."""
  full = masks_lib.ones_like(inputs.ticket_mask)
  return init_pruning.select(scores, full, inputs.prunable, inputs.ticket_mask, inputs.at_init_scope)


AtInitMask = Callable[[BranchInputs], Any]  # inputs -> a keep mask of the ticket's size


def at_init_branches(mask_function: AtInitMask) -> tuple[Branch, Branch, Branch]:
  """The three branches of a pruning-at-init method: its mask with the rewind weights, that mask shuffled
  within each layer (rewind weights), and its mask with fresh weights."""

  def method(inputs: BranchInputs) -> BranchStart:
    keep_mask = mask_function(inputs)
    return masks_lib.apply(inputs.rewind_params, keep_mask), inputs.rewind_model_state, keep_mask

  def shuffled(inputs: BranchInputs) -> BranchStart:
    keep_mask = pruning.permute_within_layers(mask_function(inputs), inputs.prunable, inputs.seed)
    return masks_lib.apply(inputs.rewind_params, keep_mask), inputs.rewind_model_state, keep_mask

  def reinitialized(inputs: BranchInputs) -> BranchStart:
    keep_mask = mask_function(inputs)
    params, model_state = inputs.init_variables(inputs.seed)
    return masks_lib.apply(params, keep_mask), model_state, keep_mask

  return method, shuffled, reinitialized


AT_INIT_METHODS: dict[str, AtInitMask] = {
    'snip': snip_mask,
    'grasp': grasp_mask,
    'synflow': synflow_mask,
    'magnitude_at_init': magnitude_at_init_mask,
}

REGISTRY: dict[str, Branch] = {
    'ticket': winning_ticket,
    'reinit': random_reinit,
    'permuted': permuted_mask,
    'permuted_reinit': permuted_reinit,
    'random_pruning': random_pruning,
    'sign_reinit': sign_preserving_reinit,
}


def register_at_init(name: str, mask_function: AtInitMask) -> None:
  """Adds a pruning-at-init method: branches `name`, `name_shuffled` and `name_reinit` (see
  `at_init_branches`)."""
  AT_INIT_METHODS[name] = mask_function
  method, shuffled, reinitialized = at_init_branches(mask_function)
  REGISTRY.update({name: method, f'{name}_shuffled': shuffled, f'{name}_reinit': reinitialized})


for _name, _mask_function in tuple(AT_INIT_METHODS.items()):
  register_at_init(_name, _mask_function)

# The built-in controls an N:M structure allows: the ticket's mask, or a random one in its pattern.
N_M_CONTROLS = ('reinit', 'sign_reinit', 'permuted', 'permuted_reinit', 'random_pruning')
# Those whose masks are chosen by their own scores, which know no pattern (pruning at init).
UNSTRUCTURED_BRANCHES = tuple(name for name in REGISTRY if name not in ('ticket', *N_M_CONTROLS))


def register(name: str, branch: Branch) -> None:
  """Adds a branch under `name` (then usable in `config.branches`)."""
  REGISTRY[name] = branch


def start(name: str, inputs: BranchInputs) -> BranchStart:
  """The starting (params, model_state, keep_mask) of branch `name`."""
  if name not in REGISTRY:
    raise ValueError(f'branches: unknown branch {name!r}; known branches: {", ".join(REGISTRY)}')
  return REGISTRY[name](inputs)

"""How lth_jax calls a flax module, written as flax users write modules: a `train: bool` argument (or
`deterministic` / `training`, or none at all), batch statistics as a mutable collection in training,
and a 'dropout' rng stream in training (unused streams cost nothing)."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import flax.linen as nn
import jax

MODE_ARGUMENTS = ('train', 'training', 'deterministic')


@functools.lru_cache(maxsize=None)
def _mode_argument(module_type: type) -> str | None:
  """The name of the argument of `module_type.__call__` that switches training mode, if any."""
  try:
    parameters = inspect.signature(module_type.__call__).parameters
  except (TypeError, ValueError):
    return None
  return next((name for name in MODE_ARGUMENTS if name in parameters), None)


def mode_arguments(model: nn.Module, train: bool) -> dict[str, bool]:
  """The keyword argument that puts `model` in training (`train=True`) or evaluation mode: {'train': train},
  {'training': train}, {'deterministic': not train}, or {} for a module without one."""
  name = _mode_argument(type(model))  # type: ignore[arg-type]  # module classes hash by identity
  if name is None:
    return {}
  return {name: (not train) if name == 'deterministic' else train}


def init(model: nn.Module, key: jax.Array, example: Any) -> Any:
  """The module's variables for `key`, traced on `example` (a batch) in evaluation mode."""
  keywords: dict[str, Any] = dict(mode_arguments(model, False))
  return model.init(key, example, **keywords)


def variable_shapes(model: nn.Module, example: Any) -> Any:
  """The shapes of the module's variables (`jax.ShapeDtypeStruct`s) for an example batch, computing nothing."""
  return jax.eval_shape(lambda inputs: init(model, jax.random.PRNGKey(0), inputs), example)


def apply(model: nn.Module, variables: Any, inputs: Any, train: bool, mutable: Any = False, rngs: Any = None) -> Any:
  """`model.apply` in training or evaluation mode (see `mode_arguments`), with `mutable` collections and
  `rngs` (e.g. {'dropout': key}) as flax takes them."""
  keywords: dict[str, Any] = dict(mode_arguments(model, train))
  if mutable:
    keywords['mutable'] = mutable
  if rngs:
    keywords['rngs'] = rngs
  return model.apply(variables, inputs, **keywords)

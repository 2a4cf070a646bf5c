"""The metrics of stability to pruning, on flat vectors of kept weights: distance, angle and
correlation of two weight vectors, the metrics of one ticket against the full network (see
`lth_jax.analysis.stability`), and the renormalization of its distances (by the final or the maximum distance
between two full networks)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np

DISTANCE_METRICS = ('l2_distance', 'full_distance_from_init', 'ticket_distance_from_init')
NORMALIZATIONS = ('final', 'max')
MAX_NORMALIZED_SUFFIX = '_max_normalized'


def masked_vector(params: Any, keep_mask: Any, prunable: Any) -> np.ndarray:
  """The kept prunable weights of `params` as one flat float64 vector (tree order)."""
  parts = [
      np.asarray(weight, np.float64)[np.asarray(keep, bool)]
      for weight, keep, flag in zip(
          jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(keep_mask), jax.tree_util.tree_leaves(prunable)
      )
      if flag
  ]
  return np.concatenate(parts) if parts else np.zeros(0)


def l2_distance(first: np.ndarray, second: np.ndarray) -> float:
  """||first - second||_2."""
  return float(np.linalg.norm(np.asarray(first, np.float64) - np.asarray(second, np.float64)))


def angle_degrees(first: np.ndarray, second: np.ndarray) -> float:
  """The angle between two vectors in degrees (nan when either is zero)."""
  norms = np.linalg.norm(first) * np.linalg.norm(second)
  if norms == 0:
    return float('nan')
  cosine = np.clip(np.dot(first, second) / norms, -1.0, 1.0)
  return float(np.degrees(np.arccos(cosine)))


def correlation(first: np.ndarray, second: np.ndarray) -> float:
  """Pearson correlation of two vectors (nan when either is constant)."""
  first = np.asarray(first, np.float64) - np.mean(first)
  second = np.asarray(second, np.float64) - np.mean(second)
  norms = np.linalg.norm(first) * np.linalg.norm(second)
  return float(np.dot(first, second) / norms) if norms else float('nan')


def stability_metrics(
    initial: Any, full: Any, ticket: Any, full_final: Any, keep_mask: Any, prunable: Any, normalizer: float
) -> dict[str, float]:
  """The metrics of `lth_jax.analysis.stability`'s docstring for one ticket (mask `keep_mask`) against the full network.

  Args:
    initial: W_0, the full network's initialization.
    full: the full network's weights (unpruned; the mask is applied here).
    ticket: the ticket's weights.
    full_final: W_*, the full network's weights at the end of training.
    normalizer: the L2 distance that normalizes distances (1.0 for raw distances).
  """
  vector = lambda params: masked_vector(params, keep_mask, prunable)  # noqa: E731
  w0, wf, wt, w_star = vector(initial), vector(full), vector(ticket), vector(full_final)
  return {
      'l2_distance': l2_distance(wf, wt) / normalizer,
      'angle': angle_degrees(wf - w0, wt - w0),
      'angle_ticket_to_final': angle_degrees(wt - w0, w_star - w0),
      'angle_full_to_final': angle_degrees(wf - w0, w_star - w0),
      'correlation': correlation(wf, wt),
      'full_distance_from_init': l2_distance(wf, w0) / normalizer,
      'ticket_distance_from_init': l2_distance(wt, w0) / normalizer,
  }


def metric_key(metric: str, normalization: str = 'final') -> str:
  """The key of `metric` under `normalization` ('final' or 'max'; angles and correlation have one key)."""
  if normalization not in NORMALIZATIONS:
    raise ValueError(f'normalization={normalization!r}: must be one of {", ".join(NORMALIZATIONS)}')
  return metric + MAX_NORMALIZED_SUFFIX if normalization == 'max' and metric in DISTANCE_METRICS else metric


def renormalized(metrics: Mapping[str, float], normalizer: float, new_normalizer: float) -> dict[str, float]:
  """`metrics` (distances divided by `normalizer`) with the distances divided by `new_normalizer` instead;
  angles and correlation are unchanged."""
  scale = normalizer / new_normalizer
  return {key: value * scale if key in DISTANCE_METRICS else value for key, value in metrics.items()}


def with_max_normalized(metrics: Mapping[str, float], normalizer: float, max_normalizer: float) -> dict[str, float]:
  """`metrics` (normalized by `normalizer`) plus each distance normalized by `max_normalizer`, under
  the key `metric_key(name, 'max')`."""
  rescaled = renormalized({key: metrics[key] for key in DISTANCE_METRICS if key in metrics}, normalizer, max_normalizer)
  return {**metrics, **{metric_key(key, 'max'): value for key, value in rescaled.items()}}


def max_distance(distances: Sequence[Mapping[str, float]]) -> float:
  """The largest 'distance' of `distances` ({'step', 'distance'} entries); 1.0 when all are zero."""
  if not distances:
    raise ValueError('max_distance needs at least one measured distance')
  return max(float(entry['distance']) for entry in distances) or 1.0

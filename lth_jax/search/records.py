"""The records of a search's finished runs: built in one place from a member's result, looked up by
(trial, level, branch), their level scalars, and the surviving weights a run can print."""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np

from lth_jax import masks as masks_lib
from lth_jax import results as results_lib
from lth_jax.search import scalars as scalars_lib
from lth_jax.search.members import Member
from lth_jax.search.members import MemberResult
from lth_jax.search.searches import Search


def build(search: Search, member: Member, result: MemberResult, prunable: Any, start_step: int) -> dict[str, Any]:
  """The record of one finished run of `search`."""
  final = result.curve[-1]
  task = search.experiment.task
  metric = task.metric_name
  total_steps = search.experiment.total_steps
  values = [entry[metric] for entry in result.curve if np.isfinite(entry[metric])]
  best = (max(values) if task.higher_is_better else min(values)) if values else None
  other_metrics = {f'test_{extra.name}': final[f'test_{extra.name}'] for extra in task.metrics[1:]}
  record = {
      'trial': member.trial,
      'level': member.level,
      'branch': member.branch,
      'fraction_remaining': masks_lib.density(member.keep_mask, prunable),
      'kept_weights': int(sum(masks_lib.count_per_layer(member.keep_mask, prunable).values())),
      'nonzero_weights': masks_lib.nonzero_count(result.final_params, prunable),
      'layer_density': masks_lib.density_per_layer(member.keep_mask, prunable),
      metric: final[metric],
      'test_loss': final['test_loss'],
      f'best_{metric}': best,
      **other_metrics,
      'metric': metric,
      'higher_is_better': task.higher_is_better,
      'steps': total_steps - start_step,
      'start_step': start_step,
      'end_step': total_steps,
      'curve': [
          {key: entry[key] for key in ('step', metric, 'test_loss', 'train_loss') if key in entry}
          for entry in result.curve
      ],
      'wall_seconds': result.wall_seconds,
      'seed': search.spec.seed,
      **search.record_fields,
  }
  if result.diverged_step is not None:
    record.update(diverged=True, diverged_step=result.diverged_step)
  return results_lib.finite_or_none(record)


def find(records: Sequence[dict[str, Any]], trial: int, level: int, branch: str) -> dict[str, Any] | None:
  """The record of (trial, level, branch), or None while it is not recorded."""
  return next(
      (
          record
          for record in records
          if record['trial'] == trial and record['level'] == level and record['branch'] == branch
      ),
      None,
  )


def diverged_ticket(records: Sequence[dict[str, Any]], trial: int, level: int) -> dict[str, Any] | None:
  """The record of (trial, level)'s ticket if it diverged."""
  record = find(records, trial, level, 'ticket')
  return record if record is not None and results_lib.is_diverged(record) else None


def write_level_scalars(scalars: scalars_lib.Scalars, records: Sequence[dict[str, Any]]) -> None:
  """Each record's metric and percent remaining, by level, in its trial's 'levels' run."""
  for record in records:
    metric = results_lib.metric_of(record)
    scalars.write(
        os.path.join(f'trial_{record["trial"]}', 'levels'),
        record['level'],
        {
            f'{record["branch"]}/{metric}': record[metric],
            f'{record["branch"]}/percent_remaining': 100 * record['fraction_remaining'],
        },
    )


def format_surviving_weights(params: Any, keep_mask: Any, prunable: Any, limit: int = 32) -> str:
  """The surviving prunable weights, one per line as 'layer [input, output]: value' (kernel indices)."""
  lines = []
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  for (path, weight), keep, is_prunable in zip(
      flat, jax.tree_util.tree_leaves(keep_mask), jax.tree_util.tree_leaves(prunable)
  ):
    if not is_prunable:
      continue
    lines.append(f'  {masks_lib.leaf_name(masks_lib.path_to_names(path))}')
    positions = np.argwhere(np.asarray(keep))
    for position in positions[:limit]:
      lines.append(f'    [{", ".join(map(str, position))}]: {float(np.asarray(weight)[tuple(position)]):.6g}')
    if len(positions) > limit:
      lines.append(f'    ... {len(positions) - limit} more')
  return '\n'.join(lines)

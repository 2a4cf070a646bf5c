"""Comparing winning tickets: which connections survive, across trials and across levels.

`overlap(first, second)` is the fraction of the first mask's surviving weights that the second mask
keeps too, per prunable layer and overall. Two masks drawn at random with the same per-layer counts
share, in expectation, the second mask's density of each layer (`chance_overlap`): a ticket's overlap
far above it means the trials found the same connections. The workdir functions read every level's
mask from `checkpoints/trial_T/level_L`, and write the tables and the per-layer density plot that
`python -m lth_jax.report` shows.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
from typing import Any, Sequence

import jax
import numpy as np
from matplotlib import figure as figure_lib
from matplotlib import ticker

from lth_jax import config as config_lib
from lth_jax import masks as masks_lib
from lth_jax import results as results_lib
from lth_jax import tickets
from lth_jax.search import workdir as workdir_lib
from lth_jax.training import checkpoints

OVERLAP_FILE = 'mask_overlap.csv'
LAYER_DENSITY_FILE = 'layer_density.csv'
LAYER_DENSITY_PLOT = 'layer_density.png'
PLOT_DPI = 150  # as every figure of the report (`lth_jax.reporting.style.DPI`)
OVERALL = 'overall'


def _kept_per_layer(keep_mask: Any, prunable: Any) -> dict[str, np.ndarray]:
  """Each prunable layer's keep bits as one flat bool vector (layers named by module path)."""
  layers: dict[str, list[np.ndarray]] = {}
  flat, _ = jax.tree_util.tree_flatten_with_path(keep_mask)
  for (path, keep), is_prunable in zip(flat, jax.tree_util.tree_leaves(prunable)):
    if is_prunable:
      layers.setdefault(masks_lib.module_path(masks_lib.path_to_names(path)), []).append(
          np.asarray(keep, bool).reshape(-1)
      )
  return {layer: np.concatenate(parts) for layer, parts in layers.items()}


def overlap(first: Any, second: Any, prunable: Any) -> dict[str, float]:
  """The fraction of `first`'s surviving prunable weights that `second` keeps too, per layer and
  'overall' (1.0 for identical masks, 0.0 for disjoint ones; nan for a layer `first` prunes entirely)."""
  first_layers, second_layers = _kept_per_layer(first, prunable), _kept_per_layer(second, prunable)
  shared = total = 0
  result = {}
  for layer, kept in first_layers.items():
    both = int(np.sum(kept & second_layers[layer]))
    result[layer] = both / int(kept.sum()) if kept.any() else float('nan')
    shared, total = shared + both, total + int(kept.sum())
  result[OVERALL] = shared / total if total else float('nan')
  return result


def chance_overlap(first: Any, second: Any, prunable: Any) -> dict[str, float]:
  """What `overlap(first, second)` is in expectation for two random masks with the same per-layer
  counts: each layer's density in `second` (overall: weighted by `first`'s survivors per layer)."""
  first_layers, second_layers = _kept_per_layer(first, prunable), _kept_per_layer(second, prunable)
  result = {layer: float(second_layers[layer].mean()) for layer in first_layers}
  counts = {layer: int(kept.sum()) for layer, kept in first_layers.items()}
  total = sum(counts.values())
  result[OVERALL] = sum(counts[layer] * result[layer] for layer in counts) / total if total else float('nan')
  return result


def _masks(workdir: str, records: Sequence[dict[str, Any]]) -> dict[tuple[int, int], Any]:
  """(trial, level) -> keep mask, for every recorded ticket whose level checkpoint is there."""
  found = {}
  for record in records:
    if record['branch'] != 'ticket':
      continue
    directory = workdir_lib.level_directory(workdir, record['trial'], record['level'])
    if os.path.isdir(directory):
      found[(record['trial'], record['level'])] = checkpoints.restore_tree(directory)['mask']
  return found


def overlap_rows(workdir: str, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """One row per (level, pair, layer): between every pair of trials at each level ('trials'), and
  between each trial's consecutive levels ('levels': the share of level L's survivors that level L-1
  kept), with the chance overlap of random masks of those densities."""
  masks = _masks(workdir, records)
  if not masks:
    return []
  counted = next((record['layer_density'] for record in records if record.get('layer_density')), None)
  try:  # prunable as the run pruned: the leaves its records count (any rule), else its config's rule
    plan = config_lib.pruning_plan(tickets.read_workdir_config(workdir)[0])
  except tickets.TicketError:
    plan = config_lib.pruning_plan(config_lib.base_config())
  rows = []

  def add(kind: str, level: int, first_name: str, second_name: str, first: Any, second: Any) -> None:
    prunable = masks_lib.prunable_named(first, counted) if counted else plan.prunable(first)
    observed, chance = overlap(first, second, prunable), chance_overlap(first, second, prunable)
    for layer in observed:
      rows.append(
          {
              'comparison': kind,
              'level': level,
              'first': first_name,
              'second': second_name,
              'layer': layer,
              'overlap': observed[layer],
              'chance': chance[layer],
          }
      )

  levels = sorted({level for _, level in masks})
  for level in levels:
    trials = sorted(trial for trial, at in masks if at == level)
    for first, second in itertools.combinations(trials, 2):
      add('trials', level, f'trial {first}', f'trial {second}', masks[(first, level)], masks[(second, level)])
  for trial, level in sorted(masks):
    if level > 0 and (trial, level - 1) in masks:
      add(
          'levels',
          level,
          f'trial {trial} level {level}',
          f'trial {trial} level {level - 1}',
          masks[(trial, level)],
          masks[(trial, level - 1)],
      )
  return rows


def layer_density_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Per level and prunable layer: the ticket's kept fraction, mean/min/max over trials (from the
  records' `layer_density`)."""
  by_level: dict[tuple[int, str], list[float]] = {}
  for record in records:
    if record['branch'] == 'ticket':
      for layer, density in (record.get('layer_density') or {}).items():
        by_level.setdefault((record['level'], layer), []).append(float(density))
  return [
      {
          'level': level,
          'layer': layer,
          'density_mean': float(np.mean(values)),
          'density_min': min(values),
          'density_max': max(values),
          'trials': len(values),
      }
      for (level, layer), values in sorted(by_level.items())
  ]


_LINE_STYLES = ('-', '--', ':', '-.')
_MARKERS = ('o', 's', '^', 'D', 'v', 'x')


def plot_layer_density(
    records: Sequence[dict[str, Any]], path: str | None = None, setting: str | None = None
) -> figure_lib.Figure:
  """Each prunable layer's kept fraction against the level (log axis), mean over trials: how unevenly
  the layers are pruned (under global pruning, above all). The title names `setting` (e.g. 'LeNet-300-100
  on MNIST-1D') when given and the trials; the legend is outside the axes. Saved as a PNG at `path`
  (at `PLOT_DPI`) when given."""
  rows = layer_density_rows(records)
  if not rows:
    raise ValueError('no ticket records with per-layer densities to plot')
  figure = figure_lib.Figure(figsize=(9, 4.8), layout='constrained')
  axes = figure.add_subplot()
  layers = list(dict.fromkeys(row['layer'] for row in rows))
  for index, layer in enumerate(layers):
    points = [row for row in rows if row['layer'] == layer]
    axes.plot(  # layers pruned alike draw the same line: each its own dashes and marker, the first widest
        [row['level'] for row in points],
        [100 * row['density_mean'] for row in points],
        linestyle=_LINE_STYLES[index % len(_LINE_STYLES)],
        marker=_MARKERS[index % len(_MARKERS)],
        markersize=max(3.0, 9.0 - 2.0 * index),
        linewidth=max(1.0, 3.0 - 0.6 * index),
        label=layer,
        gid=layer,
    )
  axes.set_yscale('log')
  axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # levels are whole numbers
  axes.yaxis.set_major_formatter(ticker.LogFormatter())  # '100', '10', not '10^2'
  axes.yaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
  axes.set_xlabel('pruning level')
  axes.set_ylabel("% of the layer's weights remaining")
  trials = max(row['trials'] for row in rows)
  axes.set_title(
      f'Ticket density per layer{f", {setting}" if setting else ""}\n'
      f'({f"mean of {trials} trials" if trials > 1 else "1 trial"})',
      fontsize=11,
  )
  axes.grid(True, which='both', alpha=0.3)
  # Outside the axes, so that it covers no line (as `lth_jax.reporting.style.legend_outside`, a layer up).
  axes.legend(loc='upper left', bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=9, title='layer')
  if path is not None:
    with results_lib.atomic_open(path, 'wb') as file:
      figure.savefig(file, format='png', dpi=PLOT_DPI, bbox_inches='tight', pad_inches=0.1)
  return figure


def _write_csv(rows: Sequence[dict[str, Any]], path: str) -> None:
  text = io.StringIO()
  if rows:
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator='\n')
    writer.writeheader()
    writer.writerows(results_lib.finite_or_none(list(rows)))
  with results_lib.atomic_open(path) as file:
    file.write(text.getvalue())


def write_mask_report(
    workdir: str, records: Sequence[dict[str, Any]], output_dir: str, setting: str | None = None
) -> list[str]:
  """Writes mask_overlap.csv, layer_density.csv and layer_density.png (titled with `setting` when given)
  into `output_dir`; returns the paths written (the overlap table needs the level checkpoints of the
  workdir)."""
  records = results_lib.split_diverged(records)[0]
  paths = []
  density = layer_density_rows(records)
  if density:
    paths.append(os.path.join(output_dir, LAYER_DENSITY_FILE))
    _write_csv(density, paths[-1])
    paths.append(os.path.join(output_dir, LAYER_DENSITY_PLOT))
    plot_layer_density(records, paths[-1], setting)
  overlaps = overlap_rows(workdir, records)
  if overlaps:
    paths.append(os.path.join(output_dir, OVERLAP_FILE))
    _write_csv(overlaps, paths[-1])
  return paths


def format_overlap_table(rows: Sequence[dict[str, Any]]) -> str:
  """The overall overlaps as a table: comparison, level, pair, overlap and chance."""
  overall = [row for row in rows if row['layer'] == OVERALL]
  if not overall:
    return '(no masks to compare)'
  lines = [f'{"comparison":<10} {"level":>5} {"masks":<40} {"overlap":>8} {"chance":>8}']
  for row in overall:
    lines.append(
        f'{row["comparison"]:<10} {row["level"]:>5} {row["first"] + " / " + row["second"]:<40} '
        f'{row["overlap"]:>8.4f} {row["chance"]:>8.4f}'
    )
  return "mask overlap (share of the first mask's survivors the second keeps; chance: random masks)\n" + '\n'.join(
      lines
  )

"""The plots of a lottery run's records: test metric against the fraction of weights remaining (one
line per branch, mean over trials with min-max error bars, the dense network dashed) and the ticket's
training curves (one line per level); `write_report` writes both and the CSV table into a folder."""

from __future__ import annotations

import os
from typing import Any, Sequence

import matplotlib
from matplotlib import cm
from matplotlib import colors
from matplotlib import figure as figure_lib
from matplotlib import ticker
import numpy as np

from lth_jax import results as results_lib
from lth_jax.reporting import style
from lth_jax.reporting import summaries

ACCURACY_VS_SPARSITY_FILE = 'accuracy_vs_sparsity.png'
TRAINING_CURVES_FILE = 'training_curves.png'
SPARSITY_TABLE_FILE = 'sparsity_table.csv'

_BRANCH_STYLES = {  # branch: (colour, marker); legend labels are `style.display_name`'s
    'ticket': ('C0', 'o'),
    'reinit': ('C1', 's'),
    'permuted': ('C2', '^'),
    'permuted_reinit': ('C3', 'v'),
    'random_pruning': ('C4', 'D'),
    'snip': ('C5', 'P'),
    'sign_reinit': ('C6', 'X'),
}
_MAX_PERCENT_TICKS = 8
_MAX_LEGEND_LEVELS = 10


def _trials_note(records: Sequence[dict[str, Any]], bars: str) -> str:
  return style.trials_note(len({record['trial'] for record in records}), bars)


def _metric_label(metric: str, higher_is_better: bool = True) -> str:
  return style.display_name(metric) + ('' if higher_is_better else ' (lower is better)')


def _capital(text: str) -> str:
  return text[:1].upper() + text[1:]  # 'test RMSE' -> 'Test RMSE' (str.capitalize would lower 'RMSE')


def _title(what: str, setting: str | None, note: str) -> str:
  """'<what>, <setting>' and the trials note below it."""
  return f'{what}{f", {setting}" if setting else ""}\n({note})'


def _use_log_scale(higher_is_better: bool, values: Sequence[float]) -> bool:
  """An error such as RMSE spanning orders of magnitude (e.g. 1e-7 for a ticket, 3.0 for a random one)
  reads on a log axis."""
  finite = np.array([value for value in values if np.isfinite(value)])
  return not higher_is_better and finite.size > 0 and finite.min() > 0 and finite.max() / finite.min() > 20


def plot_accuracy_vs_sparsity(
    records: Sequence[dict[str, Any]], path: str | None = None, setting: str | None = None
) -> figure_lib.Figure:
  """Test metric against fraction of weights remaining (log axis, decreasing to the right), one line per
  branch at the mean over trials with min-max error bars, the dense (level 0) mean as a dashed line
  'dense network'; the title names `setting` (e.g. 'LeNet-300-100 on MNIST-1D', `style.setting_name`)
  when given and the trials, the legend is outside the axes. Saved as a PNG at `path` (when given).
  Returns the figure."""
  records = summaries.usable(records)
  metric = summaries.test_metric(records)
  summary = summaries.sparsity_summary(records)
  figure = figure_lib.Figure(figsize=(9.5, 4.8), layout='constrained')
  axes = figure.add_subplot()
  _plot_branches(axes, records, summary)
  _plot_dense(axes, records, metric)
  _format_sparsity_axes(axes, records, summary, metric)
  axes.set_title(
      _title(
          f'{_capital(style.display_name(metric))} against weights remaining',
          setting,
          _trials_note(records, 'error bars'),
      ),
      fontsize=style.TITLE_FONTSIZE,
  )
  if path is not None:
    style.save_png(figure, path)
  return figure


def _plot_branches(
    axes: matplotlib.axes.Axes, records: Sequence[dict[str, Any]], summary: dict[str, list[summaries.SparsityPoint]]
) -> None:
  """One line per branch of `summary`: the mean over trials against fraction remaining, min-max error bars."""
  rewind_steps = {record['start_step'] for record in records if record['level'] > 0}
  for index, (branch, points) in enumerate(summary.items()):
    colour, marker = _BRANCH_STYLES.get(branch, (f'C{7 + index % 3}', '*'))
    label = style.display_name(branch)
    if branch == 'ticket' and rewind_steps - {0}:
      label += f' (late reset to step {", ".join(map(str, sorted(rewind_steps)))})'
    fractions = np.array([point.fraction_remaining for point in points])
    means = np.array([point.mean for point in points])
    errors = np.array(
        [[point.mean - point.minimum for point in points], [point.maximum - point.mean for point in points]]
    )
    errors = np.clip(errors, 0, None)  # the mean of equal values can round an ulp below their minimum
    axes.errorbar(
        fractions,
        means,
        yerr=errors,
        label=label,
        color=colour,
        marker=marker,
        markersize=4,
        capsize=3,
        linewidth=1.5,
        gid=branch,
    )


def _plot_dense(axes: matplotlib.axes.Axes, records: Sequence[dict[str, Any]], metric: str) -> None:
  """The dense (level 0) mean of `metric` as a dashed horizontal line, when there is a level 0."""
  dense = [record[metric] for record in records if record['level'] == 0]
  if dense:
    axes.axhline(
        float(np.mean(dense)),
        color='0.4',
        linestyle='--',
        linewidth=1,
        label=f'dense network (level 0): {np.mean(dense):.4g}',
        gid='dense',
    )


def _percent_ticks(summary: dict[str, list[summaries.SparsityPoint]]) -> tuple[list[float], list[float]]:
  """Every fraction remaining of `summary` (decreasing) and at most `_MAX_PERCENT_TICKS` of them, evenly spread."""
  all_fractions = sorted(
      {round(point.fraction_remaining, 12) for points in summary.values() for point in points}, reverse=True
  )
  ticks = [
      all_fractions[i]
      for i in sorted(
          {round(i) for i in np.linspace(0, len(all_fractions) - 1, min(len(all_fractions), _MAX_PERCENT_TICKS))}
      )
  ]
  return all_fractions, ticks


def _format_sparsity_axes(
    axes: matplotlib.axes.Axes,
    records: Sequence[dict[str, Any]],
    summary: dict[str, list[summaries.SparsityPoint]],
    metric: str,
) -> None:
  """Percent-remaining log x axis decreasing to the right, the metric's y axis, grid and legend."""
  all_fractions, ticks = _percent_ticks(summary)
  axes.set_xscale('log')
  axes.set_xlim(max(all_fractions) * 1.15, min(all_fractions) / 1.15)  # decreasing left to right
  axes.xaxis.set_major_locator(ticker.FixedLocator(ticks))
  axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: style.percent(value)))
  axes.xaxis.set_minor_locator(ticker.NullLocator())
  higher_is_better = results_lib.higher_is_better(records[0]) if records else True
  if _use_log_scale(
      higher_is_better,
      [value for points in summary.values() for point in points for value in (point.minimum, point.maximum)],
  ):
    axes.set_yscale('log')
  axes.set_xlabel(style.PERCENT_REMAINING)
  axes.set_ylabel(_metric_label(metric, higher_is_better))
  axes.grid(True, which='major', alpha=0.3)
  handles, labels = axes.get_legend_handles_labels()
  order = sorted(range(len(handles)), key=lambda i: labels[i].startswith('dense'))  # dense line last
  style.legend_outside(axes, [handles[i] for i in order], [labels[i] for i in order])


def plot_training_curves(
    records: Sequence[dict[str, Any]], path: str | None = None, branch: str = 'ticket', setting: str | None = None
) -> figure_lib.Figure:
  """Test metric against training step for `branch` (the ticket by default), one line per level at the
  mean over trials (shaded min to max), coloured by fraction of weights remaining (legend outside the
  axes, or a colour bar for many levels); the title names `setting` when given and the trials. Saved
  as a PNG at `path` (when given). Returns the figure."""
  records = summaries.usable(records)
  metric = summaries.test_metric(records)
  curves = summaries.training_curves(records, branch)
  if not curves:
    raise ValueError(f'no {branch!r} records to plot')
  fractions = [curve.fraction_remaining for curve in curves]
  highest, lowest = max(fractions), min(fractions)
  norm = colors.LogNorm(vmin=lowest if lowest < highest else highest / 2, vmax=highest)
  colour_map = colors.ListedColormap(matplotlib.colormaps['viridis'](np.linspace(0.85, 0.0, 256)))
  figure = figure_lib.Figure(figsize=(9, 4.8), layout='constrained')
  axes = figure.add_subplot()
  for curve in curves:
    colour = colour_map(norm(curve.fraction_remaining))
    axes.plot(
        curve.steps,
        curve.mean,
        color=colour,
        linewidth=1.5,
        marker='o' if len(curve.steps) <= 12 else None,
        markersize=3,
        label=f'{style.percent(curve.fraction_remaining)}% (level {curve.level})',
        gid=f'level_{curve.level}',
    )
    if curve.trials > 1:
      axes.fill_between(curve.steps, curve.minimum, curve.maximum, color=colour, alpha=0.12, linewidth=0)
  higher_is_better = results_lib.higher_is_better(records[0])
  if _use_log_scale(higher_is_better, [value for curve in curves for value in (*curve.minimum, *curve.maximum)]):
    axes.set_yscale('log')
  _level_key(figure, axes, len(curves), cm.ScalarMappable(norm=norm, cmap=colour_map))
  note = f"{style.display_name(branch)}, one line per level; {_trials_note(records, 'shaded')}"
  if all(len(curve.steps) <= 1 for curve in curves):
    trained = min(record.get('steps', 0) for record in records) or 'its'
    note += f')\n(one evaluation per level, at its end: set training.eval_every below {trained} steps to record curves'
  axes.set_xlabel(style.display_name('step'))
  axes.set_ylabel(_metric_label(metric, higher_is_better))
  what = f'{_capital(style.display_name(metric))} during training'
  axes.set_title(_title(what, setting, note), fontsize=style.TITLE_FONTSIZE)
  axes.grid(True, alpha=0.3)
  if path is not None:
    style.save_png(figure, path)
  return figure


def _level_key(figure: figure_lib.Figure, axes: matplotlib.axes.Axes, levels: int, colours: cm.ScalarMappable) -> None:
  """What the colours of the training curves mean: a legend outside the axes for a few levels, a colour
  bar of percent remaining for many."""
  if levels <= _MAX_LEGEND_LEVELS:
    style.legend_outside(axes, title=style.PERCENT_REMAINING, title_fontsize=style.LEGEND_FONTSIZE)
    return
  colour_bar = figure.colorbar(colours, ax=axes)
  colour_bar.set_label(style.PERCENT_REMAINING)
  colour_bar.ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: style.percent(value)))
  colour_bar.ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def write_report(records: Sequence[dict[str, Any]], output_dir: str, setting: str | None = None) -> list[str]:
  """Writes the two plots (titled with `setting`, e.g. `style.workdir_setting(workdir)`, when given) and
  the CSV table into `output_dir` (created if missing); returns their paths."""
  os.makedirs(output_dir, exist_ok=True)
  paths = [
      os.path.join(output_dir, name) for name in (ACCURACY_VS_SPARSITY_FILE, TRAINING_CURVES_FILE, SPARSITY_TABLE_FILE)
  ]
  plot_accuracy_vs_sparsity(records, paths[0], setting)
  plot_training_curves(records, paths[1], setting=setting)
  summaries.write_csv(records, paths[2])
  return paths

"""Tables and figures of stability to pruning against the late-reset step ("The Lottery Ticket
Hypothesis at Scale"): at the end of training (Figures 4 and 6) and throughout training (Figures 11-14).

Each function takes `stability_results.StabilityResult`s of one ticket level (several rewind steps; several
trials of a rewind step are averaged) and a normalization of the distances: 'final' (by the final
||W_F - W'_F||, Figures 4 and 11-13) or 'max' (by its maximum over training, Figures 6 and 14).
"""

from __future__ import annotations

from typing import Any, Sequence

import matplotlib
from matplotlib import figure as figure_lib
from matplotlib import lines as lines_lib
import numpy as np

from lth_jax.analysis import metrics as metrics_lib
from lth_jax.analysis import stability_results
from lth_jax.reporting import style

TICKETS = ('ticket', 'random_ticket')
NORMALIZATION_LABELS = {'final': "by the final ||W_F - W'_F||", 'max': "by the max ||W_F - W'_F|| over training"}
END_METRICS = (
    'l2_distance',
    'angle',
    'correlation',
    'full_distance_from_init',
    'ticket_distance_from_init',
    'angle_ticket_to_final',
    'angle_full_to_final',
)


def by_rewind_step(
    results: Sequence[stability_results.StabilityResult],
) -> dict[int, list[stability_results.StabilityResult]]:
  """The results grouped by rewind step (ascending); a ValueError when they mix ticket levels."""
  levels = {result.level for result in results}
  if len(levels) > 1:
    raise ValueError(f'stability results of several levels ({sorted(levels, key=str)}): report one level at a time')
  grouped: dict[int, list[stability_results.StabilityResult]] = {}
  for result in sorted(results, key=lambda result: (result.rewind_step, result.trial)):
    grouped.setdefault(result.rewind_step, []).append(result)
  return grouped


def _check_normalization(results: Sequence[stability_results.StabilityResult], normalization: str) -> None:
  metrics_lib.metric_key('l2_distance', normalization)  # names a bad normalization
  old = sorted({result.rewind_step for result in results if not result.has_normalization(normalization)})
  if old:
    raise ValueError(
        f'the stability results of rewind steps {old} have no {normalization!r} normalization (measured before '
        'it was recorded): measure them again'
    )


def end_of_training_rows(results: Sequence[stability_results.StabilityResult]) -> tuple[list[str], list[list[Any]]]:
  """One row per (rewind step, ticket): the mean over trials of each end-of-training metric under both
  normalizations (empty cells where the max normalization is missing) and of the test metric."""
  header = ['rewind_step', 'member', 'trials']
  for metric in END_METRICS:
    header += [metrics_lib.metric_key(metric, normalization) for normalization in metrics_lib.NORMALIZATIONS]
  header = list(dict.fromkeys(header)) + ['test_metric']
  rows = []
  for rewind_step, group in by_rewind_step(results).items():
    for member in TICKETS:
      row: list[Any] = [rewind_step, member, len(group)]
      for key in header[3:-1]:
        values = [result.final[member].get(key) for result in group]
        row.append(_mean_cell(values))
      row.append(_mean_cell([result.test_metrics.get(member) for result in group]))
      rows.append(row)
  return header, rows


def curve_rows(results: Sequence[stability_results.StabilityResult]) -> tuple[list[str], list[list[Any]]]:
  """One row per (rewind step, trial, ticket, measured step) with every metric (both normalizations)."""
  keys = list(
      dict.fromkeys(
          metrics_lib.metric_key(metric, normalization)
          for metric in END_METRICS
          for normalization in metrics_lib.NORMALIZATIONS
      )
  )
  rows = []
  for result in sorted(results, key=lambda result: (result.rewind_step, result.trial)):
    for member in TICKETS:
      for entry in result.curve:
        rows.append(
            [result.rewind_step, result.trial, member, entry['step']] + [_cell(entry[member].get(key)) for key in keys]
        )
  return ['rewind_step', 'trial', 'member', 'step', *keys], rows


def _cell(value: Any) -> str:
  return '' if value is None or not np.isfinite(value) else f'{value:.6g}'


def _mean_cell(values: Sequence[Any]) -> str:
  finite = [value for value in values if value is not None and np.isfinite(value)]
  return f'{np.mean(finite):.6g}' if finite and len(finite) == len(values) else ''


def format_end_of_training(results: Sequence[stability_results.StabilityResult]) -> str:
  """A printable table of the end-of-training distance and angle per rewind step, both normalizations."""
  lines = [
      f'{"rewind":>7} {"member":<14} {"L2/final":>9} {"L2/max":>9} {"angle":>7} {"corr":>7} '
      f'{"|W_F-W_0|":>10} {"|W_T-W_0|":>10} {"test":>7}'
  ]
  for rewind_step, group in by_rewind_step(results).items():
    for member in TICKETS:

      def mean(metric: str, normalization: str = 'final', group=group, member=member) -> str:
        if not all(result.has_normalization(normalization) for result in group):
          return '-'
        return f'{np.mean([result.metric(member, metric, normalization) for result in group]):.3f}'

      test = np.mean([result.test_metrics[member] for result in group])
      lines.append(
          f'{rewind_step:>7} {member:<14} {mean("l2_distance"):>9} {mean("l2_distance", "max"):>9} '
          f'{mean("angle"):>7} {mean("correlation"):>7} {mean("full_distance_from_init"):>10} '
          f'{mean("ticket_distance_from_init"):>10} {test:>7.4f}'
      )
  return '\n'.join(lines)


def format_over_training(results: Sequence[stability_results.StabilityResult], columns: int = 6) -> str:
  """A printable table: per rewind step and ticket, the final-normalized L2 distance and the angle
  at up to `columns` of the measured steps (mean over trials)."""
  lines = []
  for rewind_step, group in by_rewind_step(results).items():
    steps = group[0].steps
    picks = sorted({round(index) for index in np.linspace(0, len(steps) - 1, min(columns, len(steps)))})
    lines.append(f'rewind {rewind_step}: step ' + ''.join(f'{steps[index]:>14}' for index in picks))
    for member in TICKETS:
      distance = np.mean([result.metric_curve(member, 'l2_distance') for result in group], axis=0)
      angle = np.mean([result.metric_curve(member, 'angle') for result in group], axis=0)
      lines.append(
          f'  {member:<14} L2 / angle'
          + ''.join(f'{f"{distance[index]:.3f} / {angle[index]:.1f}":>14}' for index in picks)
      )
  return '\n'.join(lines)


def _subject(
    results: Sequence[stability_results.StabilityResult], setting: str | None, fraction_remaining: float | None
) -> str:
  """What a stability figure shows: 'LeNet-300-100 on MNIST-1D, ticket of level 2 (36% of weights
  remaining), mean of 3 trials' (the setting and the sparsity where given)."""
  level = next(iter({result.level for result in results}))
  trials = max(len(group) for group in by_rewind_step(results).values())
  sparsity = f'{style.percent(fraction_remaining)}% of weights remaining' if fraction_remaining is not None else ''
  ticket = f'ticket of level {level}' + (f' ({sparsity})' if sparsity else '') if level is not None else sparsity
  parts = [setting or '', ticket, f'mean of {trials} trials' if trials > 1 else '1 trial']
  return ', '.join(part for part in parts if part)


_MEMBER_COLOURS = {'ticket': 'tab:blue', 'random_ticket': 'tab:orange', 'full': 'tab:gray'}


def plot_stability_vs_reset_step(
    results: Sequence[stability_results.StabilityResult],
    path: str | None = None,
    normalization: str = 'final',
    dpi: int = style.DPI,
    setting: str | None = None,
    fraction_remaining: float | None = None,
    metric: str = 'test_accuracy',
) -> figure_lib.Figure:
  """Figure 4 (normalization 'final') or 6 ('max'): the normalized L2 distance and the angle between the
  ticket (or random ticket) and the full network at the end of training against the rewind step, with
  min-max bars over trials, and the final test `metric` of the full network and both tickets. The title
  names `setting` (e.g. 'LeNet-300-100 on MNIST-1D'), the level and its `fraction_remaining` where
  given, and the trials; one legend below the panels."""
  _check_normalization(results, normalization)
  grouped = by_rewind_step(results)
  steps = list(grouped)
  figure = figure_lib.Figure(figsize=(12, 4.4), layout='constrained')
  axes = figure.subplots(1, 3)
  for axis, name, label in (
      (axes[0], 'l2_distance', 'normalized L2 distance ||W_F - W_T||'),
      (axes[1], 'angle', 'angle (W_F - W_0, W_T - W_0), degrees'),
  ):
    for member in TICKETS:
      values = [[result.metric(member, name, normalization) for result in grouped[step]] for step in steps]
      means = np.array([np.mean(value) for value in values])
      errors = np.clip([means - [min(v) for v in values], [max(v) for v in values] - means], 0, None)
      axis.errorbar(steps, means, yerr=errors, marker='o', capsize=3, color=_MEMBER_COLOURS[member])
    axis.set_ylabel(label)
  axes[0].set_title(f'distance normalized {NORMALIZATION_LABELS[normalization]}', fontsize=10)
  axes[1].set_title('angle between the updates', fontsize=10)
  axes[2].set_title(f'{style.display_name(metric)} at the end of training', fontsize=10)
  for member in ('full', *TICKETS):
    axes[2].plot(
        steps,
        [np.mean([result.test_metrics[member] for result in grouped[step]]) for step in steps],
        'o-',
        color=_MEMBER_COLOURS[member],
        label=style.display_name(member),
    )
  axes[2].set_ylabel(style.display_name(metric))
  for axis in axes:
    axis.set_xlabel(style.display_name('rewind_step'))
    axis.grid(True, alpha=0.3)
  handles, labels = axes[2].get_legend_handles_labels()
  figure.legend(handles, labels, loc='outside lower center', ncol=3, fontsize=style.LEGEND_FONTSIZE)
  subject = _subject(results, setting, fraction_remaining)
  figure.suptitle(f'Stability to pruning at the end of training\n{subject}', fontsize=style.TITLE_FONTSIZE)
  if path is not None:
    style.save_png(figure, path, dpi)
  return figure


def _mean_curve(
    group: Sequence[stability_results.StabilityResult], member: str, metric: str, normalization: str
) -> np.ndarray:
  """`metric` of `member` at each measured step, mean over the trials of one rewind step."""
  return np.mean([result.metric_curve(member, metric, normalization) for result in group], axis=0)


# The rows of `plot_stability_over_training`: (y label, ((metric, line style), ...)).
_OVER_TRAINING_ROWS = (
    ('correlation of W_F and W_T', (('correlation', '-'),)),
    ('normalized ||W_F - W_T||', (('l2_distance', '-'),)),
    ('normalized distance from W_0', (('ticket_distance_from_init', '-'), ('full_distance_from_init', '--'))),
    (
        'angle (degrees)',
        (('angle', '-'), ('angle_ticket_to_final', '--'), ('angle_full_to_final', ':')),
    ),
)


def plot_stability_over_training(
    results: Sequence[stability_results.StabilityResult],
    path: str | None = None,
    normalization: str = 'final',
    dpi: int = style.DPI,
    setting: str | None = None,
    fraction_remaining: float | None = None,
) -> figure_lib.Figure:
  """Figures 11-13 (normalization 'final') or 14 ('max'): one column for the winning ticket, one for
  the random ticket, one line colour per late-reset step, against the training step:
    row 1  correlation of W_F and W_T;
    row 2  normalized L2 distance ||W_F - W_T||;
    row 3  normalized distance from W_0 of W_T (solid) and of W_F (dashed);
    row 4  angles (W_F - W_0, W_T - W_0) solid, (W_T - W_0, W_* - W_0) dashed, (W_F - W_0, W_* - W_0) dotted.
  The title names `setting`, the level and its `fraction_remaining` where given, and the trials; the
  legends are to the right of the rows they explain.
  """
  _check_normalization(results, normalization)
  grouped = by_rewind_step(results)
  palette = matplotlib.colormaps['viridis']
  colours = {step: palette(index / max(1, len(grouped) - 1) * 0.9) for index, step in enumerate(grouped)}
  figure = figure_lib.Figure(figsize=(12, 11), layout='constrained')
  axes = figure.subplots(4, 2, sharex=True)
  for column, member in enumerate(TICKETS):
    _plot_stability_column(axes[:, column], member, grouped, colours, normalization)
  _over_training_legends(axes, grouped, colours)
  figure.suptitle(
      f'Stability to pruning throughout training, distances normalized {NORMALIZATION_LABELS[normalization]}\n'
      f'{_subject(results, setting, fraction_remaining)}',
      fontsize=style.TITLE_FONTSIZE,
  )
  if path is not None:
    style.save_png(figure, path, dpi)
  return figure


def _plot_stability_column(
    column: np.ndarray,
    member: str,
    grouped: dict[int, list[stability_results.StabilityResult]],
    colours: dict[int, Any],
    normalization: str,
) -> None:
  """One column of `plot_stability_over_training`: `member`'s rows of metrics, a line per rewind step."""
  column[0].set_title(
      f'{style.display_name(member)} ({"W_T" if member == "ticket" else "random W_T"})', fontsize=style.TITLE_FONTSIZE
  )
  for axis, (label, metrics) in zip(column, _OVER_TRAINING_ROWS):
    for step, group in grouped.items():
      for metric, line_style in metrics:
        axis.plot(
            group[0].steps,
            _mean_curve(group, member, metric, normalization),
            line_style,
            color=colours[step],
            marker='.',
            markersize=3,
            linewidth=1.2,
        )
    axis.set_ylabel(label, fontsize=10)
    axis.grid(True, alpha=0.3)
  column[-1].set_xlabel(style.display_name('step'))


def _over_training_legends(
    axes: np.ndarray, grouped: dict[int, list[stability_results.StabilityResult]], colours: dict[int, Any]
) -> None:
  """The legends of `plot_stability_over_training`, right of the right column: rewind steps' colours
  (row 1), and the line styles of rows 3 and 4."""
  style.legend_outside(
      axes[0, 1],
      [lines_lib.Line2D([], [], color=colours[step]) for step in grouped],
      [f'late reset to step {step}' for step in grouped],
  )
  style.legend_outside(
      axes[2, 1],
      [lines_lib.Line2D([], [], color='k', linestyle=line_style) for line_style in ('-', '--')],
      ['ticket W_T', 'full network W_F'],
  )
  style.legend_outside(
      axes[3, 1],
      [lines_lib.Line2D([], [], color='k', linestyle=line_style) for line_style in ('-', '--', ':')],
      ['full network to ticket', 'ticket to final W_*', 'full network to final W_*'],
      title='angle between updates',
      title_fontsize=style.LEGEND_FONTSIZE,
  )

"""The late-reset table of Figure 5 ("The Lottery Ticket Hypothesis at Scale"): rows = late-reset point
(and R, random reinitialization), columns = pruning level, cells = the ticket's mean test accuracy."""

from __future__ import annotations

import re
from typing import Any, Sequence

from matplotlib import figure as figure_lib
import numpy as np

from lth_jax.reporting import style
from lth_jax.reporting import summaries
from lth_jax import results as results_lib

RANDOM_REINIT_ROW = 'R'
_NUMBER = re.compile(r'[-+0-9.eE]+')  # the mean at the start of a table cell


def _cell(values: Sequence[float], dense: Sequence[float], remaining: float, metric: str, starred: bool) -> str:
  """'mean±spread* @remaining%': spread = the largest distance of a trial from the mean (with 2+ trials);
  '*' where the trials' spread is clear of the dense network's trials (`summaries.winning`)."""
  mean = float(np.mean(values))
  spread = f'±{max(abs(value - mean) for value in values):.4f}' if len(values) > 1 else ''
  winning = summaries.winning(values, dense, metric)
  return f'{mean:.4f}{spread}{"*" if winning and starred else ""} @{100 * remaining:.1f}%'


def late_reset_table(
    records_by_reset: dict[Any, list[dict]], reinit_records: Sequence[dict] = ()
) -> tuple[list[str], list[list[str]]]:
  """Header and rows of the reset-point x fraction-remaining table ('*': a winning ticket, every trial at
  least the best trial of the dense network).

  `records_by_reset` maps a reset point (its label) to its lottery run's records, in row order; the
  tickets of each run are compared with that run's dense network. `reinit_records` (the `reinit`
  branch of one of those runs) make a first row 'R', compared with the dense network of the first run.
  """
  all_records = [r for records in records_by_reset.values() for r in records]
  levels = sorted({r['level'] for r in all_records})
  header = ['reset'] + [f'level_{level}' for level in levels]
  metric = results_lib.test_metric_name(all_records)
  first_dense = None
  rows = []
  for reset, records in records_by_reset.items():
    usable, _ = results_lib.split_diverged(records)
    tickets = [r for r in usable if r['branch'] == 'ticket']
    by_level = {level: [r[metric] for r in tickets if r['level'] == level] for level in levels}
    dense = by_level.get(0, [])
    first_dense = dense if first_dense is None else first_dense
    row = [str(reset)]
    for level in levels:
      remaining = next((r['fraction_remaining'] for r in tickets if r['level'] == level), None)
      row.append(_cell(by_level[level], dense, remaining, metric, level > 0) if by_level[level] else '')
    rows.append(row)
  reinit, _ = results_lib.split_diverged([r for r in reinit_records if r['branch'] == 'reinit'])
  if reinit:
    row = [RANDOM_REINIT_ROW]
    for level in levels:
      values = [r[metric] for r in reinit if r['level'] == level]
      remaining = next((r['fraction_remaining'] for r in reinit if r['level'] == level), None)
      row.append(_cell(values, first_dense or [], remaining, metric, True) if values else '')
    rows.insert(0, row)
  return header, rows


def plot_late_reset_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], title: str, path: str, dpi: int = style.DPI
) -> figure_lib.Figure:
  """The table as an image (Figure 5): cells coloured by test accuracy, winning tickets starred; the
  header's keys in words ('level_2' -> 'level 2' over its percent remaining, 'reset_step' -> 'late-reset
  step'). `title` should name the model, dataset and trials."""
  values = np.array([[float(_NUMBER.match(cell).group()) if cell else np.nan for cell in row[1:]] for row in rows])
  figure = figure_lib.Figure(figsize=(1.8 + 1.6 * (len(header) - 1), 1.4 + 0.45 * len(rows)), layout='constrained')
  axis = figure.add_subplot()
  image = axis.imshow(np.ma.masked_invalid(values), cmap='Blues', aspect='auto', vmin=np.nanmin(values) - 0.02)
  for i, row in enumerate(rows):
    for j, cell in enumerate(row[1:]):
      if cell:
        text = cell.split('@')[0]
        dark = image.norm(values[i, j]) > 0.6  # white text on the dark cells
        axis.text(
            j,
            i,
            text,
            ha='center',
            va='center',
            fontsize=9,
            color='white' if dark else 'black',
            fontweight='bold' if '*' in text else 'normal',
        )
  remaining = [next((cell.split('@')[1] for cell in column if cell), '') for column in zip(*[row[1:] for row in rows])]
  axis.set_xticks(
      range(len(header) - 1),
      [f'{style.display_name(name)}\n{share} remaining' for name, share in zip(header[1:], remaining)],
      fontsize=9,
  )
  axis.set_yticks(range(len(rows)), [row[0] for row in rows], fontsize=9)
  axis.set_ylabel(style.display_name(header[0]))
  axis.set_title(title, fontsize=10)
  style.save_png(figure, path, dpi)
  return figure

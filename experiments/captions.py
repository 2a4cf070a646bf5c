"""The sentences under the README's quick figures, written from the numbers of the run that drew them.

Each caption reads one regenerated figure's workdir with the same functions the figure command used to
draw its image (`figures.table_cells`, `late_reset_table.late_reset_table`, the stability CSV), states
the seed's claim the figure reproduces, says whether the image shows it (and when not, which way it
fails), and quotes the numbers it rests on. Accuracies are the mean over trials with the trials' range
in brackets; a winning ticket is a level whose every trial is at least the dense network's best trial
(`lth_jax.reporting.summaries.winning`). `experiments.regenerate_figures` writes each caption next to
its images (docs/figures/<name>.md) and into the README; tests/test_figure_captions.py holds them together.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np

from lth_jax import config as config_lib
from lth_jax import data as data_lib
from lth_jax.reporting import style
from lth_jax.reporting import summaries
from lth_jax.search import sweeps
from experiments import figures
from experiments import init_pruning_sweep
from experiments import late_reset_table

Records = Sequence[dict[str, Any]]


def _percent(fraction: float) -> str:
  return f'{100 * fraction:.1f}%'


def _value(cell: figures.TableCell) -> str:
  """'0.647 [0.641, 0.656]' (mean [min, max] over trials), or '0.647' for one trial."""
  if cell.trials == 1:
    return f'{cell.mean:.3f}'
  return f'{cell.mean:.3f} [{cell.minimum:.3f}, {cell.maximum:.3f}]'


def _cells(records: Records, branch: str = 'ticket') -> list[figures.TableCell]:
  return figures.table_cells({'': records}, branch)


def _sparsest(cells: Sequence[figures.TableCell]) -> figures.TableCell:
  return min(cells, key=lambda cell: cell.fraction_remaining)


def _winning_levels(cells: Sequence[figures.TableCell]) -> str:
  """'winning tickets at 4 of 6 levels, the sparsest at 7.8% of the weights', or 'no winning ticket'."""
  winners = [cell for cell in cells if cell.winning]
  pruned = [cell for cell in cells if cell.level > 0]
  if not winners:
    return 'no winning ticket'
  return (
      f'winning tickets at {len(winners)} of {len(pruned)} levels, the sparsest at '
      f'{_percent(_sparsest(winners).fraction_remaining)} of the weights'
  )


def _clear_above(high: figures.TableCell, low: figures.TableCell) -> bool:
  """Whether every trial of `high` beats every trial of `low`."""
  return high.minimum > low.maximum


def _trials(records: Records) -> int:
  return len({record['trial'] for record in records})


def _natural(label: str) -> list[Any]:
  """A sort key that orders 'turnaround_67' before 'turnaround_167'."""
  return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', label)]


def variant_records(workdir: str) -> dict[str, list[dict[str, Any]]]:
  """Each variant's records of the sweep in `workdir`, by the variant's label, in natural order of the
  labels (reset_0, reset_10, reset_50)."""
  results = sweeps.load(workdir)
  return {
      variant.label: [record for record in results.records if record.get('variant') == variant.as_dict()]
      for variant in sorted(results.variants, key=lambda variant: _natural(variant.label))
  }


def _dense(records: Records) -> figures.TableCell:
  return next(cell for cell in _cells(records) if cell.level == 0)


def test_set_size(workdir: str) -> int:
  """The test examples of the dataset of the lottery workdir `workdir` (built from its config.json)."""
  with open(os.path.join(workdir, 'config.json')) as file:
    recorded = json.load(file)
  config = ml_collections.ConfigDict(recorded.get('config', recorded))
  return int(data_lib.build(config_lib.data_spec(config.dataset)).num_test)


def noise_sentence(workdir: str, accuracy: float) -> str:
  """What one run can resolve on the test set of `workdir`, near `accuracy`."""
  size = test_set_size(workdir)
  error = math.sqrt(accuracy * (1 - accuracy) / size)
  return (
      f'The test set holds {size:,} examples: one accuracy moves in steps of {1 / size:.3g} and, near '
      f'{accuracy:.2f}, carries a sampling error of about {100 * error:.1f} points (binomial), so differences '
      'smaller than that are noise unless every trial agrees.'
  )


def snip_caption(workdir: str) -> str:
  """Figure 1: the ticket against SNIP and random reinitialization at the sparsest level."""
  records = summaries.load(workdir)
  ticket, snip, reinit = (_cells(records, branch) for branch in ('ticket', 'snip', 'reinit'))
  at = _sparsest(ticket)
  snip_at, reinit_at = (next(c for c in cells if c.level == at.level) for cells in (snip, reinit))
  shown = _clear_above(at, snip_at) and _clear_above(at, reinit_at)
  verdict = (
      'the ticket is above both, every trial, as in the paper'
      if shown
      else 'not shown: the ticket does not clear '
      + ' and '.join(
          name
          for name, cell in (('SNIP', snip_at), ('random reinitialization', reinit_at))
          if not _clear_above(at, cell)
      )
  )
  return (
      f'**Iterative pruning against SNIP (1).** {_winning_levels(ticket).capitalize()}. At '
      f'{_percent(at.fraction_remaining)} of the weights: ticket {_value(at)}, SNIP {_value(snip_at)}, random '
      f'reinitialization {_value(reinit_at)} (dense network {_value(_dense(records))}, {_trials(records)} trials): '
      f'{verdict}. ' + noise_sentence(workdir, _dense(records).mean)
  )


def _by_point(
    records_by_variant: Mapping[str, Records], label: Callable[[str], str]
) -> list[tuple[str, figures.TableCell]]:
  """(point label, ticket cell at the sparsest level) of each variant."""
  return [(label(name), _sparsest(_cells(records))) for name, records in records_by_variant.items()]


def _trend(points: Sequence[tuple[str, figures.TableCell]], what: str, later: str) -> str:
  """Whether the ticket's sparsest accuracy rises from the first point to the last: clear of the trials'
  spread, falls clear of it, or differs by less than the spread."""
  first, last = points[0][1], points[-1][1]
  if _clear_above(last, first):
    return f"{later}, clear of the trials' spread, as in the paper"
  if _clear_above(first, last):
    return f"not shown: the {what} does worse, clear of the trials' spread ({last.mean:.3f} against {first.mean:.3f})"
  return f"not shown: the {what} and the first differ by less than the trials' spread ({last.mean:.3f} against {first.mean:.3f})"


def late_reset_caption(workdir: str) -> str:
  """Figure 3: the ticket's accuracy at the sparsest level by late-reset step."""
  records_by_variant = variant_records(workdir)
  points = _by_point(records_by_variant, lambda name: name.removeprefix('reset_'))
  at = points[0][1]
  numbers = ', '.join(f'{_value(cell)} at step {step}' for step, cell in points)
  return (
      f'**Late resetting (3).** At {_percent(at.fraction_remaining)} of the weights the ticket reaches '
      f'{numbers} ({at.trials} trials): ' + _trend(points, 'latest reset', 'a later reset gives a better ticket') + '.'
  )


def _table_rows(header: Sequence[str], rows: Sequence[Sequence[str]], label: str) -> str:
  """'reset 0: starred at 2 of 6 levels, the sparsest at 21.6%; ...' from a starred table's rows (cells
  'mean±spread* @remaining%')."""
  parts = []
  for row in rows:
    starred = [
        (header[index], cell) for index, cell in enumerate(row) if index and cell.rstrip().split(' @')[0].endswith('*')
    ]
    name = _row_name(row[0]) if label == 'reset' else f'{label} {row[0]}'
    if starred:
      sparsest = starred[-1][1].split('@')[-1]
      parts.append(f'{name}: starred at {len(starred)} of {len(row) - 2} levels, the sparsest at {sparsest}')
    else:
      parts.append(f'{name}: none starred')
  return '; '.join(parts)


def one_shot_late_reset_caption(workdir: str) -> str:
  """Figure 5: winning cells by reset row of the one-shot late-reset table, and row R."""
  records_by_variant = variant_records(workdir)
  records = {name.removeprefix('reset_'): value for name, value in records_by_variant.items()}
  first = next(iter(records.values()))
  header, rows = late_reset_table.late_reset_table(records, [r for r in first if r['branch'] == 'reinit'])
  counts = [sum(cell.split(' @')[0].endswith('*') for cell in row[1:]) for row in rows]
  resets, random = counts[1:], counts[0]
  shown = resets[-1] > resets[0] and random <= resets[0]
  verdict = (
      'a later reset finds winning tickets where resetting to step 0 does not, and random reinitialization '
      'finds fewer, as in the paper'
      if shown
      else 'not shown: a later reset does not find more winning tickets than resetting to step 0'
      if resets[-1] <= resets[0]
      else 'not shown: random reinitialization wins as often as resetting to step 0'
  )
  sparsest = ', '.join(f'{_row_name(row[0])} {row[-1].split("±")[0].split(" @")[0]}' for row in rows)
  return (
      '**One-shot late resetting (5).** '
      + _table_rows(header, rows, 'reset')
      + f' ({_trials(first)} trials): {verdict}. At {rows[-1][-1].split("@")[-1]} of the weights: {sparsest}.'
  )


def _row_name(label: str) -> str:
  return 'random reinitialization' if label == late_reset_table.RANDOM_REINIT_ROW else f'reset {label}'


def _stability_rows(workdir: str) -> list[dict[str, str]]:
  with open(os.path.join(workdir, 'stability.csv')) as file:
    return list(csv.DictReader(file))


def stability_caption(workdir: str) -> str:
  """Figures 4, 6, 11 and 14: end-of-training distance by reset step, ticket and random ticket, under
  both normalizations."""
  rows = _stability_rows(workdir)
  by_member: dict[str, list[tuple[int, float, float]]] = {}
  correlation: dict[str, list[float]] = {}
  for row in rows:
    by_member.setdefault(row['member'], []).append(
        (int(row['rewind_step']), float(row['l2_distance']), float(row['l2_distance_max_normalized']))
    )
    if row.get('correlation'):
      correlation.setdefault(row['member'], []).append(float(row['correlation']))
  ticket, random = by_member['ticket'], by_member['random_ticket']
  steps = ', '.join(str(step) for step, _, _ in ticket)
  distances = ' → '.join(f'{final:.3f}' for _, final, _ in ticket)
  random_distances = ' → '.join(f'{final:.3f}' for _, final, _ in random)
  stable = ticket[-1][1] < ticket[0][1]
  closer = all(mine < theirs for (_, mine, _), (_, theirs, _) in zip(ticket, random))
  # final-normalized / max-normalized = the largest full-network distance / the final one (>= 1)
  ratio = float(np.mean([final / maximum for _, final, maximum in ticket if maximum]))
  return (
      f'**Stability (4, 6, 11, 14).** End-of-training distance of the ticket from the full network, normalized '
      f'by the distance between two full networks, for reset steps {steps}: {distances}; random ticket '
      f'{random_distances} ({rows[0]["trials"]} trials). '
      + (
          'A later reset gives a more stable ticket'
          if stable
          else 'Not shown: a later reset does not make the ticket more stable'
      )
      + (
          ', and the ticket stays closer than the random ticket at every reset step. '
          if closer
          else '; the random ticket is not farther at every reset step. '
      )
      + f'Normalized by the largest distance between two full networks over training instead (Figures 6 and 14), '
      f'the distances are {ratio:.2f}x smaller: '
      + ('the two normalizations differ here.' if abs(ratio - 1) > 0.01 else 'the two normalizations coincide here.')
      + _correlation_sentence(correlation)
  )


def _correlation_sentence(correlation: Mapping[str, Sequence[float]]) -> str:
  """Figure 11's first row at the end of training: the correlation of W_F and W_T, ticket and random ticket."""
  if set(correlation) != {'ticket', 'random_ticket'}:
    return ''
  ticket, random = (
      ' → '.join(f'{value:.3f}' for value in correlation[member]) for member in ('ticket', 'random_ticket')
  )
  less = max(correlation['random_ticket']) < min(correlation['ticket'])
  return (
      f" Figure 11's first row ends at a correlation of the full network's and the ticket's weights of {ticket} "
      f'for the ticket and {random} for the random ticket: '
      + (
          'far less for the random ticket, as in the paper.'
          if less
          else 'not shown: the random ticket is as correlated.'
      )
  )


def learning_rate_caption(workdir: str) -> str:
  """Figure 2: winning tickets by variant (standard rate, lower rate, warmup, late reset)."""
  parts = []
  found = {}
  records_by_variant = variant_records(workdir)
  order = ('standard', 'low_lr', 'warmup', 'late_reset')  # learning_rate_sweep's variants
  for name in sorted(records_by_variant, key=lambda name: order.index(name) if name in order else len(order)):
    found[name] = _winning_levels(_cells(records_by_variant[name]))
    parts.append(f'{style.display_name(name)}: {found[name]}')
  standard = found.get('standard', '')
  verdict = (
      "the standard rate finds winning tickets too: the paper's LeNet case, not its VGG-19/ResNet-18 case"
      if standard.startswith('winning')
      else 'the standard rate finds none, as the paper reports for VGG-19 and ResNet-18'
  )
  return '**Learning rate (2).** ' + '; '.join(parts) + f': {verdict}.'


def turnaround_caption(workdir: str) -> str:
  """Figure 7: the ticket's accuracy at the sparsest level by turnaround step."""
  points = _by_point(variant_records(workdir), lambda name: name.removeprefix('turnaround_'))
  at = points[0][1]
  numbers = ', '.join(f'{_value(cell)} at step {step}' for step, cell in points)
  return (
      f'**Early turnaround, iterative (7).** At {_percent(at.fraction_remaining)} of the weights the ticket '
      f'reaches {numbers} ({at.trials} trials): '
      + _trend(points, 'latest turnaround', 'a later turnaround gives a better ticket')
      + '.'
  )


def one_shot_turnaround_caption(workdir: str) -> str:
  """Figure 9: winning cells by turnaround row of the one-shot turnaround table."""
  records_by_variant = variant_records(workdir)
  cells = figures.table_cells(records_by_variant)
  header, rows = figures.winning_table(cells, 'turnaround')
  rows = [
      [row[0].removeprefix('turnaround_'), *[f'{cell} @{column}' for cell, column in zip(row[1:], header[1:])]]
      for row in rows
  ]
  counts = [sum(cell.split(' @')[0].endswith('*') for cell in row[1:]) for row in rows]
  verdict = (
      'a later turnaround finds more winning tickets, as in the paper'
      if counts[-1] > counts[0]
      else 'not shown: a later turnaround finds no more winning tickets than the earliest'
  )
  trials = _trials(next(iter(records_by_variant.values())))
  return (
      '**Early turnaround, one-shot (9).** '
      + _table_rows(header, rows, 'turnaround')
      + f' ({trials} trials): {verdict}.'
  )


def pruning_mode_caption(workdir: str) -> str:
  """Figure 10: iterative against one-shot pruning at the sparsest level, and resetting to step 0."""
  points = {name: _sparsest(_cells(records)) for name, records in variant_records(workdir).items()}
  names = list(points)
  at = points[names[0]]
  numbers = ', '.join(f'{style.display_name(name)} {_value(cell)}' for name, cell in points.items())
  iterative, one_shot = (
      next(cell for name, cell in points.items() if key in name) for key in ('iterative', 'one_shot')
  )
  verdict = (
      'iterative pruning keeps its accuracy to higher sparsity, as in the paper'
      if _clear_above(iterative, one_shot)
      else "iterative pruning is above one-shot on the mean, within the trials' spread"
      if iterative.mean > one_shot.mean
      else 'not shown: one-shot pruning does as well as iterative'
  )
  return f'**Iterative against one-shot (10).** At {_percent(at.fraction_remaining)} of the weights: {numbers} ({at.trials} trials): {verdict}.'


def weight_fate_caption(workdir: str) -> str:
  """Figure 8: mean |w| of the weights one-shot pruning keeps and removes, at the first and last step of
  the first row, and how much of the final mask pruning at the first step would keep."""
  with open(os.path.join(workdir, 'weight_fate_summary.csv')) as file:
    rows = list(csv.DictReader(file))
  first_row = rows[0]['row']
  mine = [row for row in rows if row['row'] == first_row]
  start, end = mine[0], mine[-1]
  grows = float(end['mean_abs_kept']) > float(start['mean_abs_kept']) > float(start['mean_abs_pruned'])
  verdict = (
      'the weights that survive are larger from the start and grow, as the paper observes'
      if grows
      else 'not shown: the surviving weights are not larger from the start and growing'
  )
  return (
      f"**Weights (8).** In {style.display_name(first_row)} (the figure's first row), the weights one-shot pruning keeps at the end have "
      f'mean |w| {float(start["mean_abs_kept"]):.3f} at step {start["step"]} against {float(start["mean_abs_pruned"]):.3f} '
      f'for those it removes, and {float(end["mean_abs_kept"]):.3f} against {float(end["mean_abs_pruned"]):.3f} at step '
      f'{end["step"]}; pruning at step {start["step"]} would keep {100 * float(start["final_mask_overlap"]):.0f}% of '
      f"the final mask there ({_pooled(start.get('trials', '1'))}): {verdict}."
  )


def _pooled(trials: str) -> str:
  return '1 trial' if trials == '1' else f'{trials} trials pooled'


def digits_caption(workdir: str) -> str:
  """The real-digits figure: ticket against random reinitialization and the dense network across levels."""
  records = summaries.load(workdir)
  ticket, reinit = _cells(records), _cells(records, 'reinit')
  at = _sparsest(ticket)
  reinit_at = next(cell for cell in reinit if cell.level == at.level)
  verdict = (
      'the ticket stays above random reinitialization, every trial, as Frankle & Carbin report'
      if _clear_above(at, reinit_at)
      else "not shown: random reinitialization reaches the ticket's range"
  )
  return (
      f"**Real handwritten digits.** On scikit-learn's 8x8 digits, {_winning_levels(ticket)}; at "
      f'{_percent(at.fraction_remaining)} of the weights the ticket reaches {_value(at)}, random reinitialization '
      f'{_value(reinit_at)} (dense network {_value(_dense(records))}, {_trials(records)} trials): {verdict}.'
  )


def blog_caption(workdir: str) -> str:
  """The blog's sum of two: the last level's kept weights and test RMSE, ticket against its controls."""
  records = summaries.load(workdir)
  ticket, reinit, permuted = (_cells(records, branch) for branch in ('ticket', 'reinit', 'permuted_reinit'))
  last = max(cell.level for cell in ticket)
  kept = sorted(
      {record['kept_weights'] for record in records if record['level'] == last and record['branch'] == 'ticket'}
  )
  at = next(cell for cell in ticket if cell.level == last)
  reinit_at, permuted_at = (next(cell for cell in cells if cell.level == last) for cells in (reinit, permuted))
  learns = at.maximum < 10 * _dense(records).maximum
  fails = permuted_at.minimum > 100 * at.maximum
  verdict = (
      'the ticket still learns the sum and the permuted random ticket cannot, as in the blog'
      if learns and fails
      else 'not shown: '
      + ('the ticket does not learn the sum' if not learns else 'the permuted random ticket learns too')
  )
  return (
      f'**Blog: sum of two.** At the last level, {", ".join(map(str, kept))} weights remain; test RMSE: ticket '
      f'{at.mean:.3g} [{at.minimum:.3g}, {at.maximum:.3g}], the same mask reinitialized {reinit_at.mean:.3g}, the permuted mask '
      f'reinitialized {permuted_at.mean:.3g} [{permuted_at.minimum:.3g}, {permuted_at.maximum:.3g}] (dense network '
      f'{_dense(records).mean:.3g}, {_trials(records)} trials): {verdict}.'
  )


def _names(names: Sequence[str]) -> str:
  """'SNIP', 'SNIP and GraSP', 'SNIP, GraSP and SynFlow'."""
  return names[0] if len(names) == 1 else ', '.join(names[:-1]) + ' and ' + names[-1]


def init_pruning_caption(workdir: str) -> str:
  """Frankle et al. 2021: IMP with late resetting against the methods of pruning at initialization and
  random pruning, at the sparsest level and how often it is the best."""
  methods = init_pruning_sweep.method_records(variant_records(workdir))
  by_level = {
      name: {cell.level: cell for cell in _cells(records) if cell.level > 0} for name, records in methods.items()
  }
  rewind, *at_init = by_level
  at = _sparsest(list(by_level[rewind].values()))
  sparsest = {name: cells[at.level] for name, cells in by_level.items()}
  numbers = ', '.join(f'{name} {_value(cell)}' for name, cell in sparsest.items())
  reach = [name for name in at_init if not _clear_above(sparsest[rewind], sparsest[name])]
  verdict = (
      'IMP with rewinding is above every method of pruning at initialization, every trial, as in the paper'
      if not reach
      else f"not shown: {_names(reach)} {'reaches' if len(reach) == 1 else 'reach'} the range of IMP with rewinding"
  )
  random_name = init_pruning_sweep.method_label('random_pruning')
  if random_name in at_init:
    scored = [name for name in at_init if name != random_name]
    above = [name for name in scored if _clear_above(sparsest[name], sparsest[random_name])]
    below = [name for name in scored if name not in above]
    if not above:
      verdict += '; none is above random pruning in every trial'
    else:
      verdict += f"; {_names(above)} {'is' if len(above) == 1 else 'are'} above random pruning, every trial"
      verdict += f", {_names(below)} {'is' if len(below) == 1 else 'are'} not" if below else ''
  levels = sorted(by_level[rewind])
  best = sum(all(by_level[rewind][level].mean > by_level[name][level].mean for name in at_init) for level in levels)
  return (
      f'**Pruning at initialization (Frankle et al. 2021).** At {_percent(at.fraction_remaining)} of the weights: '
      f'{numbers} (dense network {_value(_dense(methods[rewind]))}, {at.trials} trials): {verdict}. IMP with '
      f'rewinding has the best mean at {best} of {len(levels)} levels.'
  )


CAPTIONS: dict[str, Callable[[str], str]] = {
    'blog': blog_caption,
    'fig01': snip_caption,
    'fig02': learning_rate_caption,
    'late_reset': lambda workdir: late_reset_caption(workdir) + '\n\n' + stability_caption(workdir),
    'fig05': one_shot_late_reset_caption,
    'fig07': turnaround_caption,
    'fig09': one_shot_turnaround_caption,
    'fig10': pruning_mode_caption,
    'fig08': weight_fate_caption,
    'digits': digits_caption,
    'missing_the_mark': init_pruning_caption,
}

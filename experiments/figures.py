"""Shared pieces of the figure commands (learning_rate_sweep, turnaround_sweep, weight_fate): variants of
one config validated together and run as one sweep, accuracy-vs-sparsity plots with one colour per
variant, and tables that star winning tickets."""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags
import numpy as np
from matplotlib import figure as figure_lib
from matplotlib import lines as lines_lib
from matplotlib import ticker

from lth_jax import config as config_lib
from lth_jax.config import lengths
from lth_jax.reporting import style
from lth_jax.reporting import summaries
from lth_jax import results as results_lib
from lth_jax.search import experiment
from experiments import common

BRANCH_LINESTYLES = {'ticket': '-', 'reinit': '--'}  # the ticket solid, random reinitialization dashed


def set_point(config: ml_collections.ConfigDict, section: str, step_field: str, steps: int) -> None:
  """Sets a point in training given in steps (e.g. pruning.rewind_step) and clears its epochs twin, so
  that a config written in epochs can be given a step."""
  epoch_field = next(epochs for sec, field, epochs in lengths.EPOCH_TWINS if (sec, field) == (section, step_field))
  config[section][step_field] = steps
  config[section][epoch_field] = 0.0


def define_config_flags(trials_per: str | None = None) -> None:
  """--quick and --config, as every figure command takes them, and --trials (per `trials_per`, e.g.
  'variant') when given; call from the command's `_define_flags`."""
  if trials_per is not None:
    flags.DEFINE_integer('trials', None, f"Trials per {trials_per} (default: the config's own; embedded: 1).")
  flags.DEFINE_bool('quick', False, 'A smoke-test-sized run of the embedded config (CPU, about a minute).')
  config_flags.DEFINE_config_file('config', None, 'Optional config file (default: the embedded one).')


def base_config(
    config: ml_collections.ConfigDict | None, quick: bool, trials: int | None, command: str
) -> ml_collections.ConfigDict:
  """The config a figure command starts from: `--config`'s (a copy: variants are derived from it), or
  the embedded one with one trial (`quick`: smaller). `--quick` with `--config` is a usage error
  (override the config's fields instead)."""
  del command  # (the usage error names the flags, the same for every command)
  return common.base_config(config, quick, trials, embedded_trials=(1, 1))


def start(
    command: str, config: ml_collections.ConfigDict | None, quick: bool, trials: int | None
) -> tuple[ml_collections.ConfigDict, experiment.Experiment]:
  """The base config of a figure command (`base_config`, shrunk by `quick_config` when `quick`) and
  its validated Experiment (resolved config, training length); exits naming the problem if invalid.
  Quiets checkpointing chatter (`common.quiet_logging`)."""
  common.quiet_logging()
  base = base_config(config, quick, trials, command)
  if quick:
    quick_config(base)
  return base, common.prepare_all(command, {'config': base})['config']


def quick_config(config: ml_collections.ConfigDict) -> None:
  """--quick of the figure commands: LeNet-300-100 on MNIST-1D for 1000 steps, six levels of 40% (to
  about 5% of the weights; one-shot: the same sparsities in one go)."""
  config.model.hidden_sizes = (300, 100)
  config.training.num_steps = 1000
  config.training.eval_every = 250
  config.pruning.fraction = 0.4
  config.pruning.levels = 6


def default_reset_step(spec: config_lib.RunSpec, total_steps: int) -> int:
  """The late-reset step a figure uses unless told: the config's own rewind step (`spec`: resolved, in
  steps), else 1/30 of training (the paper resets at 1.4 epochs: 1-2% of CIFAR-10 training)."""
  return spec.pruning.rewind_step or max(1, round(total_steps / 30))


def parse_steps(values: Sequence[str], flag: str) -> list[int]:
  """Integers of a list flag, in the given order; a usage error naming the flag for anything else or
  for a repeated value."""
  steps = []
  for value in values:
    try:
      steps.append(int(value))
    except ValueError:
      raise app.UsageError(f'--{flag}={",".join(values)}: {value!r} is not a whole number of steps') from None
  repeated = sorted({step for step in steps if steps.count(step) > 1})
  if repeated:
    raise app.UsageError(f'--{flag}={",".join(values)}: {", ".join(map(str, repeated))} given more than once')
  if any(step < 0 for step in steps):
    raise app.UsageError(f'--{flag}={",".join(values)}: steps must be non-negative')
  return steps


def variant_copies(
    base: ml_collections.ConfigDict, names: Sequence[str], known: Sequence[str]
) -> dict[str, ml_collections.ConfigDict]:
  """A copy of `base` per variant name, training the 'reinit' branch beside the ticket; a usage error
  naming the variants not in `known` (or none given)."""
  unknown = [name for name in names if name not in known]
  if unknown or not names:
    raise app.UsageError(f'--variants: {", ".join(unknown) or "none given"}; choose from {", ".join(known)}')
  copies = {}
  for name in names:
    copies[name] = copy.deepcopy(base)
    copies[name].branches = ('reinit',)
  return copies


def run_variants(
    base: ml_collections.ConfigDict, configs: Mapping[str, ml_collections.ConfigDict], workdir: str, command: str
) -> dict[str, list[dict[str, Any]]]:
  """Runs (or resumes) the variants as one sweep of `base` in `workdir` (`common.run_sweep`: a shared
  dense run per trial for the variants whose level 0 is the same, each variant's lottery workdir in
  WORKDIR/variants/<name>); returns their records by name. Before anything trains, every variant's
  config is validated and the workdir's sweep checked: a variant of the same name with another config
  there exits naming it and the fields it changes."""
  common.prepare_all(command, configs)
  return {name: run.records for name, run in common.run_sweep(command, base, configs, workdir).items()}


def _sparsity_axis(axes: Any, fractions: Sequence[float]) -> None:
  """A log x axis of percent of weights remaining, decreasing to the right, ticked at the fractions."""
  fractions = sorted({round(fraction, 12) for fraction in fractions}, reverse=True)
  ticks = [fractions[i] for i in sorted({round(i) for i in np.linspace(0, len(fractions) - 1, min(len(fractions), 8))})]
  axes.set_xscale('log')
  axes.set_xlim(fractions[0] * 1.15, fractions[-1] / 1.15)
  axes.xaxis.set_major_locator(ticker.FixedLocator(ticks))
  axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: style.percent(value)))
  axes.xaxis.set_minor_locator(ticker.NullLocator())
  axes.set_xlabel(style.PERCENT_REMAINING)
  axes.grid(True, which='major', alpha=0.3)


def plot_variants(
    records_by_variant: Mapping[str, Sequence[dict[str, Any]]],
    title: str,
    branches: Sequence[str] = ('ticket', 'reinit'),
    path: str | None = None,
) -> figure_lib.Figure:
  """Test metric against fraction of weights remaining, one colour per variant, one line style per
  branch (ticket solid, random reinitialization dashed), at the mean over trials with min-max error
  bars when there are several; each line's gid is 'variant/branch'. The dense network (level 0, mean
  over trials) is a thin dashed horizontal line (`_plot_dense`). `title` (it names the model and
  dataset) gets the trials below it; the legend is outside the axes. Saved at `path` when given."""
  figure = figure_lib.Figure(figsize=(10, 4.8), layout='constrained')
  axes = figure.add_subplot()
  fractions, metric, trials = [], 'test_accuracy', 1
  for index, (variant, records) in enumerate(records_by_variant.items()):
    summary = summaries.sparsity_summary(records)
    metric = results_lib.test_metric_name(records)
    for branch in branches:
      points = summary.get(branch, [])
      if not points:
        continue
      trials = max(trials, *(point.trials for point in points))
      means = np.array([point.mean for point in points])
      errors = np.clip([[p.mean - p.minimum for p in points], [p.maximum - p.mean for p in points]], 0, None)
      container = axes.errorbar(
          [point.fraction_remaining for point in points],
          means,
          yerr=errors if max(point.trials for point in points) > 1 else None,
          color=f'C{index}',
          linestyle=BRANCH_LINESTYLES.get(branch, ':'),
          marker='o' if branch == 'ticket' else 's',
          markersize=3.5,
          capsize=2.5,
          linewidth=1.5,
      )
      container.lines[0].set_gid(f'{variant}/{branch}')  # the data line (not its error-bar caps)
      fractions.extend(point.fraction_remaining for point in points)
  if not fractions:
    raise ValueError(f'no records of {", ".join(branches)} to plot')
  _sparsity_axis(axes, fractions)
  dense = _plot_dense(axes, records_by_variant, metric)
  axes.set_ylabel(style.display_name(metric) + (' (lower is better)' if metric == 'test_rmse' else ''))
  axes.set_title(f'{title}\n({style.trials_note(trials)})', fontsize=style.TITLE_FONTSIZE)
  style.legend_outside(axes, *_variant_legend(list(records_by_variant), branches, dense))
  if path is not None:
    style.save_png(figure, path)
  return figure


def _dense_means(records_by_variant: Mapping[str, Sequence[dict[str, Any]]], metric: str) -> dict[str, float]:
  """Each variant's dense network: its level-0 ticket's mean `metric` over trials (variants without one left out)."""
  means = {}
  for variant, records in records_by_variant.items():
    values = [r[metric] for r in summaries.usable(records) if r['level'] == 0 and r['branch'] == 'ticket']
    if values:
      means[variant] = float(np.mean(values))
  return means


def _plot_dense(axes: Any, records_by_variant: Mapping[str, Sequence[dict[str, Any]]], metric: str) -> str | None:
  """The dense network as a thin dashed horizontal line: one grey line (gid 'dense') when every
  variant's is the same (one shared dense run), else one per variant in its colour (gid 'variant/dense').
  Returns the legend's label of the line(s), None when no variant has a dense network."""
  means = _dense_means(records_by_variant, metric)
  if not means:
    return None
  first = next(iter(means.values()))
  if all(mean == first for mean in means.values()):
    axes.axhline(first, color='0.4', linestyle='--', linewidth=1, gid='dense')
    return f'{style.display_name("dense")} ({first:.4g})'
  for index, variant in enumerate(records_by_variant):
    if variant in means:
      axes.axhline(means[variant], color=f'C{index}', linestyle='--', linewidth=0.9, alpha=0.7, gid=f'{variant}/dense')
  return f"{style.display_name('dense')} (each variant's colour)"


def _variant_legend(variants: Sequence[str], branches: Sequence[str], dense: str | None) -> tuple[list[Any], list[str]]:
  """Handles and labels of `plot_variants`' legend: one colour per variant, then each branch's line
  style (when there are several) and the dense network's (labelled `dense`, when drawn)."""
  handles: list[Any] = [lines_lib.Line2D([], [], color=f'C{index}', linewidth=3) for index in range(len(variants))]
  labels = list(variants)
  if len(branches) > 1:
    handles += [lines_lib.Line2D([], [], color='k', linestyle=BRANCH_LINESTYLES.get(b, ':')) for b in branches]
    labels += [style.display_name(branch) for branch in branches]
  if dense is not None:
    handles.append(lines_lib.Line2D([], [], color='0.4', linestyle='--', linewidth=1))
    labels.append(dense)
  return handles, labels


@dataclasses.dataclass(frozen=True)
class TableCell:
  """One (variant, branch, level): its test metric over trials and whether it is a winning ticket."""

  variant: str
  branch: str
  metric: str  # test_accuracy, or test_rmse (lower is better)
  level: int
  fraction_remaining: float
  mean: float
  std: float
  minimum: float
  maximum: float
  trials: int
  winning: bool  # every trial at least the best trial of the variant's dense network (`summaries.winning`)


def table_cells(records_by_variant: Mapping[str, Sequence[dict[str, Any]]], branch: str = 'ticket') -> list[TableCell]:
  """The cells of one branch for every variant and level; a cell is a winning ticket when its trials'
  spread is clear of its own variant's dense network's (`summaries.winning`: every trial at least the
  best dense trial)."""
  cells = []
  for variant, records in records_by_variant.items():
    records = summaries.usable(records)
    metric = results_lib.test_metric_name(records)
    dense_values = [record[metric] for record in records if record['branch'] == 'ticket' and record['level'] == 0]
    selected = [record for record in records if record['branch'] == branch]
    for level in sorted({record['level'] for record in selected}):
      at_level = [record for record in selected if record['level'] == level]
      values = np.array([record[metric] for record in at_level], np.float64)
      mean = float(values.mean())
      better = summaries.winning(values.tolist(), dense_values, metric, results_lib.higher_is_better(at_level[0]))
      cells.append(
          TableCell(
              variant=variant,
              branch=branch,
              metric=metric,
              level=level,
              fraction_remaining=float(np.mean([record['fraction_remaining'] for record in at_level])),
              mean=mean,
              std=float(values.std()),
              minimum=float(values.min()),
              maximum=float(values.max()),
              trials=len(values),
              winning=bool(level > 0 and better),
          )
      )
  return cells


def winning_table(cells: Sequence[TableCell], row_label: str) -> tuple[list[str], list[list[str]]]:
  """Header and rows of a variant (rows) x fraction remaining (columns) table of the cells' test
  metric: mean (± std over trials when there are several), '*' on winning tickets."""
  levels = sorted({cell.level for cell in cells})
  fraction = {cell.level: cell.fraction_remaining for cell in cells}
  header = [row_label] + ['dense' if level == 0 else f'{100 * fraction[level]:.1f}%' for level in levels]
  rows = []
  for variant in dict.fromkeys(cell.variant for cell in cells):
    by_level = {cell.level: cell for cell in cells if cell.variant == variant}
    row = [variant]
    for level in levels:
      cell = by_level.get(level)
      if cell is None:
        row.append('')
        continue
      number = '{:.4f}' if cell.metric == 'test_accuracy' else '{:.3g}'  # an RMSE may be 1e-7
      spread = '±' + number.format(cell.std) if cell.trials > 1 else ''
      row.append(f'{number.format(cell.mean)}{spread}{"*" if cell.winning else ""}')
    rows.append(row)
  return header, rows


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """A table as aligned text columns."""
  widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
  return '\n'.join('  '.join(f'{str(value):>{width}}' for value, width in zip(row, widths)) for row in [header, *rows])


def report_table(path: str, header: Sequence[str], rows: Sequence[Sequence[Any]], heading: str) -> None:
  """Writes a table as CSV at `path` (atomically) and prints it under `heading`."""
  common.write_csv(path, header, rows)
  print(f'\n{heading}')
  print(format_table(header, rows))


def write_cells_csv(path: str, cells: Sequence[TableCell], row_label: str) -> None:
  """Every cell as one CSV row with its numbers (mean, std, min, max over trials, winning)."""
  common.write_csv(
      path,
      [row_label, 'branch', 'level', 'fraction_remaining', 'mean', 'std', 'min', 'max', 'trials', 'winning'],
      [
          [
              cell.variant,
              cell.branch,
              cell.level,
              f'{cell.fraction_remaining:.6f}',
              f'{cell.mean:.6f}',
              f'{cell.std:.6f}',
              f'{cell.minimum:.6f}',
              f'{cell.maximum:.6f}',
              cell.trials,
              int(cell.winning),
          ]
          for cell in cells
      ],
  )


def report_variants(
    records: Mapping[str, Sequence[dict[str, Any]]],
    labels: Mapping[str, str],
    workdir: str,
    stem: str,
    title: str,
) -> None:
  """The outputs of a sweep over variants with a 'reinit' branch: WORKDIR/<stem>.png (`plot_variants`,
  legend `labels`), <stem>_table.csv (ticket, winning tickets starred; printed with reinit's table)
  and <stem>_cells.csv (every number)."""
  path = os.path.join(workdir, f'{stem}.png')
  plot_variants({labels[name]: records[name] for name in records}, title, path=path)
  cells, reinit = table_cells(records), table_cells(records, 'reinit')
  write_cells_csv(os.path.join(workdir, f'{stem}_cells.csv'), cells + reinit, 'variant')
  report_table(
      os.path.join(workdir, f'{stem}_table.csv'),
      *winning_table(cells, 'variant'),
      "ticket test metric by variant and weights remaining (* = every trial at least its dense network's best)",
  )
  print('\nrandom reinitialization')
  print(format_table(*winning_table(reinit, 'variant')))
  print(f'\nwrote {path}')

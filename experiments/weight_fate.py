"""The weights of a dense run at several steps, split by their fate under one-shot magnitude pruning at
the end of training (Figure 8 of "The Lottery Ticket Hypothesis at Scale").

Trains the dense network of every trial of the config (its seeds: the same W_0 and batch order as level 0
of a lottery run) as a lottery run of level 0 alone (`lth_jax.run` with `pruning.levels=0`, in
WORKDIR/dense), keeping its weights at --snapshot_steps; prunes the final weights in one shot to
--fraction_remaining with the config's pruning rules (scope, per-layer fractions, excluded layers: the
mask a one_shot lottery run prunes, from the weights at `pruning.turnaround_step` when the config sets
one); then draws, for every snapshot (columns), the histogram of the prunable weights split into those
eventually pruned (light) and those that remain (dark), every trial's weights pooled, each split by its
own mask. Rows: one per prunable layer when there are at
most --max_layer_rows of them (e.g. LeNet), else every prunable weight pooled (--rows=layers|pooled to
choose).

    python -m experiments.weight_fate --workdir=/tmp/fig8 --quick                       # embedded, CPU
    python -m experiments.weight_fate --workdir=runs/fig8 --config=configs/resnet18_cifar10.py \\
        --config.dataset.data_dir=DIR --fraction_remaining=0.33        # 67% pruned, as the paper

The dense runs are a lottery workdir: checkpointed every `checkpointing.every_steps` and on SIGTERM,
continued by a re-run, and refused (before training) by a re-run of a config that trains other weights.
Their snapshots are kept in WORKDIR/dense/checkpoints/trial_<t>/snapshots/step_<k>: a re-run of the same
config reuses them and trains nothing (more trials train only the new ones) (the pruning flags and config fields can change; a snapshot step
the run did not keep needs another --workdir). Writes weight_fate.png, weight_fate_histograms.csv (every
bin's pruned and kept counts) and weight_fate_summary.csv (per step and row: counts, mean |w| of each
part, and how much of the final mask one-shot pruning at that step would already keep); prints the
summary.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np
from matplotlib import figure as figure_lib

import lth_jax
from lth_jax import config as config_lib
from lth_jax import masks as masks_lib
from lth_jax import pruning
from lth_jax import results as results_lib
from lth_jax.reporting import style
from lth_jax.search import sweep_plan
from lth_jax.search import workdir as workdir_lib
from lth_jax.training import checkpoints
from lth_jax.training import run_state
from experiments import common
from experiments import figures

FLAGS = flags.FLAGS

DEFAULT_FRACTIONS = (0.0, 1 / 60, 1 / 15, 1 / 3, 2 / 3, 1.0)  # of training, when --snapshot_steps is not given
ROW_MODES = ('auto', 'layers', 'pooled')
POOLED = 'all prunable weights'
PRUNED_COLOUR, KEPT_COLOUR = '#9ecae1', '#08306b'  # light: eventually pruned; dark: remains
DENSE_DIRECTORY = 'dense'  # WORKDIR/dense: the dense run, a lottery workdir of level 0 alone


def default_snapshot_steps(total_steps: int) -> list[int]:
  """Steps at DEFAULT_FRACTIONS of training."""
  return sorted({round(fraction * total_steps) for fraction in DEFAULT_FRACTIONS})


def one_shot_mask(params: Any, prunable: Any, plan: config_lib.PruningPlan, fraction_remaining: float) -> Any:
  """The keep mask of one-shot magnitude pruning of `params` to `fraction_remaining` of the weights
  pruned at the config's per-level fraction p: the pruning of level L = log(fraction) / log(1 - p) of a
  one_shot lottery run (exactly its mask when fraction_remaining = (1 - p)^L), with its scope, per-layer
  fractions (compounded over the same L) and per-layer minimum."""
  if not 0.0 < fraction_remaining < 1.0:
    raise ValueError(f'fraction_remaining={fraction_remaining}: must be strictly between 0 and 1')
  level = math.log(fraction_remaining) / math.log(1.0 - plan.fraction)
  level_fraction, layer_fractions = pruning.one_shot_fractions(plan.fraction, plan.layer_fractions, level)
  ones = jax.tree_util.tree_map(lambda leaf: np.ones(np.shape(leaf), bool), params)
  return pruning.prune(
      pruning.magnitude_scores(params),
      ones,
      prunable,
      level_fraction,
      plan.scope,
      layer_fractions,
      plan.min_weights_per_layer,
  )


def _prunable_leaves(tree: Any, prunable: Any) -> dict[str, np.ndarray]:
  """{layer (module path): the prunable leaf, flattened}, in tree order."""
  leaves = {}
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  for (path, leaf), is_prunable in zip(flat, jax.tree_util.tree_leaves(prunable)):
    if is_prunable:
      leaves[masks_lib.leaf_name(masks_lib.path_to_names(path))] = np.asarray(leaf).reshape(-1)
  return leaves


def row_groups(keep_mask: Any, prunable: Any, rows: str, max_layer_rows: int = 4) -> list[str]:
  """The histogram rows: the prunable layers' names ('layers', or 'auto' with at most `max_layer_rows`
  of them), else one row of every prunable weight pooled."""
  layers = list(_prunable_leaves(keep_mask, prunable))
  if rows == 'layers' or (rows == 'auto' and len(layers) <= max_layer_rows):
    return layers
  return [POOLED]


@dataclasses.dataclass(frozen=True)
class HistogramCell:
  """The weights of one row (a layer, or every prunable weight) at one step, in bins shared by the row."""

  step: int
  row: str
  edges: np.ndarray  # bins + 1 edges
  pruned: np.ndarray  # per bin: weights that one-shot pruning at the end removes
  kept: np.ndarray  # per bin: weights that remain
  mean_abs_pruned: float
  mean_abs_kept: float


def weight_histograms(
    snapshots: Sequence[Mapping[int, Any]],
    keep_masks: Sequence[Any],
    prunable: Any,
    rows: Sequence[str],
    bins: int = 50,
) -> list[HistogramCell]:
  """Per row and snapshot step, the histograms of the prunable weights the mask removes and keeps, the
  weights of every trial pooled (`snapshots[t]`: trial t's params by step, split by its own mask
  `keep_masks[t]`). A row is a layer name (see `row_groups`) or POOLED; each row's bins span its weights
  at every step."""
  keeps = [_prunable_leaves(keep_mask, prunable) for keep_mask in keep_masks]
  values = [{step: _prunable_leaves(params, prunable) for step, params in trial.items()} for trial in snapshots]

  def select(step: int, row: str) -> tuple[np.ndarray, np.ndarray]:
    names = list(keeps[0]) if row == POOLED else [row]
    weights = np.concatenate([trial[step][name] for trial in values for name in names]).astype(np.float64)
    kept = np.concatenate([keep[name] for keep in keeps for name in names]).astype(bool)
    return weights, kept

  steps = sorted(snapshots[0])
  cells = []
  for row in rows:
    edges = np.histogram_bin_edges(np.concatenate([select(step, row)[0] for step in steps]), bins=bins)
    for step in steps:
      weights, kept = select(step, row)
      cells.append(
          HistogramCell(
              step=step,
              row=row,
              edges=edges,
              pruned=np.histogram(weights[~kept], edges)[0],
              kept=np.histogram(weights[kept], edges)[0],
              mean_abs_pruned=float(np.abs(weights[~kept]).mean()) if (~kept).any() else float('nan'),
              mean_abs_kept=float(np.abs(weights[kept]).mean()) if kept.any() else float('nan'),
          )
      )
  return cells


def plot_weight_fate(cells: Sequence[HistogramCell], title: str, path: str | None = None) -> figure_lib.Figure:
  """A grid of histograms, rows by `HistogramCell.row` and columns by step: eventually pruned weights
  light, remaining weights dark (stacked on them); one legend below the grid. `title` should name the
  model, dataset, trial and sparsity."""
  rows = list(dict.fromkeys(cell.row for cell in cells))
  steps = sorted({cell.step for cell in cells})
  figure = figure_lib.Figure(figsize=(1.9 * len(steps) + 0.8, 1.8 * len(rows) + 1.4), layout='constrained')
  grid = figure.subplots(len(rows), len(steps), squeeze=False, sharex='row')
  for cell in cells:
    axes = grid[rows.index(cell.row)][steps.index(cell.step)]
    widths = np.diff(cell.edges)
    axes.bar(cell.edges[:-1], cell.pruned, widths, align='edge', color=PRUNED_COLOUR, label='eventually pruned')
    axes.bar(cell.edges[:-1], cell.kept, widths, bottom=cell.pruned, align='edge', color=KEPT_COLOUR, label='remains')
    axes.tick_params(labelsize=8)
    axes.set_yticks([])
    if cell.row == rows[0]:
      axes.set_title(f'step {cell.step}', fontsize=10)
    if cell.step == steps[0]:
      axes.set_ylabel(f'{cell.row.replace("/kernel", "")}\nnumber of weights', fontsize=9)
    if cell.row == rows[-1]:
      axes.set_xlabel('weight value', fontsize=9)
  figure.legend(
      *grid[0][0].get_legend_handles_labels(), loc='outside lower center', ncol=2, fontsize=style.LEGEND_FONTSIZE
  )
  figure.suptitle(title, fontsize=style.TITLE_FONTSIZE)
  if path is not None:
    style.save_png(figure, path)
  return figure


def dense_run_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config of the dense runs: `config`'s level 0 alone, every trial (`sweep_plan.dense_config`: no
  pruning levels, no branches, and of the pruning section only which parameters are prunable, so that
  changing how the mask is drawn does not make them other runs)."""
  return sweep_plan.dense_config(config)


def train_snapshots(config: ml_collections.ConfigDict, steps: Sequence[int], workdir: str) -> list[dict[int, Any]]:
  """Trains (or continues) every trial's dense network in WORKDIR/dense as a lottery run's level 0 trains
  (`lth_jax.run` of `dense_run_config`, keeping its weights at `steps`), or reuses those recorded there;
  returns each trial's params at `steps`. Exits naming the problem when the workdir holds dense runs of
  another config, when stopped by SIGTERM (a re-run continues), or when a finished run kept no weights at
  one of `steps`."""
  run_dir = os.path.join(workdir, DENSE_DIRECTORY)
  results_path = os.path.join(run_dir, results_lib.RESULTS_FILE)
  trials = range(int(config.trials))
  recorded = (
      {record['trial'] for record in results_lib.read_records(results_path)} if os.path.isfile(results_path) else set()
  )
  try:
    records = lth_jax.run(dense_run_config(config), run_dir, keep_snapshots=steps).records
  except (lth_jax.ConfigError, run_state.Preempted) as error:
    raise SystemExit(f'weight_fate: {error}') from None
  for record in records:
    if record['level'] == 0 and record['trial'] in trials and results_lib.is_diverged(record):
      raise SystemExit(f'weight_fate: trial {record["trial"]} of the dense runs in {run_dir} diverged; nothing to draw')
  for trial in trials:
    _check_snapshots(run_dir, trial, steps)
  if set(trials) <= recorded:
    print(f'weight_fate: reusing the snapshots in {run_dir} (nothing to train)')
  else:
    metric = results_lib.test_metric_name(records)
    values = [record[metric] for record in records if record['level'] == 0 and record['trial'] in trials]
    print(f'dense runs: {metric} {np.mean(values):.4f} (mean of {len(values)}) after {records[0]["steps"]} steps')
  return [
      {step: checkpoints.restore_tree(workdir_lib.snapshot_directory(run_dir, trial, step))[0] for step in steps}
      for trial in trials
  ]


def _check_snapshots(run_dir: str, trial: int, steps: Sequence[int]) -> None:
  """Exits naming the steps of `steps` at which `trial`'s dense run kept no weights, and those it kept."""
  snapshots = os.path.dirname(workdir_lib.snapshot_directory(run_dir, trial, 0))
  missing = [step for step in steps if not os.path.isdir(workdir_lib.snapshot_directory(run_dir, trial, step))]
  if missing:
    names = os.listdir(snapshots) if os.path.isdir(snapshots) else []
    kept = sorted(int(name[len('step_') :]) for name in names if name[len('step_') :].isdigit())
    raise SystemExit(
        f'weight_fate: the dense run in {run_dir} kept no weights at step(s) {", ".join(map(str, missing))} '
        f'(it kept {", ".join(map(str, kept)) or "none"}); use those steps, another --workdir, or delete '
        f'{run_dir} to train it again'
    )


def mask_agreement(early_mask: Any, final_mask: Any, prunable: Any, rows: Sequence[str]) -> dict[str, float]:
  """Per row (a layer, or POOLED): the fraction of the weights `final_mask` keeps that `early_mask`
  keeps too."""
  early, final = _prunable_leaves(early_mask, prunable), _prunable_leaves(final_mask, prunable)
  agreement = {}
  for row in rows:
    names = list(final) if row == POOLED else [row]
    kept = sum(int(final[name].sum()) for name in names)
    both = sum(int((early[name] & final[name]).sum()) for name in names)
    agreement[row] = both / kept if kept else float('nan')
  return agreement


def summary_rows(
    cells: Sequence[HistogramCell], agreement: Mapping[int, Mapping[str, float]], trials: int = 1
) -> tuple[list[str], list[list[str]]]:
  """Header and rows of the per-(step, row) summary of `trials` trials pooled; `agreement`: step -> row ->
  `mask_agreement` (the mean over trials)."""
  header = ['step', 'row', 'pruned', 'kept', 'mean_abs_pruned', 'mean_abs_kept', 'final_mask_overlap', 'trials']
  rows = [
      [
          str(cell.step),
          cell.row,
          str(int(cell.pruned.sum())),
          str(int(cell.kept.sum())),
          f'{cell.mean_abs_pruned:.5f}',
          f'{cell.mean_abs_kept:.5f}',
          f'{agreement[cell.step][cell.row]:.4f}',
          str(trials),
      ]
      for cell in cells
  ]
  return header, rows


def write_histograms_csv(path: str, cells: Sequence[HistogramCell]) -> None:
  """Every bin of every cell as one CSV row: step, row, the bin's edges and its pruned and kept counts."""
  common.write_csv(
      path,
      ['step', 'row', 'bin_left', 'bin_right', 'pruned', 'kept'],
      [
          [cell.step, cell.row, f'{left:.6g}', f'{right:.6g}', int(pruned), int(kept)]
          for cell in cells
          for left, right, pruned, kept in zip(cell.edges[:-1], cell.edges[1:], cell.pruned, cell.kept)
      ],
  )


def _define_flags() -> None:
  """The command-line flags (defined only when run as a program, so that the figure commands can be
  imported together, e.g. by the tests)."""
  flags.DEFINE_string('workdir', None, 'Output folder.', required=True)
  flags.DEFINE_list(
      'snapshot_steps', None, 'Steps whose weights are drawn (default: 0, 1/60, 1/15, 1/3, 2/3 and all of training).'
  )
  flags.DEFINE_float(
      'fraction_remaining', 0.33, 'Fraction of the weights one-shot pruning keeps (the paper: 0.33, 67% pruned).'
  )
  flags.DEFINE_enum('rows', 'auto', ROW_MODES, 'One row per prunable layer, or every prunable weight pooled.')
  flags.DEFINE_integer('max_layer_rows', 4, '--rows=auto: per layer up to this many layers.')
  flags.DEFINE_integer('bins', 50, 'Histogram bins per row.')
  figures.define_config_flags()


def main(argv):
  del argv
  if not 0.0 < FLAGS.fraction_remaining < 1.0:
    raise app.UsageError(f'--fraction_remaining={FLAGS.fraction_remaining}: must be strictly between 0 and 1')
  if FLAGS.bins < 1:
    raise app.UsageError(f'--bins={FLAGS.bins}: must be positive')
  config, experiment = figures.start('weight_fate', FLAGS.config, FLAGS.quick, None)
  if experiment.spec.transfer.ticket:
    raise app.UsageError(
        f'--config sets transfer.ticket={experiment.spec.transfer.ticket!r}: weight_fate trains a dense network '
        'from its initialization, so leave transfer.ticket unset'
    )
  total_steps = experiment.total_steps
  steps = (
      figures.parse_steps(FLAGS.snapshot_steps, 'snapshot_steps')
      if FLAGS.snapshot_steps
      else default_snapshot_steps(total_steps)
  )
  late = [step for step in steps if step > total_steps]
  if late:
    raise app.UsageError(
        f'--snapshot_steps: {", ".join(map(str, late))} past the end of training ({total_steps} steps)'
    )
  pruning_step = experiment.spec.pruning.turnaround_step or total_steps
  workdir = FLAGS.workdir
  snapshots = train_snapshots(config, sorted(set(steps) | {pruning_step}), workdir)
  draw(experiment.spec, snapshots, steps, pruning_step, workdir)


def mean_agreement(
    params: Sequence[Any],
    keep_masks: Sequence[Any],
    prunable: Any,
    plan: config_lib.PruningPlan,
    fraction: float,
    rows: Sequence[str],
) -> dict[str, float]:
  """Per row, the mean over trials of `mask_agreement` between one-shot pruning of each trial's `params`
  and its final mask."""
  shares = [
      mask_agreement(one_shot_mask(weights, prunable, plan, fraction), keep_mask, prunable, rows)
      for weights, keep_mask in zip(params, keep_masks)
  ]
  return {row: float(np.mean([share[row] for share in shares])) for row in rows}


def draw(
    spec: config_lib.RunSpec,
    snapshots: Sequence[Mapping[int, Any]],
    steps: Sequence[int],
    pruning_step: int,
    workdir: str,
) -> None:
  """The figure, histograms CSV and summary of every trial's weights (`snapshots[t]`: trial t's params
  by step), each split by its own one-shot mask from the weights at `pruning_step`, pooled."""
  plan, fraction = spec.pruning, FLAGS.fraction_remaining
  prunable = plan.prunable(snapshots[0][pruning_step])
  keep_masks = [one_shot_mask(trial[pruning_step], prunable, plan, fraction) for trial in snapshots]
  density = float(np.mean([masks_lib.density(keep_mask, prunable) for keep_mask in keep_masks]))
  rows = row_groups(keep_masks[0], prunable, FLAGS.rows, FLAGS.max_layer_rows)
  cells = weight_histograms(
      [{step: trial[step] for step in steps} for trial in snapshots], keep_masks, prunable, rows, FLAGS.bins
  )
  agreement = {  # how much of the final mask one-shot pruning at an earlier step would already keep
      step: mean_agreement([trial[step] for trial in snapshots], keep_masks, prunable, plan, fraction, rows)
      for step in steps
  }
  trials = f'{len(snapshots)} trials pooled' if len(snapshots) > 1 else '1 trial'
  plot_weight_fate(
      cells,
      f'Weights by training step, {common.setting(spec)}, {trials}\n'
      f'light: pruned by one-shot pruning at step {pruning_step} to {100 * density:.1f}% of weights remaining; '
      'dark: remaining',
      path=os.path.join(workdir, 'weight_fate.png'),
  )
  write_histograms_csv(os.path.join(workdir, 'weight_fate_histograms.csv'), cells)
  figures.report_table(
      os.path.join(workdir, 'weight_fate_summary.csv'),
      *summary_rows(cells, agreement, len(snapshots)),
      f'one-shot pruning at step {pruning_step} keeps {100 * density:.1f}% of the prunable weights ({trials})',
  )
  print(f'\nwrote {os.path.join(workdir, "weight_fate.png")}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)

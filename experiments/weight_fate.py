"""The weights of a dense run at several steps, split by their fate under one-shot magnitude pruning at
the end of training (Figure 8 of "The Lottery Ticket Hypothesis at Scale").

Trains the dense network of trial 0 of the config (its seeds: the same W_0 and batch order as level 0 of
a lottery run) with the library's Trainer, keeping its weights at --snapshot_steps; prunes the final
weights in one shot to --fraction_remaining with the config's pruning rules (scope, per-layer fractions,
excluded layers: the mask a one_shot lottery run prunes, from the weights at `pruning.turnaround_step`
when the config sets one); then draws, for every snapshot (columns), the histogram of the prunable
weights split into those eventually pruned (light) and those that remain (dark). Rows: one per prunable
layer when there are at most --max_layer_rows of them (e.g. LeNet), else every prunable weight pooled
(--rows=layers|pooled to choose).

    python -m experiments.weight_fate --workdir=/tmp/fig8 --quick                       # embedded, CPU
    python -m experiments.weight_fate --workdir=runs/fig8 --config=configs/resnet18_cifar10.py \\
        --config.dataset.data_dir=DIR --fraction_remaining=0.33        # 67% pruned, as the paper

The dense run trains as a lottery run's level 0 does: checkpointed every `checkpointing.every_steps` and
on SIGTERM under WORKDIR/checkpoints, and continued by a re-run of the same config and snapshot steps.
Writes weight_snapshots.npz (the snapshots; a re-run with a matching config reuses them and trains
nothing), weight_fate.png, weight_fate_histograms.csv (every bin's pruned and kept counts) and
weight_fate_summary.csv (per step and row: counts, mean |w| of each part, and how much of the final mask
one-shot pruning at that step would already keep); prints the summary.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
from flax import traverse_util
import jax
import ml_collections
import numpy as np
from matplotlib import figure as figure_lib

from lth_jax import config as config_lib
from lth_jax.config import compatibility
from lth_jax import masks as masks_lib
from lth_jax import pruning
from lth_jax import results as results_lib
from lth_jax.search import cohorts
from lth_jax.search import experiment as experiment_lib
from lth_jax.search import scalars as scalars_lib
from lth_jax.search import trial as trial_lib
from lth_jax.training import checkpoints
from lth_jax.training import preemption
from lth_jax.training import run_state
from experiments import common
from experiments import figures

FLAGS = flags.FLAGS

SNAPSHOT_FILE = 'weight_snapshots.npz'
DEFAULT_FRACTIONS = (0.0, 1 / 60, 1 / 15, 1 / 3, 2 / 3, 1.0)  # of training, when --snapshot_steps is not given
ROW_MODES = ('auto', 'layers', 'pooled')
POOLED = 'all prunable weights'
PRUNED_COLOUR, KEPT_COLOUR = '#9ecae1', '#08306b'  # light: eventually pruned; dark: remains
# Fields that do not change the dense run's weights (pruning only decides the mask, drawn afterwards).
_NOT_TRAINING = (
    'pruning',
    'branches',
    'checkpointing',
    'report',
    'trials',
    'transfer',
    'dataset.data_dir',
    'parallel.members_per_program',
)


def default_snapshot_steps(total_steps: int) -> list[int]:
  """Steps at DEFAULT_FRACTIONS of training."""
  return sorted({round(fraction * total_steps) for fraction in DEFAULT_FRACTIONS})


def training_identity(resolved: ml_collections.ConfigDict) -> dict[str, Any]:
  """The fields of a resolved config that decide the dense run's weights, as JSON values."""
  identity = compatibility.config_to_json(resolved)
  for field in _NOT_TRAINING:
    *parents, last = field.split('.')
    tree = identity
    for parent in parents:
      tree = tree.get(parent, {})
    tree.pop(last, None)
  return identity


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
    snapshots: Mapping[int, Any], keep_mask: Any, prunable: Any, rows: Sequence[str], bins: int = 50
) -> list[HistogramCell]:
  """Per row and snapshot step, the histograms of the prunable weights the mask removes and keeps.
  A row is a layer name (see `row_groups`) or POOLED; each row's bins span its weights at every step."""
  keep = _prunable_leaves(keep_mask, prunable)
  values = {step: _prunable_leaves(params, prunable) for step, params in snapshots.items()}

  def select(step: int, row: str) -> tuple[np.ndarray, np.ndarray]:
    names = list(keep) if row == POOLED else [row]
    weights = np.concatenate([values[step][name] for name in names]).astype(np.float64)
    kept = np.concatenate([keep[name] for name in names]).astype(bool)
    return weights, kept

  cells = []
  for row in rows:
    everything = np.concatenate([select(step, row)[0] for step in snapshots])
    edges = np.histogram_bin_edges(everything, bins=bins)
    for step in sorted(snapshots):
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
  light, remaining weights dark (stacked on them)."""
  rows = list(dict.fromkeys(cell.row for cell in cells))
  steps = sorted({cell.step for cell in cells})
  figure = figure_lib.Figure(figsize=(2.1 * len(steps) + 0.6, 1.7 * len(rows) + 0.9), layout='constrained')
  grid = figure.subplots(len(rows), len(steps), squeeze=False, sharex='row')
  for cell in cells:
    axes = grid[rows.index(cell.row)][steps.index(cell.step)]
    widths = np.diff(cell.edges)
    axes.bar(cell.edges[:-1], cell.pruned, widths, align='edge', color=PRUNED_COLOUR, label='eventually pruned')
    axes.bar(cell.edges[:-1], cell.kept, widths, bottom=cell.pruned, align='edge', color=KEPT_COLOUR, label='remains')
    axes.tick_params(labelsize=6)
    axes.set_yticks([])
    if cell.row == rows[0]:
      axes.set_title(f'step {cell.step}', fontsize=8)
    if cell.step == steps[0]:
      axes.set_ylabel(cell.row.replace('/kernel', ''), fontsize=7)
  grid[0][-1].legend(fontsize=6, loc='upper right')
  figure.suptitle(title, fontsize=9)
  if path is not None:
    figures.save_png(figure, path)
  return figure


def save_snapshots(path: str, snapshots: Mapping[int, Any], identity: Mapping[str, Any]) -> None:
  """Writes the snapshots (step -> params) and the config identity they belong to as one npz, atomically."""
  arrays = {'identity': np.array(json.dumps(identity, sort_keys=True))}
  for step, params in snapshots.items():
    for key, leaf in traverse_util.flatten_dict(jax.device_get(params), sep='/').items():
      arrays[f'step_{step}/{key}'] = np.asarray(leaf)
  with results_lib.atomic_open(path, 'wb') as file:
    np.savez(file, **arrays)


def load_snapshots(path: str, identity: Mapping[str, Any], steps: Sequence[int]) -> dict[int, Any] | None:
  """The snapshots of `steps` saved at `path`, or None when there is no file; a ValueError naming the
  differences when the file is of another config or lacks a step."""
  if not os.path.exists(path):
    return None
  with np.load(path, allow_pickle=False) as saved:
    stored = json.loads(str(saved['identity']))
    changing, neutral = compatibility.config_differences(stored, dict(identity))
    if changing or neutral:
      raise ValueError(
          f'{path} holds the snapshots of a different config (old -> new):\n  '
          + '\n  '.join(changing + neutral)
          + '\nuse the same config, another --workdir, or delete the file to train again'
      )
    by_step: dict[int, dict[str, np.ndarray]] = {}
    for key in saved.files:
      if key.startswith('step_'):
        step, _, name = key[len('step_') :].partition('/')
        by_step.setdefault(int(step), {})[name] = saved[key]
  missing = sorted(set(steps) - set(by_step))
  if missing:
    raise ValueError(
        f'{path} has no snapshot at step(s) {", ".join(map(str, missing))} (it has {", ".join(map(str, sorted(by_step)))}); '
        'use those steps, another --workdir, or delete the file to train again'
    )
  return {step: traverse_util.unflatten_dict(by_step[step], sep='/') for step in steps}


DENSE_RUN = (0, 'dense')  # (trial, branch) of the dense run, naming its checkpoint folder
RUN_CONFIG_FILE = 'dense_run.json'  # the identity and snapshot steps of the dense run in progress


def claim_dense_run(workdir: str, identity: Mapping[str, Any], steps: Sequence[int]) -> None:
  """Records which dense run WORKDIR's checkpoints belong to; a run in progress there of another config
  or other snapshot steps exits naming the differences (it is never resumed as this one)."""
  wanted = {**identity, 'snapshot_steps': sorted(int(step) for step in steps)}
  path = os.path.join(workdir, RUN_CONFIG_FILE)
  if os.path.isdir(cohorts.running_directory(workdir, 0, [DENSE_RUN])) and os.path.isfile(path):
    with open(path) as file:
      changing, neutral = compatibility.config_differences(json.load(file), wanted)
    if changing or neutral:
      raise SystemExit(
          f'weight_fate: {workdir} holds a dense run in progress of a different config (old -> new):\n  '
          + '\n  '.join(changing + neutral)
          + '\nuse the same config and --snapshot_steps, or another --workdir'
      )
  common.write_text(path, json.dumps(wanted, sort_keys=True))


def train_snapshots(
    experiment: experiment_lib.Experiment, steps: Sequence[int], workdir: str, identity: Mapping[str, Any]
) -> dict[int, Any]:
  """Trains trial 0's dense network as a lottery run's level 0 trains (the library's program runner:
  progress lines, periodic and SIGTERM checkpoints in WORKDIR/checkpoints, resumed by a re-run of the
  same config, see `claim_dense_run`) and returns its params at `steps`."""
  claim_dense_run(workdir, identity, steps)
  init_seed, data_seed = trial_lib.trial_seeds(experiment.spec.seed, 0)
  params0, model_state0 = experiment.trainer().init_variables(init_seed)
  keep_all = jax.tree_util.tree_map(lambda leaf: np.ones(np.shape(leaf), bool), params0)
  settings = dataclasses.replace(cohorts.ProgramSettings.from_spec(experiment.spec), levels=0)
  stop = preemption.StopRequest()
  runner = cohorts.ProgramRunner(workdir, experiment.program_trainer, settings, print, stop, scalars_lib.Scalars(None))
  trial, branch = DENSE_RUN
  member = cohorts.Member(trial, 0, branch, params0, model_state0, keep_all, data_seed, tuple(sorted(steps)))
  stop.install()
  try:
    (result,) = runner.train([member], 0)
  except run_state.Preempted as error:
    raise SystemExit(f'weight_fate: {error}') from None
  finally:
    stop.restore()
  final = result.curve[-1]
  metric = 'test_accuracy' if 'test_accuracy' in final else 'test_rmse'
  print(f'dense run: {metric} {final[metric]:.4f} after {experiment.total_steps} steps')
  return {step: result.snapshots[step][0] for step in steps}


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
    cells: Sequence[HistogramCell], agreement: Mapping[int, Mapping[str, float]]
) -> tuple[list[str], list[list[str]]]:
  """Header and rows of the per-(step, row) summary; `agreement`: step -> row -> `mask_agreement`."""
  header = ['step', 'row', 'pruned', 'kept', 'mean_abs_pruned', 'mean_abs_kept', 'final_mask_overlap']
  rows = [
      [
          str(cell.step),
          cell.row,
          str(int(cell.pruned.sum())),
          str(int(cell.kept.sum())),
          f'{cell.mean_abs_pruned:.5f}',
          f'{cell.mean_abs_kept:.5f}',
          f'{agreement[cell.step][cell.row]:.4f}',
      ]
      for cell in cells
  ]
  return header, rows


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
  resolved = config_lib.resolve_epochs(  # the config with lengths in steps: the dense run's identity
      config_lib.resolve_batch_size(config, experiment.mesh.devices.size), experiment.dataset.num_train
  )
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
  trained_steps = sorted(set(steps) | {pruning_step})
  workdir = FLAGS.workdir
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, SNAPSHOT_FILE)
  identity = training_identity(resolved)
  try:
    snapshots = load_snapshots(path, identity, trained_steps)
  except ValueError as error:
    raise SystemExit(f'weight_fate: {error}') from None
  if snapshots is None:
    snapshots = train_snapshots(experiment, trained_steps, workdir, identity)
    save_snapshots(path, snapshots, identity)
    checkpoints.remove(cohorts.running_directory(workdir, 0, [DENSE_RUN]))  # kept until the snapshots are
  else:
    print(f'weight_fate: reusing the snapshots in {path} (nothing to train)')

  prunable = experiment.prunable(snapshots[pruning_step])
  keep_mask = one_shot_mask(snapshots[pruning_step], prunable, experiment.spec.pruning, FLAGS.fraction_remaining)
  density = masks_lib.density(keep_mask, prunable)
  rows = row_groups(keep_mask, prunable, FLAGS.rows, FLAGS.max_layer_rows)
  cells = weight_histograms({step: snapshots[step] for step in steps}, keep_mask, prunable, rows, FLAGS.bins)
  agreement = {  # how much of the final mask one-shot pruning at an earlier step would already keep
      step: mask_agreement(
          one_shot_mask(snapshots[step], prunable, experiment.spec.pruning, FLAGS.fraction_remaining),
          keep_mask,
          prunable,
          rows,
      )
      for step in steps
  }
  plot_weight_fate(
      cells,
      f'{experiment.spec.model.name} on {experiment.spec.dataset.name}: weights by step; light: pruned by one-shot pruning at step '
      f'{pruning_step} to {100 * density:.1f}% remaining, dark: remaining',
      path=os.path.join(workdir, 'weight_fate.png'),
  )
  common.write_csv(
      os.path.join(workdir, 'weight_fate_histograms.csv'),
      ['step', 'row', 'bin_left', 'bin_right', 'pruned', 'kept'],
      [
          [cell.step, cell.row, f'{left:.6g}', f'{right:.6g}', int(pruned), int(kept)]
          for cell in cells
          for left, right, pruned, kept in zip(cell.edges[:-1], cell.edges[1:], cell.pruned, cell.kept)
      ],
  )
  figures.report_table(
      os.path.join(workdir, 'weight_fate_summary.csv'),
      *summary_rows(cells, agreement),
      f'one-shot pruning at step {pruning_step} keeps {100 * density:.1f}% of the prunable weights',
  )
  print(f'\nwrote {os.path.join(workdir, "weight_fate.png")}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)

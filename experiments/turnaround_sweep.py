"""Early turnaround: the ticket's accuracy when its mask is pruned from the weights at an earlier step
than the end of training (Figures 7 and 9 of "The Lottery Ticket Hypothesis at Scale").

For every turnaround step, one lottery run with `pruning.turnaround_step` set and late resetting to
--reset_step; the end of training is the run without early turnaround. They run as one sweep
(`lth_jax.search.sweep_named`): one dense run per trial (WORKDIR/dense/, keeping its weights at the reset
and every turnaround step), and each turnaround's levels in WORKDIR/variants/turnaround_<step>.

  --mode=iterative   each level prunes its own ticket's weights at the turnaround step (Figure 7):
                     a figure of ticket accuracy against weights remaining, one line per turnaround
  --mode=one_shot    level L prunes the dense network's weights at the turnaround step to the
                     sparsity of L iterative levels in one go (Figure 9): a table of turnaround
                     (rows) x weights remaining (columns), '*' on winning tickets

Both write the figure (turnaround_<mode>.png), the table (turnaround_<mode>_table.csv, printed) and
every number (turnaround_<mode>_cells.csv); one-shot also draws the table as Figure 9 does
(turnaround_one_shot_table.png, winning tickets starred). A turnaround must come after the reset step and no later
than the end of training; every run's config is checked before anything trains. A re-run in the same
workdir trains only what is not recorded yet.

    python -m experiments.turnaround_sweep --workdir=/tmp/fig7 --quick                 # embedded, CPU
    python -m experiments.turnaround_sweep --workdir=/tmp/fig9 --quick --mode=one_shot
    python -m experiments.turnaround_sweep --workdir=runs/fig7 --config=configs/resnet18_cifar10.py \\
        --config.dataset.data_dir=DIR --turnaround_steps=2000,5000,10000,20000,30000    # reset: 500
    python -m experiments.turnaround_sweep --workdir=runs/fig9 --config=configs/resnet50_imagenet.py \\
        --config.dataset.data_dir=DIR --mode=one_shot --turnaround_steps=18765,37530,56295,81315,112590
        # (epochs 15, 30, 45, 65, 90 at 1251 steps per epoch; reset: the config's epoch 6)
"""

from __future__ import annotations

import copy
import os
from typing import Sequence

from absl import app
from absl import flags
import ml_collections

from experiments import common
from experiments import figures
from experiments import late_reset_table

FLAGS = flags.FLAGS

MODES = ('iterative', 'one_shot')
DEFAULT_FRACTIONS = (1 / 15, 1 / 6, 1 / 3, 2 / 3, 1.0)  # of training, when --turnaround_steps is not given


def default_turnaround_steps(total_steps: int, reset_step: int) -> list[int]:
  """Steps at DEFAULT_FRACTIONS of training that come after the reset step (always the end)."""
  steps = sorted({round(fraction * total_steps) for fraction in DEFAULT_FRACTIONS})
  return [step for step in steps if step > reset_step]


def turnaround_configs(
    base: ml_collections.ConfigDict,
    turnaround_steps: Sequence[int],
    total_steps: int,
    reset_step: int,
    mode: str,
    branches: Sequence[str],
) -> dict[int, ml_collections.ConfigDict]:
  """One lottery config per turnaround step (the end of training: no early turnaround); the library's
  the config checks (`lth_jax.search.prepare`) then refuses a turnaround at or before the reset step or past the end."""
  configs = {}
  for step in turnaround_steps:
    if step == 0:
      raise app.UsageError(
          '--turnaround_steps: 0 would prune the initial weights; the last step of training '
          f'({total_steps}) is pruning without early turnaround'
      )
    config = copy.deepcopy(base)
    config.pruning.mode = mode
    config.branches = tuple(branches)
    figures.set_point(config, 'pruning', 'rewind_step', reset_step)
    figures.set_point(config, 'pruning', 'turnaround_step', 0 if step == total_steps else step)
    configs[step] = config
  return configs


def row_label(step: int, total_steps: int) -> str:
  """A turnaround's name in the table and the legend."""
  return f'{step} (end)' if step == total_steps else str(step)


def _define_flags() -> None:
  """The command-line flags (defined only when run as a program, so that the figure commands can be
  imported together, e.g. by the tests)."""
  flags.DEFINE_string('workdir', None, 'Output folder (the sweep: variants/turnaround_<step>, dense/).', required=True)
  flags.DEFINE_enum('mode', 'iterative', MODES, 'Pruning mode of every run.')
  flags.DEFINE_list(
      'turnaround_steps',
      None,
      'Turnaround steps (after --reset_step; the last step of training means no early turnaround). '
      'Default: 1/15, 1/6, 1/3, 2/3 and all of training.',
  )
  flags.DEFINE_integer(
      'reset_step', None, "Late-reset step of every run (default: the config's rewind step, else 1/30 of training)."
  )
  flags.DEFINE_list('branches', [], 'Control branches beside the ticket (e.g. reinit); default none.')
  figures.define_config_flags(trials_per='turnaround')


def main(argv):
  del argv
  base, experiment = figures.start('turnaround_sweep', FLAGS.config, FLAGS.quick, FLAGS.trials)
  total_steps = experiment.total_steps
  reset_step = (
      FLAGS.reset_step if FLAGS.reset_step is not None else figures.default_reset_step(experiment.spec, total_steps)
  )
  steps = (
      figures.parse_steps(FLAGS.turnaround_steps, 'turnaround_steps')
      if FLAGS.turnaround_steps
      else default_turnaround_steps(total_steps, reset_step)
  )
  configs = turnaround_configs(base, sorted(steps), total_steps, reset_step, FLAGS.mode, FLAGS.branches)
  mode, workdir = FLAGS.mode, FLAGS.workdir
  print(f'{mode} pruning, late reset to step {reset_step}, turnaround at steps {", ".join(map(str, sorted(configs)))}')
  records = figures.run_variants(
      base, {f'turnaround_{step}': config for step, config in configs.items()}, workdir, 'turnaround_sweep'
  )  # every run is checked before anything trains
  by_label = {row_label(step, total_steps): records[f'turnaround_{step}'] for step in configs}
  what = 'iterative pruning' if mode == 'iterative' else 'one-shot pruning'
  figures.plot_variants(
      {f'turnaround at step {label}': records for label, records in by_label.items()},
      f'Early turnaround ({what}, reset to step {reset_step}), {common.setting(experiment.spec)}',
      branches=('ticket', *FLAGS.branches),
      path=os.path.join(workdir, f'turnaround_{mode}.png'),
  )
  cells = figures.table_cells(by_label)
  extra = [cell for branch in FLAGS.branches for cell in figures.table_cells(by_label, branch)]
  figures.write_cells_csv(os.path.join(workdir, f'turnaround_{mode}_cells.csv'), cells + extra, 'turnaround_step')
  figures.report_table(
      os.path.join(workdir, f'turnaround_{mode}_table.csv'),
      *figures.winning_table(cells, 'turnaround_step'),
      f"ticket test metric by turnaround step and weights remaining ({what}; * = every trial at least the dense network's best)",
  )
  if mode == 'one_shot':  # Figure 9: the turnaround x sparsity table, winning tickets starred
    header, rows = late_reset_table.late_reset_table(by_label)
    header[0] = 'turnaround_step'
    late_reset_table.plot_late_reset_table(
        header,
        rows,
        f'ticket test accuracy ({what}, reset to step {reset_step}), {common.setting(experiment.spec)}\n'
        "* = winning ticket: every trial at least the dense network's best trial",
        os.path.join(workdir, 'turnaround_one_shot_table.png'),
    )
  print(f'\nwrote {os.path.join(workdir, f"turnaround_{mode}.png")}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)

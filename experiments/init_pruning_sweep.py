"""Pruning at initialization against iterative magnitude pruning with late resetting (the shape of the main
figures of Frankle et al. 2021, "Pruning Neural Networks at Initialization: Why are We Missing the Mark?").

Two lottery runs of one config (`--config`, by default the quick figures' configs/figures.py), run as one
sweep (`lth_jax.search.sweep_named`) that shares one dense run per trial (WORKDIR/dense/); each run's
levels are in WORKDIR/variants/<variant>:

  at_init       reset to initialization (pruning.rewind_step 0), with the pruning-at-initialization
                branches beside the ticket (--branches; default SNIP, GraSP, SynFlow, magnitude at init and
                random pruning): at every level each branch prunes W_0 to the size of that level's ticket
                (`pruning.at_init_scope`, one global pool by default) and trains from it
  rewind_<k>    iterative magnitude pruning with late resetting to step k (--rewind_step), no branch: its
                ticket is the "IMP with rewinding" line

The rewind step defaults to the config's own rewind step, else 1% of training (10 steps of the quick
setting's 1000: an early point, as the papers rewind to early in training). The paper's settings on an
accelerator (CIFAR-10 prepared in DIR; the configs rewind to steps 500 and 1000):

    python -m experiments.init_pruning_sweep --workdir=runs/missing_the_mark_resnet18 \\
        --config=configs/resnet18_cifar10.py --config.dataset.data_dir=DIR
    python -m experiments.init_pruning_sweep --workdir=runs/missing_the_mark_vgg19 \\
        --config=configs/vgg19_cifar10.py --config.dataset.data_dir=DIR
    python -m experiments.init_pruning_sweep --workdir=/tmp/missing_the_mark   # configs/figures.py, CPU

Writes init_pruning_sweep.png (test accuracy against weights remaining, log axis: one colour per method,
mean over trials with min/max bars, the dense network dashed), init_pruning_sweep_table.csv (method x
fraction remaining, '*' on levels whose every trial is at least the dense network's best) and
init_pruning_sweep_cells.csv (every number); prints the table. A re-run in the same workdir trains only
what is not recorded yet.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

from lth_jax.reporting import style
from experiments import common
from experiments import figures

FLAGS = flags.FLAGS

COMMAND = 'init_pruning_sweep'
STEM = 'init_pruning_sweep'  # WORKDIR/<stem>.png, <stem>_table.csv, <stem>_cells.csv
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', 'figures.py')
AT_INIT = 'at_init'  # the variant that resets to W_0 and trains the pruning-at-initialization branches
REWIND_PREFIX = 'rewind_'  # the variant of IMP with late resetting: rewind_<step>
BRANCHES = ('snip', 'grasp', 'synflow', 'magnitude_at_init', 'random_pruning')


def default_rewind_step(spec: Any, total_steps: int) -> int:
  """The late-reset step of IMP with rewinding unless told: the config's own rewind step (`spec`: resolved,
  in steps), else 1% of training (at least 1)."""
  return spec.pruning.rewind_step or max(1, round(total_steps / 100))


def rewind_variant(rewind_step: int) -> str:
  """The name of the variant of IMP with late resetting to `rewind_step`."""
  return f'{REWIND_PREFIX}{rewind_step}'


def variant_configs(
    base: ml_collections.ConfigDict, branches: Sequence[str], rewind_step: int
) -> dict[str, ml_collections.ConfigDict]:
  """The two lottery configs: AT_INIT (reset to step 0, the `branches` beside the ticket) and
  rewind_<step> (late resetting to `rewind_step`, no branch); a usage error for no branch or a rewind step
  that is not after initialization."""
  if not branches:
    raise app.UsageError('--branches: give at least one branch to compare with IMP with rewinding')
  if rewind_step < 1:
    raise app.UsageError(
        f'--rewind_step={rewind_step}: IMP with rewinding resets to a step after initialization; give a positive step'
    )
  at_init, rewind = copy.deepcopy(base), copy.deepcopy(base)
  at_init.branches = tuple(branches)
  figures.set_point(at_init, 'pruning', 'rewind_step', 0)
  rewind.branches = ()
  figures.set_point(rewind, 'pruning', 'rewind_step', rewind_step)
  return {AT_INIT: at_init, rewind_variant(rewind_step): rewind}


def method_label(branch: str) -> str:
  """The legend's name of a pruning-at-initialization branch: 'SNIP', 'GraSP', 'SNIP, shuffled'."""
  return style.display_name(branch)


def rewind_label(rewind_step: int) -> str:
  """The legend's name of the ticket of IMP with late resetting."""
  return f'IMP with rewinding (to step {rewind_step})'


def method_records(records_by_variant: Mapping[str, Sequence[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
  """Each method's records as a lottery run of its own, by legend label: IMP with rewinding first (the
  rewind variant's ticket), then every branch of the AT_INIT variant in its order, its records as the
  'ticket' of a run whose level 0 is the dense network (the AT_INIT variant's level-0 ticket), so that
  `figures.plot_variants` and `figures.table_cells` draw and tabulate one colour and one row per method."""
  (rewind,) = [name for name in records_by_variant if name.startswith(REWIND_PREFIX)]
  methods = {rewind_label(int(rewind.removeprefix(REWIND_PREFIX))): list(records_by_variant[rewind])}
  at_init = records_by_variant[AT_INIT]
  dense = [record for record in at_init if record['branch'] == 'ticket' and record['level'] == 0]
  for branch in dict.fromkeys(record['branch'] for record in at_init if record['branch'] != 'ticket'):
    methods[method_label(branch)] = dense + [
        dict(record, branch='ticket') for record in at_init if record['branch'] == branch
    ]
  return methods


def report(records_by_variant: Mapping[str, Sequence[dict[str, Any]]], workdir: str, title: str) -> str:
  """Writes WORKDIR/<STEM>.png, <STEM>_table.csv and <STEM>_cells.csv of the sweep's records; prints the
  table; returns the image's path."""
  methods = method_records(records_by_variant)
  path = os.path.join(workdir, f'{STEM}.png')
  figures.plot_variants(methods, title, branches=('ticket',), path=path)
  cells = figures.table_cells(methods)
  figures.write_cells_csv(os.path.join(workdir, f'{STEM}_cells.csv'), cells, 'method')
  figures.report_table(
      os.path.join(workdir, f'{STEM}_table.csv'),
      *figures.winning_table(cells, 'method'),
      "test metric by method and weights remaining (* = every trial at least the dense network's best)",
  )
  print(f'\nwrote {path}')
  return path


def _define_flags() -> None:
  """The command-line flags (defined only when run as a program, so that the figure commands can be
  imported together, e.g. by the tests and experiments.captions)."""
  flags.DEFINE_string('workdir', None, 'Output folder (the sweep: variants/<variant>, dense/).', required=True)
  config_flags.DEFINE_config_file('config', DEFAULT_CONFIG, 'Config file (default: configs/figures.py).')
  flags.DEFINE_integer('trials', None, "Trials per method (default: the config's own; configs/figures.py: 3).")
  flags.DEFINE_integer(
      'rewind_step',
      None,
      "IMP with rewinding's late-reset step (default: the config's rewind step, else 1% of training: 10 on "
      'configs/figures.py).',
  )
  flags.DEFINE_list(
      'branches',
      list(BRANCHES),
      'Pruning-at-initialization branches trained from W_0 beside the ticket reset to step 0 (any branch of '
      'lth_jax.branches, e.g. snip_shuffled).',
  )


def main(argv):
  del argv
  base, experiment = figures.start(COMMAND, FLAGS.config, False, FLAGS.trials)
  rewind_step = FLAGS.rewind_step
  if rewind_step is None:
    rewind_step = default_rewind_step(experiment.spec, experiment.total_steps)
  configs = variant_configs(base, FLAGS.branches, rewind_step)
  print(f'{AT_INIT}: reset to initialization, with {", ".join(map(method_label, FLAGS.branches))} from W_0')
  print(f'{rewind_variant(rewind_step)}: {rewind_label(rewind_step)}')
  records = figures.run_variants(base, configs, FLAGS.workdir, COMMAND)
  report(
      records, FLAGS.workdir, f'Pruning at initialization against IMP with rewinding, {common.setting(experiment.spec)}'
  )


if __name__ == '__main__':
  _define_flags()
  app.run(main)

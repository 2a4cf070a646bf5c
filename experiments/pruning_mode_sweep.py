"""Iterative against one-shot pruning with late resetting, and iterative pruning without it, each beside
its random reinitialization (Figure 10 of "The Lottery Ticket Hypothesis at Scale": ResNet-50 on ImageNet).

Every variant is one lottery run (the ticket and the 'reinit' branch) derived from one config
(`--config`, or the embedded LeNet on MNIST-1D); all keep the config's early turnaround. They run as one
sweep (`lth_jax.search.sweep_named`) and share one dense run per trial (WORKDIR/dense/); each variant's
levels are in WORKDIR/variants/<variant>:

  iterative   iterative pruning, late resetting to --reset_step
  one_shot    level L prunes the dense network to the density iterative pruning reaches at level L in
              one go, late resetting to --reset_step
  no_reset    iterative pruning, reset to initialization (step 0)

The reset step defaults to the config's own rewind step (ResNet-50: epoch 6), else 1/30 of training.
The paper's settings on an accelerator (ImageNet prepared in DIR; on a pod add --distributed=yes):

    python -m experiments.pruning_mode_sweep --workdir=runs/fig10_resnet50 \\
        --config=configs/resnet50_imagenet.py --config.dataset.data_dir=DIR --trials=3
    python -m experiments.pruning_mode_sweep --workdir=/tmp/fig10 --quick        # embedded data, CPU

Writes pruning_mode_sweep.png (test accuracy against weights remaining: one colour per variant, the
ticket solid, random reinitialization dashed), pruning_mode_sweep_table.csv (variant x fraction remaining, '*'
on winning tickets) and pruning_mode_sweep_cells.csv (every number); prints the table. A re-run in the same
workdir trains only what is not recorded yet.
"""

from __future__ import annotations

from typing import Sequence

from absl import app
from absl import flags
import ml_collections

from experiments import common
from experiments import figures

FLAGS = flags.FLAGS

VARIANTS = ('iterative', 'one_shot', 'no_reset')


def variant_configs(
    base: ml_collections.ConfigDict, names: Sequence[str], reset_step: int
) -> dict[str, ml_collections.ConfigDict]:
  """One lottery config per variant (ticket and 'reinit' branch), derived from `base`."""
  configs = figures.variant_copies(base, names, VARIANTS)
  for name, config in configs.items():
    config.pruning.mode = 'one_shot' if name == 'one_shot' else 'iterative'
    figures.set_point(config, 'pruning', 'rewind_step', 0 if name == 'no_reset' else reset_step)
  return configs


def variant_label(name: str, config: ml_collections.ConfigDict) -> str:
  """The legend's name of a variant: its pruning mode and reset step."""
  mode = 'one-shot' if config.pruning.mode == 'one_shot' else 'iterative'
  reset = config.pruning.rewind_step
  return f'{mode}, reset to step {reset}' if reset else f'{mode}, reset to initialization'


def _define_flags() -> None:
  """The command-line flags (defined only when run as a program, so that the figure commands can be
  imported together, e.g. by the tests)."""
  flags.DEFINE_string('workdir', None, 'Output folder (the sweep: variants/<variant>, dense/).', required=True)
  flags.DEFINE_list('variants', list(VARIANTS), f'Variants to run, of {", ".join(VARIANTS)}.')
  flags.DEFINE_integer(
      'reset_step', None, "The late-reset step (default: the config's rewind step, else 1/30 of training)."
  )
  figures.define_config_flags(trials_per='variant')


def main(argv):
  del argv
  base, experiment = figures.start('pruning_mode_sweep', FLAGS.config, FLAGS.quick, FLAGS.trials)
  reset_step = FLAGS.reset_step
  if reset_step is None:
    reset_step = figures.default_reset_step(experiment.spec, experiment.total_steps)
  configs = variant_configs(base, FLAGS.variants, reset_step)
  labels = {name: variant_label(name, config) for name, config in configs.items()}
  for name, label in labels.items():
    print(f'{name}: {label}')
  records = figures.run_variants(base, configs, FLAGS.workdir, 'pruning_mode_sweep')
  figures.report_variants(
      records,
      labels,
      FLAGS.workdir,
      'pruning_mode_sweep',
      f'One-shot and iterative pruning, {common.setting(experiment.spec)}',
  )


if __name__ == '__main__':
  _define_flags()
  app.run(main)

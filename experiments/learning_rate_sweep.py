"""Iterative pruning at the standard learning rate, at a 10x lower one, with warmup, and with late
resetting, each beside its random reinitialization (Figure 2 of "The Lottery Ticket Hypothesis at
Scale").

Every variant is one lottery run (the ticket and the 'reinit' branch, no early turnaround) derived from
one config (`--config`, or the embedded LeNet on MNIST-1D); they run as one sweep
(`lth_jax.search.sweep_named`), each variant in WORKDIR/variants/<variant>. standard and late_reset
share one dense run per trial (WORKDIR/dense/); low_lr and warmup train their own:

  standard     the config's learning rate, no warmup, reset to initialization (step 0)
  low_lr       the learning rate divided by --low_lr_factor (10), no warmup, reset to step 0
  warmup       linear warmup over --warmup_steps to --warmup_learning_rate, reset to step 0
  late_reset   the config's learning rate, no warmup, late resetting to --reset_step

Defaults come from the config: the warmup is the config's own when it has one (else the first 10% of
training) up to its learning rate, and the reset step is its own rewind step when it has one (else
1/30 of training). The paper's settings on an accelerator (CIFAR-10 prepared in DIR):

    python -m experiments.learning_rate_sweep --workdir=runs/fig2_resnet18 \\
        --config=configs/resnet18_cifar10.py --config.dataset.data_dir=DIR \\
        --warmup_steps=20000 --warmup_learning_rate=0.03 --low_lr_factor=10
    python -m experiments.learning_rate_sweep --workdir=runs/fig2_vgg19 \\
        --config=configs/vgg19_cifar10.py --config.dataset.data_dir=DIR --warmup_steps=10000
    python -m experiments.learning_rate_sweep --workdir=/tmp/fig2 --quick        # embedded data, CPU

Writes learning_rate_sweep.png (test accuracy against weights remaining: one colour per variant, the
ticket solid, random reinitialization dashed), learning_rate_sweep_table.csv (variant x fraction remaining,
'*' on winning tickets) and learning_rate_sweep_cells.csv (every number); prints the table. A re-run in the
same workdir trains only what is not recorded yet.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from absl import app
from absl import flags
import ml_collections

from lth_jax import config as config_lib
from experiments import common
from experiments import figures

FLAGS = flags.FLAGS

VARIANTS = ('standard', 'low_lr', 'warmup', 'late_reset')


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the variants differ in, as plain values (steps, not epochs)."""

  learning_rate: float
  low_lr_factor: float
  warmup_steps: int
  warmup_learning_rate: float
  reset_step: int


def default_settings(spec: config_lib.RunSpec, total_steps: int) -> Settings:
  """The settings a config implies (`spec`: resolved, lengths in steps, as `prepare` gives it)."""
  learning_rate = float(spec.training.learning_rate)
  return Settings(
      learning_rate=learning_rate,
      low_lr_factor=10.0,
      warmup_steps=spec.training.warmup_steps or max(1, round(total_steps / 10)),
      warmup_learning_rate=learning_rate,
      reset_step=figures.default_reset_step(spec, total_steps),
  )


def variant_configs(
    base: ml_collections.ConfigDict, names: Sequence[str], settings: Settings
) -> dict[str, ml_collections.ConfigDict]:
  """One lottery config per variant (ticket and 'reinit' branch), derived from `base`."""
  configs = figures.variant_copies(base, names, VARIANTS)
  for name, config in configs.items():
    config.training.learning_rate = settings.learning_rate
    figures.set_point(config, 'training', 'warmup_steps', 0)
    figures.set_point(config, 'pruning', 'rewind_step', 0)
    figures.set_point(config, 'pruning', 'turnaround_step', 0)
    if name == 'low_lr':
      config.training.learning_rate = settings.learning_rate / settings.low_lr_factor
    elif name == 'warmup':
      config.training.learning_rate = settings.warmup_learning_rate
      figures.set_point(config, 'training', 'warmup_steps', settings.warmup_steps)
    elif name == 'late_reset':
      figures.set_point(config, 'pruning', 'rewind_step', settings.reset_step)
  return configs


def variant_label(name: str, config: ml_collections.ConfigDict) -> str:
  """The legend's name of a variant: what it sets."""
  rate = f'lr {config.training.learning_rate:.3g}'
  if name == 'warmup':
    return f'warmup ({config.training.warmup_steps} steps to {rate})'
  if name == 'late_reset':
    return f'late reset (step {config.pruning.rewind_step}, {rate})'
  return f'{"lower rate" if name == "low_lr" else name} ({rate})'


def _define_flags() -> None:
  """The command-line flags (defined only when run as a program, so that the figure commands can be
  imported together, e.g. by the tests)."""
  flags.DEFINE_string('workdir', None, 'Output folder (the sweep: variants/<variant>, dense/).', required=True)
  flags.DEFINE_list('variants', list(VARIANTS), f'Variants to run, of {", ".join(VARIANTS)}.')
  flags.DEFINE_float('low_lr_factor', 10.0, 'low_lr divides the learning rate by this.')
  flags.DEFINE_integer('warmup_steps', None, "Warmup length (default: the config's own warmup, else 10% of training).")
  flags.DEFINE_float('warmup_learning_rate', None, "Learning rate reached after the warmup (default: the config's).")
  flags.DEFINE_integer(
      'reset_step', None, "late_reset's step (default: the config's rewind step, else 1/30 of training)."
  )
  figures.define_config_flags(trials_per='variant')


def main(argv):
  del argv
  base, experiment = figures.start('learning_rate_sweep', FLAGS.config, FLAGS.quick, FLAGS.trials)
  defaults = default_settings(experiment.spec, experiment.total_steps)
  settings = dataclasses.replace(
      defaults,
      low_lr_factor=FLAGS.low_lr_factor,
      warmup_steps=FLAGS.warmup_steps if FLAGS.warmup_steps is not None else defaults.warmup_steps,
      warmup_learning_rate=FLAGS.warmup_learning_rate or defaults.warmup_learning_rate,
      reset_step=FLAGS.reset_step if FLAGS.reset_step is not None else defaults.reset_step,
  )
  if settings.low_lr_factor <= 0:
    raise app.UsageError(f'--low_lr_factor={settings.low_lr_factor}: must be positive')
  configs = variant_configs(base, FLAGS.variants, settings)
  labels = {name: variant_label(name, config) for name, config in configs.items()}
  for name, label in labels.items():
    print(f'{name}: {label}')
  records = figures.run_variants(base, configs, FLAGS.workdir, 'learning_rate_sweep')
  figures.report_variants(
      records,
      labels,
      FLAGS.workdir,
      'learning_rate_sweep',
      f'Iterative pruning, {common.setting(experiment.spec)}: learning rate, ' 'warmup, late resetting',
  )


if __name__ == '__main__':
  _define_flags()
  app.run(main)

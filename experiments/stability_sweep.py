"""Stability to pruning throughout training, per late-reset point (Figures 11-14 of "The Lottery Ticket
Hypothesis at Scale"), and at the end of training (Figures 4 and 6).

For every late-reset point k (--reset_steps or --reset_epochs), a lottery run with late resetting to k
(iterative, or --mode=one_shot) up to `--level`, all run as one sweep (`lth_jax.search.sweep_named`): one
dense run per trial shared by the points (WORKDIR/dense/), and the run of point k the sweep's variant
reset_<k> (WORKDIR/variants/reset_<k>); then the four-member population of
`lth_jax.analysis.stability` (full network, winning ticket, random ticket, a second full network) trains in
lockstep and the metrics are taken every `--measure_every` steps, for each of `--trials` trials. A
separate command from `late_reset_sweep` because it needs none of the accuracy table's levels and
control branches, only the measured level's ticket, and it measures each trial on a fine grid of steps.
It builds the same sweep as `late_reset_sweep` (with the same flags), so the two can share a --workdir:
then the lottery runs of one are reused by the other.

Distances are normalized by the final distance between the two full networks (Figures 4, 11-13) and by
its maximum over training (Figures 6 and 14); both are drawn. Each measurement is appended to
WORKDIR/variants/reset_<k>/stability.jsonl as it finishes and is not repeated when the command runs again.

    python -m experiments.stability_sweep --workdir=/tmp/lth_stability --quick                    # ~1 min, CPU
    python -m experiments.stability_sweep --workdir=... --config=configs/resnet18_cifar10.py \\
        --config.dataset.data_dir=DIR --reset_steps=0,100,250,500,1000,2000 --level=5 --trials=3   # Figure 12

Writes stability.jsonl, stability.csv (end of training), stability_curves.csv (every measured step),
stability_vs_reset_step.png, stability_vs_reset_step_max_normalized.png, stability_over_training.png and
stability_over_training_max_normalized.png.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags

from lth_jax.analysis import stability_results
from lth_jax.analysis import ticket_stability
from lth_jax.reporting import stability_tables
from lth_jax import results as results_lib
from experiments import common

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """The command-line flags (defined only when run as a program, so that the sweeps can be imported
  together, e.g. by the tests)."""
  common.define_reset_sweep_flags(
      "Trials measured (and averaged); default 3 (--quick: 1) embedded, the config's own otherwise."
  )
  flags.DEFINE_integer('level', None, 'The pruning level whose ticket is measured (default 5, --quick: 2).')
  flags.DEFINE_integer('measure_every', None, 'Steps between measurements (default: a twentieth of training).')


FIGURES = {
    'final': ('stability_vs_reset_step.png', 'stability_over_training.png'),
    'max': ('stability_vs_reset_step_max_normalized.png', 'stability_over_training_max_normalized.png'),
}


def main(argv):
  del argv
  workdir, quick = FLAGS.workdir, FLAGS.quick
  base, points = common.reset_sweep_start(
      FLAGS.config, quick, FLAGS.trials, FLAGS.mode, FLAGS.reset_steps, FLAGS.reset_epochs
  )
  level = FLAGS.level if FLAGS.level is not None else (2 if quick else 5)
  if level < 1:
    raise app.UsageError(f'--level={level}: the ticket of a pruned level (1 or more) is measured')
  if FLAGS.measure_every is not None and FLAGS.measure_every < 1:
    raise app.UsageError(f'--measure_every={FLAGS.measure_every}: must be a positive number of steps')
  base.pruning.target_density = None  # the measured level is always reached
  configs = common.lottery_configs(base, points, level)
  experiments = common.prepare_all('stability_sweep', configs)  # every point is checked before anything trains
  runs = common.run_sweep(
      'stability_sweep', common.lottery_base(base, level), configs, workdir, lambda point: point.directory
  )

  results, measured_count = [], 0
  for point, config in configs.items():
    run_dir = runs[point].directory
    total_steps = experiments[point].total_steps
    every = FLAGS.measure_every or max(1, total_steps // 20)
    for trial in range(int(config.get('trials', 1))):
      result, measured = ticket_stability.measure_lottery_ticket_once(
          config, run_dir, level, trial, measure_steps=range(0, total_steps, every)
      )
      measured_count += measured
      print(
          f'reset {point.unit} {point.label} trial {trial}: stability of level {level} '
          f'{"measured" if measured else "loaded from " + os.path.join(run_dir, stability_results.STABILITY_FILE)}'
      )
      results.append(result)
  print(f'stability measurements: {measured_count} measured, {len(results) - measured_count} loaded')

  setting = common.setting(next(iter(experiments.values())).spec)
  _write_outputs(workdir, results, level, setting, runs[next(iter(configs))].records)
  print(f'\nstability of the level {level} ticket at the end of training ({base.pruning.get("mode", "iterative")})')
  print(stability_tables.format_end_of_training(results))
  print('\nthroughout training (distance normalized by the final distance between two full networks)')
  print(stability_tables.format_over_training(results))


def _write_outputs(
    workdir: str, results: list[stability_results.StabilityResult], level: int, setting: str, records: list[dict]
) -> None:
  """stability.jsonl, the CSV files and the four figures (`records`: a reset point's lottery records, for
  the level's sparsity and the test metric)."""
  common.write_text(
      os.path.join(workdir, 'stability.jsonl'),
      ''.join(results_lib.strict_json(result.as_record()) + '\n' for result in results),
  )
  common.write_csv(os.path.join(workdir, 'stability.csv'), *stability_tables.end_of_training_rows(results))
  common.write_csv(os.path.join(workdir, 'stability_curves.csv'), *stability_tables.curve_rows(results))
  fraction = common.fraction_at_level(records, level)
  for normalization, (end_name, curve_name) in FIGURES.items():
    stability_tables.plot_stability_vs_reset_step(
        results,
        os.path.join(workdir, end_name),
        normalization,
        FLAGS.dpi,
        setting,
        fraction,
        results_lib.test_metric_name(records),
    )
    stability_tables.plot_stability_over_training(
        results, os.path.join(workdir, curve_name), normalization, FLAGS.dpi, setting, fraction
    )


if __name__ == '__main__':
  _define_flags()
  app.run(main)

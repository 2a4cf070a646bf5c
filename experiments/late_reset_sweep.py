"""Late resetting sweep and stability to pruning against the reset step (Figures 3, 4, 5 and 6 of
"The Lottery Ticket Hypothesis at Scale").

For every late-reset point k (--reset_steps, or --reset_epochs), a lottery run (iterative, or with
--mode=one_shot each level the dense network pruned in one shot to that level's density) with late
resetting to k, all run as one sweep (`lth_jax.search.sweep_named`): the points share one dense run per
trial (WORKDIR/dense/, keeping its weights at every reset point), and the run of point k is the sweep's
variant reset_<k> (WORKDIR/variants/reset_<k>: its level 0 taken from the dense run, then its levels); then
  * a table (Figure 5): rows = reset point, columns = fraction of weights remaining, cells = the
    ticket's test accuracy (mean over trials, ± the largest distance of a trial from the mean); '*'
    marks winning tickets (every trial at least the dense network's best trial). Row R is random reinitialization:
    the `reinit` branch, trained once, with the masks of the first reset point (in one-shot mode the
    masks come from the dense network alone, so R is the same for every reset point);
  * the same numbers as curves (Figure 3): ticket accuracy against weights remaining, one line per
    reset point, random reinitialization dashed;
  * the stability of trial 0's ticket found at `--stability_level` and of its random (permuted) ticket
    at the end of training against the reset point, distances normalized by the final (Figure 4) and by
    the maximum (Figure 6) distance between two full networks. Measurements are kept in
    WORKDIR/variants/reset_<k>/stability.jsonl and not repeated when the command runs again. `stability_sweep`
    measures every trial throughout training and can share this command's --workdir.

    python -m experiments.late_reset_sweep --workdir=/tmp/lth_late_reset --quick --mode=one_shot   # ~1 min, CPU
    python -m experiments.late_reset_sweep --workdir=... --config=configs/resnet50_imagenet.py:one_shot \\
        --config.pruning.turnaround_epoch=0 --config.dataset.data_dir=DIR \\
        --reset_epochs=0,2,4,6,8,10 --trials=3 --stability_level=3            # Figures 5 and 6, on accelerators

Writes late_reset_table.csv and .png, late_reset_curves.png, stability.jsonl, stability.csv, stability_vs_reset_step.png and
stability_vs_reset_step_max_normalized.png.
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
from experiments import figures
from experiments import late_reset_table as table_lib

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """The command-line flags (defined only when run as a program, so that the sweeps can be imported
  together, e.g. by the tests)."""
  common.define_reset_sweep_flags(
      "Trials per reset point for the table; default 3 (--quick: 1) embedded, the config's own otherwise."
  )
  flags.DEFINE_integer('stability_level', None, 'Level whose ticket is measured (0: skip; default 5, --quick: 2).')


def main(argv):
  del argv
  workdir, quick = FLAGS.workdir, FLAGS.quick
  base, points = common.reset_sweep_start(
      FLAGS.config, quick, FLAGS.trials, FLAGS.mode, FLAGS.reset_steps, FLAGS.reset_epochs
  )
  stability_level = FLAGS.stability_level if FLAGS.stability_level is not None else (2 if quick else 5)
  if stability_level < 0:
    raise app.UsageError(f'--stability_level={stability_level}: must be 0 (skip) or a pruned level')
  # Row R: the reinit branch, trained once with the first point's run (see the module docstring).
  levels = max(base.pruning.levels, stability_level)
  configs = common.lottery_configs(base, points, levels)
  experiments = common.prepare_all('late_reset_sweep', configs)  # every point is checked before anything trains
  runs = common.run_sweep(
      'late_reset_sweep', common.lottery_base(base, levels), configs, workdir, lambda point: point.directory
  )

  records_by_reset = {point.label: run.records for point, run in runs.items()}
  reinit_records = [r for r in runs[points[0]].records if r['branch'] == 'reinit']
  stability_results = []
  for point, config in configs.items():
    if not stability_level:
      break
    total_steps = experiments[point].total_steps
    every = experiments[point].spec.training.eval_every or max(1, total_steps // 10)
    result, measured = ticket_stability.measure_lottery_ticket_once(
        config, runs[point].directory, stability_level, measure_steps=range(0, total_steps, every)
    )
    print(
        f'reset {point.unit} {point.label}: stability of level {stability_level} {"measured" if measured else "loaded"}'
    )
    stability_results.append(result)

  mode = base.pruning.get('mode', 'iterative')
  header, rows = table_lib.late_reset_table(records_by_reset, reinit_records)
  header[0] = f'reset_{points[0].unit}'
  common.write_csv(os.path.join(workdir, 'late_reset_table.csv'), header, rows)
  setting = common.setting(next(iter(experiments.values())).spec)
  title = _table_title(setting, mode, max(map(common.trial_count, records_by_reset.values())), points[0])
  table_lib.plot_late_reset_table(header, rows, title, os.path.join(workdir, 'late_reset_table.png'), FLAGS.dpi)
  figures.plot_variants(  # Figure 3: a line per reset point, random reinitialization dashed
      {f'reset to {point.unit} {point.label}': records_by_reset[point.label] for point in configs},
      f'Ticket accuracy by late-reset point, {setting}, {mode.replace("_", "-")} pruning',
      path=os.path.join(workdir, 'late_reset_curves.png'),
  )
  print(title)
  print('\n'.join('  '.join(f'{cell:>24}' for cell in row) for row in [header, *rows]))
  if stability_results:
    _write_stability(workdir, stability_results, stability_level, setting, runs[points[0]].records)


def _table_title(setting: str, mode: str, trials: int, first: common.ResetPoint) -> str:
  """The title of the late-reset table's image: what it shows, of which setting, over how many trials."""
  spread = f'mean of {trials} trials ± the farthest trial' if trials > 1 else '1 trial'
  return (
      f'Ticket test accuracy, {setting}, {mode.replace("_", "-")} pruning, {spread}\n'
      f"* = every trial at least the dense network's best; R = random reinitialization (masks of reset {first.unit} {first.label})"
  )


def _write_stability(
    workdir: str, results: list[stability_results.StabilityResult], level: int, setting: str, records: list[dict]
) -> None:
  """stability.jsonl, stability.csv and the two end-of-training figures of the ticket of `level`
  (`records`: a reset point's lottery records, for the level's sparsity and the test metric)."""
  common.write_text(
      os.path.join(workdir, 'stability.jsonl'),
      ''.join(results_lib.strict_json(result.as_record()) + '\n' for result in results),
  )
  common.write_csv(os.path.join(workdir, 'stability.csv'), *stability_tables.end_of_training_rows(results))
  print(f'\nstability at level {level} (end of training)')
  print(stability_tables.format_end_of_training(results))
  for normalization, name in (
      ('final', 'stability_vs_reset_step.png'),
      ('max', 'stability_vs_reset_step_max_normalized.png'),
  ):
    stability_tables.plot_stability_vs_reset_step(
        results,
        os.path.join(workdir, name),
        normalization,
        FLAGS.dpi,
        setting,
        common.fraction_at_level(records, level),
        results_lib.test_metric_name(records),
    )


if __name__ == '__main__':
  _define_flags()
  app.run(main)

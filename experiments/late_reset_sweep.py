"""Late resetting sweep and stability to pruning against the reset step (Figures 4 and 5 of
"The Lottery Ticket Hypothesis at Scale").

For every reset step k, an iterative lottery run with late resetting to k; then
  * a table: rows = reset step, columns = fraction of weights remaining, cells = the ticket's test
    accuracy (mean over trials); '*' marks winning tickets (at least the dense network's accuracy);
  * the stability of the ticket found at `--stability_level` and of its random (permuted) ticket:
    normalized L2 distance and angle to the full network, at the end of training, per reset step.

    python -m experiments.late_reset_sweep --workdir=/tmp/lth_late_reset     # embedded data, minutes on CPU

Writes late_reset_table.csv, stability.jsonl, stability.csv and stability_vs_reset_step.png.
"""

import os
import sys

from absl import app
from absl import flags
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import lth_jax  # noqa: E402
from lth_jax import lottery  # noqa: E402
from lth_jax import results as results_lib  # noqa: E402
from lth_jax import stability  # noqa: E402
from experiments import common  # noqa: E402

_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder.', required=True)
_RESET_STEPS = flags.DEFINE_list(
    'reset_steps', None, 'Late-reset steps to compare (default 0,25,100,500; --quick: 0,25,100).'
)
_TRIALS = flags.DEFINE_integer('trials', 1, 'Trials per reset step for the accuracy table.')
_STABILITY_LEVEL = flags.DEFINE_integer(
    'stability_level', None, 'Level whose ticket is measured (0: skip; default 5, --quick: 2).'
)
_QUICK = flags.DEFINE_bool('quick', False, 'A smoke-test-sized run.')


def late_reset_table(records_by_reset: dict[int, list[dict]]) -> tuple[list[str], list[list[str]]]:
  """Header and rows of the reset-step x fraction-remaining table ('*': at least the dense accuracy)."""
  levels = sorted({r['level'] for records in records_by_reset.values() for r in records})
  header = ['reset_step'] + [f'level_{level}' for level in levels]
  rows = []
  for reset_step, records in sorted(records_by_reset.items()):
    tickets = [r for r in records if r['branch'] == 'ticket']
    metric = results_lib.test_metric_name(tickets)
    by_level = {level: [r[metric] for r in tickets if r['level'] == level] for level in levels}
    dense = np.mean(by_level[0])
    row = [str(reset_step)]
    for level in levels:
      if not by_level[level]:
        row.append('')
        continue
      value = float(np.mean(by_level[level]))
      remaining = next(r['fraction_remaining'] for r in tickets if r['level'] == level)
      winning = value >= dense if metric == 'test_accuracy' else value <= dense
      row.append(f'{value:.4f}{"*" if winning and level else ""} @{100 * remaining:.1f}%')
    rows.append(row)
  return header, rows


def plot_stability(results: list[stability.StabilityResult], path: str) -> None:
  """Normalized L2 distance and angle at the end of training against the reset step."""
  steps = [result.rewind_step for result in results]
  figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
  for axis, metric, label in (
      (axes[0], 'l2_distance', 'normalized L2 distance'),
      (axes[1], 'angle', 'angle to full network (degrees)'),
  ):
    for name, colour in (('ticket', 'tab:blue'), ('random_ticket', 'tab:orange')):
      axis.plot(
          steps, [result.final[name][metric] for result in results], 'o-', color=colour, label=name.replace('_', ' ')
      )
    axis.set_xlabel('late-reset step')
    axis.set_ylabel(label)
    axis.legend()
  for name, colour in (('full', 'tab:gray'), ('ticket', 'tab:blue'), ('random_ticket', 'tab:orange')):
    axes[2].plot(
        steps, [result.test_metrics[name] for result in results], 'o-', color=colour, label=name.replace('_', ' ')
    )
  axes[2].set_xlabel('late-reset step')
  axes[2].set_ylabel('final test metric')
  axes[2].legend()
  figure.suptitle('Stability to pruning against the late-reset step')
  figure.tight_layout()
  temporary = path + '.tmp.png'
  figure.savefig(temporary, dpi=120)
  plt.close(figure)
  os.replace(temporary, path)


def main(argv):
  del argv
  common.quiet_logging()
  workdir = _WORKDIR.value
  quick = _QUICK.value
  default_steps = ['0', '25', '100'] if quick else ['0', '25', '100', '500']
  reset_steps = [int(step) for step in _RESET_STEPS.value or default_steps]
  stability_level = _STABILITY_LEVEL.value if _STABILITY_LEVEL.value is not None else (2 if quick else 5)
  configs = {}
  for reset_step in reset_steps:
    config = common.embedded_config(quick, _TRIALS.value)
    config.pruning.rewind_step = reset_step
    config.pruning.levels = max(config.pruning.levels, stability_level)
    config.branches = ()
    try:
      lottery.prepare(config)  # every reset step is checked before anything trains
    except lth_jax.ConfigError as error:
      sys.exit(f'late_reset_sweep: reset step {reset_step}: {error}')
    configs[reset_step] = config
  records_by_reset, stability_results = {}, []
  for reset_step, config in configs.items():
    run_dir = os.path.join(workdir, f'reset_{reset_step}')
    records_by_reset[reset_step] = lth_jax.run(config, run_dir).records
    if stability_level:
      measure_steps = range(0, config.training.num_steps, config.training.eval_every)
      stability_results.append(
          stability.measure_lottery_ticket(config, run_dir, stability_level, measure_steps=measure_steps)
      )

  header, rows = late_reset_table(records_by_reset)
  common.write_text(
      os.path.join(workdir, 'late_reset_table.csv'), '\n'.join(','.join(row) for row in [header, *rows]) + '\n'
  )
  print('ticket test accuracy by reset step and level (* = at least the dense network)')
  print('\n'.join('  '.join(f'{cell:>22}' for cell in row) for row in [header, *rows]))
  if stability_results:
    common.write_text(
        os.path.join(workdir, 'stability.jsonl'),
        ''.join(results_lib.strict_json(result.as_record()) + '\n' for result in stability_results),
    )
    lines = ['reset_step,member,l2_distance,angle,correlation,test_metric']
    print(f'\nstability at level {stability_level} (end of training)')
    for result in stability_results:
      for name in ('ticket', 'random_ticket'):
        final = result.final[name]
        lines.append(
            f'{result.rewind_step},{name},{final["l2_distance"]:.4f},{final["angle"]:.2f},'
            f'{final["correlation"]:.4f},{result.test_metrics[name]:.4f}'
        )
        print(
            f'  reset {result.rewind_step:>5} {name:<14} L2 {final["l2_distance"]:.3f}  angle '
            f'{final["angle"]:6.2f}  correlation {final["correlation"]:.3f}  test {result.test_metrics[name]:.4f}'
        )
    common.write_text(os.path.join(workdir, 'stability.csv'), '\n'.join(lines) + '\n')
    plot_stability(stability_results, os.path.join(workdir, 'stability_vs_reset_step.png'))


if __name__ == '__main__':
  app.run(main)

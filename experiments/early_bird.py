"""Early-bird turnaround on a config (default: configs/default.py): how early each level's mask settles, how
close the early-bird mask is to the mask of full training, and the training a search that stopped at the
early-bird step would not need.

Runs `lth_jax.run` with `pruning.turnaround='early_bird'` (evaluating every --eval_every steps, so that
masks can be compared), then, for every trial and level, re-derives from the level's checkpoint the mask
pruned from the early-bird weights and the mask pruned from the final weights, checks that their distance
is the recorded `early_bird_distance_to_end`, and prints one row per level and the steps saved in all.
With --compare (the default) the same config also runs with its masks pruned at the end of training (in
WORKDIR/full), and each level's ticket accuracy is printed both ways.

    python -m experiments.early_bird --workdir=/tmp/lth_early_bird                 # default config, 3 levels
    python -m experiments.early_bird --workdir=W --config=configs/resnet18_cifar10.py --levels=5 \\
        --eval_every=1000 --config.dataset.data_dir=DIR
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

import lth_jax
from lth_jax import config as config_lib
from lth_jax import masks as masks_lib
from lth_jax import pruning
from lth_jax.search import early_bird
from lth_jax.search import workdir as workdir_lib
from lth_jax.training import checkpoints
from experiments import common

FLAGS = flags.FLAGS


def early_bird_config(
    config: ml_collections.ConfigDict, levels: int, eval_every: int, threshold: float, window: int
) -> ml_collections.ConfigDict:
  """`config` with early-bird turnaround, `levels` levels, an evaluation every `eval_every` steps, no controls."""
  config = config_lib.complete(config)
  with config.unlocked():
    config.pruning.levels = levels
    config.pruning.turnaround = 'early_bird'
    config.pruning.early_bird_threshold = threshold
    config.pruning.early_bird_window = window
    config.training.eval_every = eval_every
    config.training.eval_every_epochs = 0.0
    config.branches = ()
  return config


def check_levels(config: ml_collections.ConfigDict, workdir: str, records: Sequence[dict[str, Any]]) -> list[dict]:
  """One row per trial and level whose next level was pruned: the early-bird step, the recorded distance of
  its mask to the end of training's and the same distance recomputed from the level's checkpoint."""
  plan = config_lib.pruning_plan(config)
  rows = []
  for record in sorted(records, key=lambda record: (record['trial'], record['level'])):
    if record['branch'] != 'ticket' or record.get('early_bird_step') is None:
      continue
    level_tree = checkpoints.restore_tree(workdir_lib.level_directory(workdir, record['trial'], record['level']))
    prunable = plan.prunable(level_tree['params'])

    def would_prune(params: Any) -> Any:
      scores = pruning.criterion(plan.criterion)(pruning.CriterionInputs(params, level_tree['mask'], prunable))
      return pruning.next_mask(plan, record['level'] + 1, scores, level_tree['mask'], prunable)

    distance = early_bird.mask_distance(
        would_prune(level_tree['turnaround_params']), would_prune(level_tree['params']), prunable
    )
    rows.append(
        {
            'trial': record['trial'],
            'level': record['level'],
            'remaining': masks_lib.density(level_tree['mask'], prunable),
            'early_bird_step': record['early_bird_step'],
            'end_step': record['end_step'],
            'recorded_distance': record['early_bird_distance_to_end'],
            'recomputed_distance': distance,
            'steps_saved': record['end_step'] - record['early_bird_step'],
            'steps': record['steps'],
        }
    )
  return rows


def format_rows(rows: Sequence[dict[str, Any]], total_levels: int) -> str:
  """The table the script prints, and the cost saved in all."""
  lines = ['trial level remaining early_bird_step/end  distance_to_end (recorded, recomputed)  steps saved']
  for row in rows:
    lines.append(
        f'{row["trial"]:5d} {row["level"]:5d} {row["remaining"]:8.2%}  {row["early_bird_step"]:7d}/{row["end_step"]:<7d}'
        f'  {row["recorded_distance"]:.4f}, {row["recomputed_distance"]:.4f}'
        f'{"":21s}{row["steps_saved"]:6d} of {row["steps"]}'
    )
  saved, trained = sum(row['steps_saved'] for row in rows), sum(row['steps'] for row in rows)
  lines.append(
      f'early bird found in {len(rows)} of {total_levels} ticket runs; stopping each of those runs there '
      f'would save {saved} of their {trained} steps ({saved / max(1, trained):.0%})'
  )
  return '\n'.join(lines)


def compare_tickets(early: Sequence[dict[str, Any]], full: Sequence[dict[str, Any]]) -> str:
  """Each level's ticket accuracy (mean over trials) with early-bird turnaround and with masks pruned at the end."""

  def by_level(records: Sequence[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    levels: dict[int, list[dict[str, Any]]] = {}
    for record in records:
      if record['branch'] == 'ticket':
        levels.setdefault(record['level'], []).append(record)
    return levels

  early_levels, full_levels = by_level(early), by_level(full)
  metric = early[0]['metric']
  lines = [f'level remaining  {metric} (early bird)  {metric} (pruned at the end)']
  for level in sorted(early_levels):
    mean_early = sum(record[metric] for record in early_levels[level]) / len(early_levels[level])
    mean_full = sum(record[metric] for record in full_levels[level]) / len(full_levels[level])
    lines.append(
        f'{level:5d} {early_levels[level][0]["fraction_remaining"]:8.2%}  {mean_early:22.4f}  {mean_full:26.4f}'
    )
  return '\n'.join(lines)


def main(argv: Sequence[str]) -> None:
  del argv
  common.quiet_logging()
  config = early_bird_config(FLAGS.config, FLAGS.levels, FLAGS.eval_every, FLAGS.threshold, FLAGS.window)
  results = lth_jax.run(config, os.path.join(FLAGS.workdir, 'early_bird'))
  rows = check_levels(config, os.path.join(FLAGS.workdir, 'early_bird'), results.records)
  for row in rows:
    if abs(row['recorded_distance'] - row['recomputed_distance']) > 1e-9:
      raise SystemExit(
          f'trial {row["trial"]} level {row["level"]}: the recorded distance does not match its checkpoint'
      )
  text = format_rows(rows, config.trials * (FLAGS.levels + 1))  # every ticket run, the dense one included
  if FLAGS.compare:
    full_config = config_lib.complete(config)
    with full_config.unlocked():
      full_config.pruning.turnaround = 'step'
    full = lth_jax.run(full_config, os.path.join(FLAGS.workdir, 'full'))
    text += '\n\n' + compare_tickets(results.records, full.records)
  print(text)
  path = os.path.join(FLAGS.workdir, 'early_bird.txt')
  with open(path + '.partial', 'w') as file:
    file.write(text + '\n')
  os.replace(path + '.partial', path)


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', 'configs/default.py', 'The lottery config.')
  flags.DEFINE_string('workdir', None, 'Where the run keeps its records and checkpoints.', required=True)
  flags.DEFINE_integer('levels', 3, 'Pruning levels after the dense level 0.')
  flags.DEFINE_integer('eval_every', 100, 'Steps between evaluations (the masks compared).')
  flags.DEFINE_float('threshold', 0.1, 'The normalized Hamming distance below which the mask has settled.')
  flags.DEFINE_integer('window', 5, 'Consecutive distances below the threshold.')
  flags.DEFINE_bool('compare', True, 'Also run the config with masks pruned at the end of training (WORKDIR/full).')
  app.run(main)

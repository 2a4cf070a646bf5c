"""Accuracy against fraction of weights remaining for the ticket and its control branches, with
mean and min/max over trials (the shape of Figures 1-3 and 10 of the seed papers).

    python -m experiments.lottery_sweep --workdir=/tmp/lth_sweep            # embedded data, minutes on CPU
    python -m experiments.lottery_sweep --workdir=... --config=configs/conv4_cifar10.py   # on an accelerator

Writes WORKDIR/results.jsonl, accuracy_vs_sparsity.png, training_curves.png and sparsity_table.csv.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

import lth_jax
from lth_jax.reporting import plots
from lth_jax.reporting import style
from experiments import common

_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder.', required=True)
EMBEDDED_BRANCHES = ('reinit', 'permuted', 'random_pruning', 'snip', 'sign_reinit')
_TRIALS = flags.DEFINE_integer(
    'trials',
    None,
    'Trials per point (mean and min/max are plotted); default: 3 on '
    "the embedded config, the --config's own otherwise.",
)
_QUICK = flags.DEFINE_bool('quick', False, 'A smoke-test-sized run of the embedded config.')
_BRANCHES = flags.DEFINE_list(
    'branches',
    None,
    'Control branches beside the ticket; default: '
    f"{','.join(EMBEDDED_BRANCHES)} on the embedded config, the --config's own otherwise.",
)
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Optional config file (default: the embedded one).')


def main(argv):
  del argv
  common.quiet_logging()
  if _CONFIG.value is not None:
    if _QUICK.value:
      raise app.UsageError(
          '--quick shrinks the embedded config; with --config, override its fields instead '
          '(e.g. --config.training.num_steps=300 --config.pruning.levels=2)'
      )
    config = _CONFIG.value
  else:
    config = common.embedded_config(_QUICK.value, 3)
    config.branches = EMBEDDED_BRANCHES
  if _TRIALS.value is not None:
    config.trials = _TRIALS.value
  if _BRANCHES.value is not None:
    config.branches = tuple(_BRANCHES.value)
  results = lth_jax.run(config, _WORKDIR.value)
  for path in plots.write_report(results.records, _WORKDIR.value, style.config_setting(config)):
    print(f'wrote {path}')


if __name__ == '__main__':
  app.run(main)

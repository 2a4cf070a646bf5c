"""Command-line entry point.

    python -m lth_jax.main --config=configs/default.py --workdir=/tmp/lth_default \
        --config.pruning.levels=5
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from lth_jax import data
from lth_jax import lottery
from lth_jax import validation

_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for results, checkpoints and logs.', required=True)
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to an ml_collections config file.',
                                          lock_config=True)


def main(argv: list[str]) -> None:
  """Runs the lottery experiment of --config in --workdir."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # keep checkpointing chatter out of the progress lines
  try:
    lottery.run(_CONFIG.value, _WORKDIR.value)
  except (validation.ConfigError, data.DatasetNotPreparedError) as error:
    sys.exit(f'lth_jax: {error}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)

"""`python -m lth_jax.main` with a full disk, for test_failures.py.

    python -m tests.fault_driver --config=... --workdir=...

runs the command line unchanged, except that writing the results file fails with ENOSPC (what a
full disk reports), as it would once the disk fills up after level 0's training.
"""

import errno
import os
import sys

from absl import app
from absl import flags

from lth_jax import main
from lth_jax import results


def _full_disk(path, records):
  del records
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


if __name__ == '__main__':
  results.write_records = _full_disk
  flags.mark_flags_as_required(['config'])
  sys.argv[0] = 'lth_jax.main'
  app.run(main.main, flags_parser=main.parse_flags)

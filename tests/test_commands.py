"""The commands `python -m lth_jax.main`, `.report` and `.tickets`: each starts without a warning and
explains itself with --help (exit status 0)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _help(module, *arguments):
  """`python -m MODULE ARGUMENTS --help`, completed."""
  return subprocess.run(
      [sys.executable, '-m', module, *arguments, '--help'],
      cwd=REPO,
      env=dict(os.environ, JAX_PLATFORMS='cpu'),
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )


def test_tickets_help_has_no_runpy_warning():
  completed = _help('lth_jax.tickets', 'export')
  assert completed.returncode == 0, completed.stderr
  assert completed.stderr == ''  # runpy warned when `import lth_jax` had imported lth_jax.tickets already
  assert '--workdir' in completed.stdout

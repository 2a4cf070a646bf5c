"""The commands `python -m lth_jax.main`, `.report` and `.tickets`: each starts without a warning and
explains itself with --help (exit status 0): what it does, which flags are required, what each flag
means and what it writes."""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _help(module, *arguments):
  """`python -m MODULE ARGUMENTS --help`, completed; its stderr must be empty (no runpy warning)."""
  completed = subprocess.run(
      [sys.executable, '-m', module, *arguments, '--help'],
      cwd=REPO,
      env=dict(os.environ, JAX_PLATFORMS='cpu'),
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert completed.returncode == 0, completed.stderr
  assert completed.stderr == ''  # runpy warned when `import lth_jax` had imported lth_jax.tickets already
  return completed.stdout


def test_main_help_says_what_is_required_and_written():
  text = _help('lth_jax.main')
  assert 'Usage: python -m lth_jax.main --config=CONFIG_FILE[:VARIANT] --workdir=DIR' in text
  assert not re.search(r'\S {3,}--config\.', text), 'a usage line broken by a backslash continuation'
  assert '--config and --workdir are required' in text
  assert '--config: Required.' in text and '--workdir: Required.' in text
  assert all(name in text for name in ('results.jsonl', 'config.json', 'checkpoints/', 'tensorboard/'))


def test_report_help_names_every_file_it_writes():
  text = _help('lth_jax.report')
  assert '--workdir is required' in text and '--workdir: Required.' in text
  for name in ('accuracy_vs_sparsity.png', 'training_curves.png', 'sparsity_table.csv', 'layer_density.csv'):
    assert name in text
  assert 'layer_density.png' in text and 'mask_overlap.csv' in text


def test_tickets_export_help_describes_every_flag():
  text = _help('lth_jax.tickets', 'export')
  assert "Writes a finished level's winning ticket to one .npz file" in text
  options = text[text.index('options:') :]
  for flag in ('--workdir', '--level', '--trial', '--out', '--masks_only'):
    line = next(line for line in options.splitlines() if line.strip().startswith(flag))
    assert len(line.split()) > 2, f'{flag} has no description: {line!r}'

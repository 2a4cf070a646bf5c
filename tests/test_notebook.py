"""The Colab notebook runs top to bottom on CPU with a tiny config (its code cells, without magics)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, 'experiments', 'colab_tpu.ipynb')


def notebook_script(path: str) -> str:
  """The notebook's code cells as one script; IPython magics and shell lines are left out, and a cell
  ending in a bare expression keeps it as a statement."""
  cells = json.load(open(path))['cells']
  lines = []
  for cell in cells:
    if cell['cell_type'] != 'code':
      continue
    lines.extend(line.rstrip('\n') for line in cell['source'] if not line.lstrip().startswith(('%', '!')))
    lines.append('')
  return '\n'.join(lines)


@pytest.mark.slow
def test_notebook_runs_on_cpu_with_a_tiny_config(tmp_path):
  script = notebook_script(NOTEBOOK)
  assert 'lth_jax.run(config, WORKDIR)' in script and 'measure_lottery_ticket' in script
  environment = dict(
      os.environ,
      LTH_JAX_NOTEBOOK_TINY='1',
      LTH_JAX_NOTEBOOK_WORKDIR=str(tmp_path / 'run'),
      JAX_PLATFORMS='cpu',
      XLA_FLAGS='--xla_force_host_platform_device_count=1',
      MPLBACKEND='Agg',
  )
  completed = subprocess.run(
      [sys.executable, '-c', script], cwd=REPO, env=environment, capture_output=True, text=True, timeout=900
  )
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert 'random_ticket: L2 distance' in completed.stdout
  assert (tmp_path / 'run' / 'results.jsonl').exists()

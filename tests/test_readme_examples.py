"""README blocks that readers copy run as written: every ```python and ```bash block of the README runs
here, in README order and at a tiny size (the tests shrink the configs the blocks use), or is marked
`<!-- not run: REASON -->` on the line before it."""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import jax
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


# Each lth_jax.main command of a block gains these overrides unless it sets the field itself: a few steps
# per level, five levels (a block exports a level-5 ticket), one trial.
TINY_OVERRIDES = (
    '--config.training.num_steps=600',
    '--config.training.num_epochs=0',
    '--config.training.eval_every=300',
    '--config.pruning.levels=5',
    '--config.trials=1',
)
# Smaller still for the configs whose models cost more per step (a vision transformer); the block's
# command runs as written, on fewer steps and levels.
CONFIG_OVERRIDES = {
    'configs/own_model.py': (
        '--config.training.num_steps=60',
        '--config.training.eval_every=30',
        '--config.pruning.levels=2',
    ),
}
# Blocks that other tests of this file run (a substring of the block -> the test).
RUN_ELSEWHERE = {
    'optim.keep_pruned_at_zero(optax.sgd': 'test_the_python_api_block_on_the_pieces_runs_as_written',
    'linear_mode_connectivity(': 'test_the_linear_mode_connectivity_block_runs_on_a_finished_workdir',
}


def readme_blocks() -> list[tuple[int, str, str, str | None]]:
  """Every ```python and ```bash block of the README: (line, language, code, the reason it is not run)."""
  lines = (REPO / 'README.md').read_text().split('\n')
  blocks, index = [], 0
  while index < len(lines):
    fence = re.fullmatch(r'```(python|bash)', lines[index])
    if fence:
      end = lines.index('```', index + 1)
      marker = re.fullmatch(r'<!-- not run: (.+) -->', lines[index - 1]) if index else None
      blocks.append((index + 1, fence.group(1), '\n'.join(lines[index + 1 : end]), marker and marker.group(1)))
      index = end
    index += 1
  return blocks


def _commands(code: str) -> list[list[str]]:
  """The lth_jax and experiments commands of a bash block, as argument lists ([...] optional parts and
  comments dropped, set-up commands before && skipped)."""
  commands = []
  for line in code.replace('\\\n', ' ').split('\n'):
    line = re.sub(r'\s\[[^\]]*\]', '', line.split('  #')[0])
    for part in line.split('&&'):
      words = shlex.split(part)
      if (
          words
          and words[0].endswith('python')
          and words[1:2] == ['-m']
          and words[2].startswith(('lth_jax', 'experiments'))
      ):
        commands.append(words[1:])
  return commands


def _run_bash(code: str, folder: pathlib.Path) -> None:
  for command in _commands(code):  # from the repository's root, as the README's commands are; files in `folder`
    command = [
        re.sub(r'=(\w+\.npz)$', rf'={folder}/\1', argument.replace('/tmp/lth_', f'{folder}/lth_'))
        for argument in command
    ]
    if command[1] == 'lth_jax.main':
      given = {argument.split('=')[0] for argument in command}
      if '--sweep' in given:  # a sweep's variants need one level each here
        given.add('--config.pruning.levels')
        command.append('--config.pruning.levels=1')
      config_file = next((argument.split('=', 1)[1] for argument in command if argument.startswith('--config=')), '')
      overrides = CONFIG_OVERRIDES.get(config_file, ())
      command += [override for override in overrides if override.split('=')[0] not in given]
      given |= {override.split('=')[0] for override in overrides}
      command += [override for override in TINY_OVERRIDES if override.split('=')[0] not in given]
    if command[1] == 'experiments.own_model':
      command += ['--steps=60', '--levels=2', '--trials=1']
    completed = subprocess.run(
        [sys.executable, *command], cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, f'README command failed: {" ".join(command)}\n{completed.stderr[-3000:]}'


def _tiny_base_config():
  from lth_jax.config import schema  # pylint: disable=import-outside-toplevel

  config = schema.base_config()
  config.training.num_steps, config.training.eval_every, config.pruning.levels = 600, 300, 5
  config.model.hidden_sizes = (64, 32)
  return config


def test_every_readme_block_runs_or_says_why_not(tmp_path, monkeypatch):
  import lth_jax  # pylint: disable=import-outside-toplevel

  monkeypatch.chdir(tmp_path)  # blocks write files such as ticket.npz where they run
  monkeypatch.setattr(lth_jax.config, 'base_config', _tiny_base_config)
  ran = 0
  for line, language, code, not_run in readme_blocks():
    if not_run or any(key in code for key in RUN_ELSEWHERE):
      continue
    try:
      if language == 'bash':
        assert _commands(code), f'README.md:{line}: a bash block with no command to run; mark it <!-- not run: ... -->'
        _run_bash(code, tmp_path)
      else:
        exec(compile(code.replace('/tmp/lth_', f'{tmp_path}/lth_'), f'README.md:{line}', 'exec'), {})  # noqa: S102
    except Exception as error:  # pylint: disable=broad-except
      raise AssertionError(f'README.md:{line}: the {language} block does not run as written: {error}') from error
    ran += 1
  assert ran >= 10


def test_the_readme_marks_only_what_cannot_run_here():
  reasons = [not_run for _, _, _, not_run in readme_blocks() if not_run]
  assert len(reasons) == 4 and all(len(reason) > 20 for reason in reasons)
  for test in RUN_ELSEWHERE.values():
    assert test in globals(), test


def _python_block(containing: str) -> str:
  """The README's ```python block holding `containing`."""
  blocks = re.findall(r'```python\n(.*?)```', (REPO / 'README.md').read_text(), re.S)
  (block,) = [block for block in blocks if containing in block]
  return block


def test_the_python_api_block_on_the_pieces_runs_as_written():
  namespace: dict = {}
  exec(compile(_python_block('optim.keep_pruned_at_zero(optax.sgd'), 'README.md', 'exec'), namespace)  # noqa: S102
  ticket, keep_mask, prunable = namespace['ticket'], namespace['keep_mask'], namespace['prunable']
  for weight, keep, is_prunable in zip(*(jax.tree_util.tree_leaves(tree) for tree in (ticket, keep_mask, prunable))):
    if is_prunable:
      assert np.all(np.asarray(weight)[~np.asarray(keep)] == 0.0)  # pruned weights stay exactly 0.0
  assert int((~np.asarray(keep_mask['output']['kernel'])).sum()) == round(0.1 * 64 * 10)  # the output at its own rate
  assert int((~np.asarray(keep_mask['dense_0']['kernel'])).sum()) == round(0.2 * 16 * 64)


def test_a_layer_fraction_that_names_no_layer_is_refused():
  from lth_jax import masks, pruning  # pylint: disable=import-outside-toplevel

  params = {'Dense_0': {'kernel': np.ones((4, 3)), 'bias': np.zeros(3)}}
  with pytest.raises(
      ValueError, match=r'layer_fractions names no layer of these parameters: output \(their layers: Dense_0\)'
  ):
    pruning.prune(
        pruning.magnitude_scores(params),
        masks.ones_like(params),
        masks.prunable_tree(params),
        0.2,
        layer_fractions={'output': 0.1},
    )


def test_the_linear_mode_connectivity_block_runs_on_a_finished_workdir(tmp_path):
  from lth_jax.search import lottery  # pylint: disable=import-outside-toplevel
  from tests import helpers  # pylint: disable=import-outside-toplevel

  workdir = str(tmp_path / 'work')
  lottery.run(helpers.tiny_config(pruning__levels=2, branches=()), workdir, log=lambda line: None)
  block = _python_block('linear_mode_connectivity(').replace("workdir = '/tmp/lth_digits'", f'workdir = {workdir!r}')
  namespace: dict = {}
  exec(compile(block, 'README.md', 'exec'), namespace)  # noqa: S102
  path = namespace['path']
  assert len(path.errors) == 11 and path.alphas[0] == 0.0 and path.alphas[-1] == 1.0
  assert path.instability == pytest.approx(max(path.errors) - (path.errors[0] + path.errors[-1]) / 2)
  experiment = namespace['experiment']
  with pytest.raises(ValueError, match=r'evaluator must be a Trainer of a run alone \(experiment.trainer\(\)\)'):
    namespace['lth_jax'].analysis.linear_mode_connectivity(
        experiment.trainer(2), experiment.trainer(2), (None, None), None, start_step=0, end_step=1, data_seeds=(1, 2)
    )


def test_an_excluded_layer_that_names_no_layer_is_refused():
  from lth_jax import masks  # pylint: disable=import-outside-toplevel

  params = {'Dense_0': {'kernel': np.ones((4, 3))}, 'Dense_1': {'kernel': np.ones((3, 2))}}
  assert masks.prunable_tree(params, excluded_layers=('Dense_1',)) == {
      'Dense_0': {'kernel': True},
      'Dense_1': {'kernel': False},
  }
  with pytest.raises(
      ValueError, match=r'excluded_layers names no layer of these parameters: output \(their layers: Dense_0, Dense_1\)'
  ):
    masks.prunable_tree(params, excluded_layers=('output',))

"""README blocks that readers copy run as written (the blocks that train for minutes, or need ImageNet,
are run by other tests at a tiny size or not at all)."""

import pathlib
import re

import jax
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


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
  with pytest.raises(ValueError, match=r'evaluator must be a Trainer without a population \(experiment.trainer\(\)\)'):
    namespace['lth_jax'].analysis.linear_mode_connectivity(
        experiment.trainer(2), experiment.trainer(1), (None, None), None, start_step=0, end_step=1, data_seeds=(1, 2)
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

"""A population's checkpoint written in an earlier layout resumes: a run alone saved before every state
carried a member axis (state, sums and snapshots without it, curve metrics as plain numbers)."""

import chex
import numpy as np

from configs import default as default_config
from lth_jax import masks as masks_lib
from lth_jax.search import experiment as experiment_lib
from lth_jax.search import members as members_lib
from lth_jax.search import population as population_lib
from lth_jax.search import scalars as scalars_lib
from lth_jax.training import checkpoints
from lth_jax.training import parallel
from lth_jax.training import steps

END_STEP, CHECKPOINT_STEP = 40, 20
CLOCKS = ('examples_per_second', 'evaluation_seconds')


def _without_clocks(curve):
  return [{key: value for key, value in entry.items() if key not in CLOCKS} for entry in curve]


def test_a_run_alone_checkpointed_without_a_member_axis_resumes_as_a_population_of_one(tmp_path):
  config = default_config.get_config()
  config.training.num_steps = END_STEP
  experiment = experiment_lib.prepare(config)
  trainer = experiment.trainer()
  params, model_state = trainer.init_variables(0)
  member = members_lib.Member(0, 0, 'ticket', params, model_state, masks_lib.ones_like(params), 3, (10,))
  settings = population_lib.TrainingSettings(END_STEP, 10, 0, 2, 600.0, 1)
  workdir = str(tmp_path)

  # The run straight through, keeping the host copy of its checkpoint at CHECKPOINT_STEP.
  straight = population_lib.Population.create([member], trainer, 1, settings, workdir)
  kept = []
  result = trainer.train(
      straight.state,
      END_STEP,
      straight.seeds,
      straight.snapshot_steps,
      10,
      checkpoint_every=CHECKPOINT_STEP,
      on_checkpoint=lambda checkpoint: kept.append((parallel.to_host(checkpoint.arrays()), checkpoint.metadata())),
  )
  ((arrays, metadata),) = kept
  assert metadata['step'] == CHECKPOINT_STEP and list(arrays['snapshots']) == ['10']

  # The same checkpoint as a run alone wrote it before: no member axis anywhere, curve metrics numbers.
  earlier_arrays = {
      'state': steps.member(arrays['state'], 0),
      'train_sums': steps.member(arrays['train_sums'], 0),
      'snapshots': {step: steps.member(tree, 0) for step, tree in arrays['snapshots'].items()},
  }
  earlier_metadata = {
      **metadata,
      'curve': [members_lib.split_entry(entry, 0) for entry in metadata['curve']],
      'members': straight.keys,
      'optimizer_layout': 'inject_hyperparams',
  }
  assert np.shape(earlier_arrays['state'].step) == ()
  with checkpoints.RunCheckpoints(straight.directory) as running:
    running.save(CHECKPOINT_STEP, earlier_arrays, earlier_metadata)

  lines = []
  watch = population_lib.Watch(lines.append, None, scalars_lib.Scalars(None))
  (resumed,) = population_lib.train([member], trainer, 1, settings, workdir, watch)

  assert any(f'resuming at step {CHECKPOINT_STEP}/{END_STEP}' in line for line in lines), lines
  chex.assert_trees_all_equal(resumed.final_params, steps.member(parallel.to_host(result.state.params), 0))
  chex.assert_trees_all_equal(resumed.snapshots[10], members_lib.member_snapshot(result.snapshots[10], 0))
  expected = [members_lib.split_entry(entry, 0) for entry in result.curve]
  assert _without_clocks(resumed.curve) == _without_clocks(expected)
  assert [entry['step'] for entry in resumed.curve] == [10, 20, 30, 40]

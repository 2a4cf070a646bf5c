"""`python -m lth_jax.main`, with a pause for the kill and preemption tests of test_resume.py.

    LTH_TEST_PAUSE=CALL:STEP python -m tests.resume_driver --config=... --workdir=...

runs the command line unchanged, except that the CALL-th training run of the process (1: level 0's
ticket, 2: level 1's ticket, ...) stops between dispatches at absolute step STEP, prints 'PAUSED' and
waits there (at most two minutes) until a SIGTERM has been received, or until the test kills it. The
pause is what makes the kill land in the middle of a level, at a known step, on a slow machine too.
With LTH_TEST_EARLIER_OPTIMIZER_LAYOUT=1, populations write their checkpoints as lth_jax did before the
hyperparameters lived in the optimizer state (the layout a workdir of then holds). With
LTH_TEST_EARLIER_STATE_LAYOUT=1, a run alone (a population of one) writes its checkpoints as lth_jax did
before every state had a member axis: the state, metric sums and snapshots of that one run unstacked,
its curve's metrics numbers, and no 'member_axis' mark.
"""

import dataclasses
import os
import signal
import sys
import time

from absl import app
from absl import flags

from lth_jax import main
from lth_jax import optim
from lth_jax.search import population
from lth_jax.training import parallel
from lth_jax.training import steps
from lth_jax.training import trainer as trainer_lib


def _sigterm_received() -> bool:
  handler = signal.getsignal(signal.SIGTERM)
  return bool(getattr(getattr(handler, '__self__', None), 'requested', False))


def _pause_at(call: int, step: int) -> None:
  """Wraps Trainer.train so that its `call`-th run pauses at `step`."""
  original = trainer_lib.Trainer.train
  calls = []

  def train(self, state, *args, should_stop=None, **kwargs):
    calls.append(None)
    index = len(calls)

    def stop(current):
      if index == call and current == step:
        print(f'PAUSED at step {current}', flush=True)
        deadline = time.monotonic() + 120
        while not _sigterm_received() and time.monotonic() < deadline:
          time.sleep(0.01)
      return should_stop(current) if should_stop is not None else False

    return original(self, state, *args, should_stop=stop, **kwargs)

  trainer_lib.Trainer.train = train


def _save_in_the_earlier_optimizer_layout() -> None:
  """Makes populations save their optimizer state without its hyperparameters, and no layout mark."""

  def save(self, running, checkpoint):
    state = dataclasses.replace(checkpoint.state, opt_state=optim.without_hyperparameters(checkpoint.state.opt_state))
    earlier = dataclasses.replace(checkpoint, state=state)
    running.save(earlier.step, earlier.arrays(), {**earlier.metadata(), 'members': self.keys})

  population.Population.save = save


def _save_runs_alone_in_the_earlier_state_layout() -> None:
  """Makes a population of one member save its checkpoints as the plain Trainer of a run alone did."""
  original = population.Population.save

  def save(self, running, checkpoint):
    if self.slots != 1:
      return original(self, running, checkpoint)
    mesh = self.trainer.mesh
    earlier = dataclasses.replace(
        checkpoint,
        state=parallel.put_replicated(steps.member(parallel.to_host(checkpoint.state), 0), mesh),
        train_sums=parallel.put_replicated(steps.member(parallel.to_host(checkpoint.train_sums), 0), mesh),
        snapshots={step: steps.member(snapshot, 0) for step, snapshot in checkpoint.snapshots.items()},
        curve=[
            {key: value[0] if isinstance(value, list) else value for key, value in entry.items()}
            for entry in checkpoint.curve
        ],
    )
    metadata = {**earlier.metadata(), 'members': self.keys, 'optimizer_layout': optim.STATE_LAYOUT}
    return running.save(earlier.step, earlier.arrays(), metadata)

  population.Population.save = save


if __name__ == '__main__':
  if os.environ.get('LTH_TEST_EARLIER_OPTIMIZER_LAYOUT'):
    _save_in_the_earlier_optimizer_layout()
  if os.environ.get('LTH_TEST_EARLIER_STATE_LAYOUT'):
    _save_runs_alone_in_the_earlier_state_layout()
  if os.environ.get('LTH_TEST_PAUSE'):
    pause_call, pause_step = map(int, os.environ['LTH_TEST_PAUSE'].split(':'))
    _pause_at(pause_call, pause_step)
  flags.mark_flags_as_required(['config'])
  sys.argv[0] = 'lth_jax.main'
  app.run(main.main)

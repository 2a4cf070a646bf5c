"""Stopping on request: a SIGTERM (a preemptible VM, a batch scheduler) asks the training loop to
checkpoint its current step and stop; on several hosts, JAX's preemption sync point makes every host
stop at the same step."""

from __future__ import annotations

import signal
import threading
from typing import Any

import jax
from jax.experimental import multihost_utils


class StopRequest:
  """A SIGTERM handler that asks the training loop to stop: it only sets `requested`, and the loop
  checks it between dispatches, checkpoints the current step and raises `Preempted`.

  A second SIGTERM goes to the handler that was installed before (by default: terminate at once).
  With several processes, a stop is agreed through JAX's preemption sync point (all processes
  stop at the same step; JAX's coordination service receives the signal), so no handler is installed.
  """

  def __init__(self):
    self.requested = False
    self._previous: Any = None
    self._installed = False
    self._checks = 0

  def _handle(self, signum: int, frame: Any) -> None:
    if self.requested:  # the second one: do what would have happened without us
      self.restore()
      signal.raise_signal(signal.SIGTERM)
      return
    self.requested = True  # nothing else here: a handler that prints could interrupt a print

  def install(self) -> None:
    """Installs the handler (main thread of a single-process run only; elsewhere, a no-op)."""
    if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
      return
    previous = signal.signal(signal.SIGTERM, self._handle)
    self._previous = signal.SIG_DFL if previous is None else previous  # None: not set from Python
    self._installed = True

  def restore(self) -> None:
    """Puts back the handler that was installed before."""
    if self._installed:
      signal.signal(signal.SIGTERM, self._previous)
      self._installed = False

  def __call__(self, step: int) -> bool:
    """Whether to stop now (called by every process at the same points of training)."""
    if jax.process_count() > 1:
      self._checks += 1  # the sync point id must increase on every process alike
      try:
        return bool(multihost_utils.reached_preemption_sync_point(self._checks))
      except RuntimeError:  # no preemption service (jax.distributed started without one)
        return False
    return self.requested

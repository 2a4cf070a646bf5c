"""TensorBoard event files of each run's scalars (written with tensorboardX when it is installed)."""

from __future__ import annotations

import math
import os
from typing import Any

import jax


class Scalars:
  """TensorBoard event files of scalar metrics (written with tensorboardX; nothing if it is missing):
  `WORKDIR/tensorboard/trial_T/level_L_BRANCH` for each run's curve, `.../trial_T/levels` for each
  record's final metric against the level. Written by process 0 only."""

  def __init__(self, directory: str | None):
    self.directory = directory
    self._writer_class: Any = None
    self._writers: dict[str, Any] = {}
    if directory is not None and jax.process_index() == 0:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel

        self._writer_class = SummaryWriter
      except ImportError:
        pass

  @property
  def enabled(self) -> bool:
    return self._writer_class is not None

  def write(self, run: str, step: int, scalars: dict[str, Any]) -> None:
    """Adds the numbers among `scalars` at `step` to the events of `run` (a folder below the directory)."""
    if self._writer_class is None:
      return
    if run not in self._writers:
      self._writers[run] = self._writer_class(os.path.join(str(self.directory), run))
    for tag, value in scalars.items():  # (a diverged run's NaNs are left out: TensorBoard cannot plot them)
      if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        self._writers[run].add_scalar(tag, value, step)
    self._writers[run].flush()

  def close(self, run: str | None = None) -> None:
    """Closes the event file of `run` (of every run when None)."""
    for name in [run] if run is not None else list(self._writers):
      writer = self._writers.pop(name, None)
      if writer is not None:
        writer.close()

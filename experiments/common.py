"""Shared pieces of the experiment scripts: the base config and atomic text outputs."""

from __future__ import annotations

import os
import tempfile

from absl import flags
from absl import logging
import ml_collections

from lth_jax import config_schema


def embedded_config(quick: bool, trials: int) -> ml_collections.ConfigDict:
  """The embedded default (LeNet-300-100 on MNIST-1D); `quick` shrinks it to a smoke test."""
  config = config_schema.base_config()
  config.trials = trials
  config.training.learning_rate = 2e-3
  config.training.num_steps = 300 if quick else 3000
  config.training.eval_every = 100 if quick else 500
  config.pruning.levels = 2 if quick else 8
  config.model.hidden_sizes = (64, 32) if quick else (300, 100)
  return config


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically (temporary file in the same folder, then rename)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=directory, prefix='.tmp-')
  with os.fdopen(handle, 'w') as file:
    file.write(text)
  os.replace(temporary, path)


def quiet_logging() -> None:
  """Keeps checkpointing chatter out of the progress lines unless --verbosity was given."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)

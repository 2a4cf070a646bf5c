"""Orbax checkpoints of weight and mask trees: rewind snapshots and each level's final weights and mask.

Orbax writes each checkpoint into a temporary folder and renames it when complete, so a checkpoint
folder either holds a whole tree or does not exist.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


def save_tree(directory: str, tree: Any) -> None:
  """Saves a tree of arrays to `directory` (replacing it), waiting until the write is committed."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(directory), tree, force=True)
  checkpointer.wait_until_finished()
  checkpointer.close()


def restore_tree(directory: str, like: Any | None = None) -> Any:
  """Restores the tree saved in `directory` (as numpy arrays shaped like `like`, when given)."""
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'no checkpoint at {directory}')
  checkpointer = ocp.StandardCheckpointer()
  try:
    return checkpointer.restore(directory, like) if like is not None else checkpointer.restore(directory)
  finally:
    checkpointer.close()

"""What a run may take from Python instead of its config: a flax module (or a builder of one), a
dataset, a task (loss and metrics) and a prunable rule (`lth_jax.run(config, workdir, model=...,
dataset=..., task=..., prunable=...)`).

Each part given is recorded in the workdir's config.json under a 'python:' name (the module's class and
its fields, the dataset's name, sizes and a hash of its arrays, the loss's and rule's names, the metrics), so a re-run with
another part is refused as a config change, and a config.json read back says what ran."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from typing import Any, Callable

import flax.linen as nn
import ml_collections
import numpy as np

from lth_jax import data as data_lib
from lth_jax import masks as masks_lib
from lth_jax import tasks as tasks_lib
from lth_jax.config import errors
from lth_jax.importing import PYTHON_PREFIX

ModelOrBuilder = nn.Module | Callable[[int], nn.Module]


@dataclasses.dataclass(frozen=True)
class CustomParts:
  """The parts of a run given from Python (None: from the config)."""

  model: ModelOrBuilder | None = None  # a flax module, or builder(num_outputs) -> module
  dataset: data_lib.Dataset | None = None  # e.g. lth_jax.data.from_arrays(...)
  task: tasks_lib.Task | None = None
  prunable: masks_lib.PrunableRule | None = None  # rule(path, leaf) -> bool
  # How config.json names the dataset: its name and a hash of its arrays, 'python:arrays@1f2e3d4c5b6a'.
  dataset_label: str = dataclasses.field(init=False, default='')

  def __post_init__(self) -> None:
    if self.model is not None and not (isinstance(self.model, nn.Module) or callable(self.model)):
      raise errors.ConfigError(f'model={self.model!r}: pass a flax module or a function num_outputs -> module')
    if self.dataset is not None and not isinstance(self.dataset, (data_lib.ArrayDataset, data_lib.StreamingDataset)):
      raise errors.ConfigError(
          f'dataset: got {type(self.dataset).__name__}; pass lth_jax.data.from_arrays(...) or '
          'lth_jax.data.from_source(...)'
      )
    if self.task is not None and not isinstance(self.task, tasks_lib.Task):
      raise errors.ConfigError(f'task: got {type(self.task).__name__}; pass an lth_jax.tasks.Task')
    if self.prunable is not None and not callable(self.prunable):
      raise errors.ConfigError(f'prunable={self.prunable!r}: pass a function (path, leaf) -> bool')
    if self.dataset is not None:
      object.__setattr__(self, 'dataset_label', PYTHON_PREFIX + self.dataset.name + content_hash(self.dataset))

  def arguments(self) -> dict[str, Any]:
    """The parts as `lth_jax.run` takes them: {'model': ..., 'dataset': ..., 'task': ..., 'prunable': ...}."""
    return {'model': self.model, 'dataset': self.dataset, 'task': self.task, 'prunable': self.prunable}

  @property
  def any(self) -> bool:
    """Whether any part is given."""
    return any(part is not None for part in (self.model, self.dataset, self.task, self.prunable))

  def build_model(self, num_outputs: int) -> nn.Module:
    """The given module (a builder is called with `num_outputs`)."""
    if isinstance(self.model, nn.Module):
      return self.model
    assert self.model is not None
    module = self.model(num_outputs)
    if not isinstance(module, nn.Module):
      raise errors.ConfigError(f'model: the builder returned {type(module).__name__}, not a flax module')
    return module

  def recorded(self, config: ml_collections.ConfigDict, model: nn.Module) -> ml_collections.ConfigDict:
    """`config` with the given parts written in as config.json records them ('python:' names)."""
    if not self.any:
      return config
    config = copy.deepcopy(config)
    with config.unlocked():
      if self.model is not None:
        config.model.name = PYTHON_PREFIX + type(model).__qualname__
        config.model.arguments = ml_collections.ConfigDict(module_fields(model))
      if self.dataset is not None:
        config.dataset.name = self.dataset_label
        config.dataset.num_train = self.dataset.num_train
        config.dataset.num_test = self.dataset.num_test
      if self.task is not None:
        config.task.loss = PYTHON_PREFIX + function_name(self.task.loss)
        config.task.metrics = tuple(metric.name for metric in self.task.metrics)
      if self.prunable is not None:
        config.pruning.prunable_patterns = (PYTHON_PREFIX + function_name(self.prunable),)
    return config


def content_hash(dataset: data_lib.Dataset) -> str:
  """'@' and a short hash of an in-memory dataset's arrays (their shapes, dtypes and bytes), so that a
  re-run on other arrays of the same name and sizes is a config change; '' for a streamed dataset."""
  if not isinstance(dataset, data_lib.ArrayDataset):
    return ''
  digest = hashlib.blake2b(digest_size=6)
  for array in (dataset.train_inputs, dataset.train_targets, dataset.test_inputs, dataset.test_targets):
    digest.update(f'{array.shape}{array.dtype.str}'.encode())
    for start in range(0, len(array), 4096):  # in blocks of examples: no copy of the whole array
      digest.update(np.ascontiguousarray(array[start : start + 4096]).tobytes())
  return '@' + digest.hexdigest()


def module_fields(module: nn.Module) -> dict[str, Any]:
  """A flax module's own fields as JSON values (nested modules and other objects by their repr)."""
  fields = {}
  for field in dataclasses.fields(module):
    if field.name in ('parent', 'name'):
      continue
    value = getattr(module, field.name)
    try:
      fields[field.name] = json.loads(json.dumps(value))
    except (TypeError, ValueError):
      fields[field.name] = repr(value)
  return fields


def function_name(function: Any) -> str:
  """A function's qualified name (an object's class name when it has none)."""
  return getattr(function, '__qualname__', type(function).__qualname__)

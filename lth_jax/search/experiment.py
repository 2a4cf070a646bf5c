"""What a validated config builds before any training: its resolved values (`lth_jax.config.RunSpec`),
the dataset, the model, the mesh, the cap on runs per program, a transferred ticket, and the Trainers
(one per population shape, built once)."""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from lth_jax import config as config_lib
from lth_jax import data as data_lib
from lth_jax import models as models_lib
from lth_jax import importing
from lth_jax import optim
from lth_jax import tasks as tasks_lib
from lth_jax.models import calling
from lth_jax.data import pipeline
from lth_jax.data import tfds_source
from lth_jax.search import packing
from lth_jax.search import custom as custom_lib
from lth_jax.training import feeds
from lth_jax.training import memory
from lth_jax import tickets as tickets_lib
from lth_jax.training import parallel
from lth_jax.training import steps
from lth_jax.training import trainer as trainer_lib


@dataclasses.dataclass
class Experiment:
  """What a validated config builds before any training: its resolved values, data, model and mesh."""

  spec: config_lib.RunSpec  # the config resolved: defaults filled, global batch, lengths in steps
  dataset: data_lib.Dataset
  model: Any
  mesh: jax.sharding.Mesh  # the mesh of one run alone: 1 x N (data parallel) where the batch divides
  task: tasks_lib.Task  # the loss and metrics (`lth_jax.tasks`)
  members_per_program: int = 1  # parallel.members_per_program, resolved (0 = auto becomes a number)
  ticket: tickets_lib.Ticket | None = None  # transfer.ticket, loaded and checked against the model
  # Built once per (population size, member groups, per-member hyperparameters); a sweep's variants of
  # one program shape share them (see `for_variant`).
  _trainers: dict[tuple[int, int, tuple[str, ...]], trainer_lib.Trainer] = dataclasses.field(
      default_factory=dict, repr=False
  )

  def _build_trainer(
      self, population_size: int, groups: int, member_hyperparameters: tuple[str, ...] = ()
  ) -> trainer_lib.Trainer:
    key = (population_size, groups, member_hyperparameters)
    if key not in self._trainers:
      training = self.spec.training
      mesh = (
          self.mesh
          if groups == parallel.member_groups(self.mesh)
          else parallel.create_mesh(self.spec.parallel.num_devices, groups)
      )
      like = next(iter(self._trainers.values())).feed if self._trainers else None
      self._trainers[key] = trainer_lib.Trainer(
          self.model,
          self.dataset,
          optim.from_config(training, self.total_steps, member_hyperparameters),
          mesh,
          training.batch_size,
          training.steps_per_dispatch,
          training.eval_batch_size,
          population_size,
          feed_like=like,
          member_hyperparameters=member_hyperparameters,
          task=self.task,
      )
    return self._trainers[key]

  @property
  def total_steps(self) -> int:
    """The length of training in steps."""
    return self.spec.training.num_steps

  def trainer(self, population_size: int = 1) -> trainer_lib.Trainer:
    """The Trainer of this experiment for a population of exactly `population_size` members (1: one run
    alone on this experiment's mesh) spread over the mesh's member groups (built once, then reused)."""
    if population_size == 1:
      return self._build_trainer(1, parallel.member_groups(self.mesh))
    layout = parallel.member_layout(
        population_size, self.mesh.devices.size, self.spec.training.batch_size, self.local_device_counts()
    )
    groups = layout[0] if layout and layout[1] == population_size else parallel.member_groups(self.mesh)
    return self._build_trainer(population_size, groups)

  def program_trainer(
      self, num_members: int, member_hyperparameters: tuple[str, ...] = ()
  ) -> tuple[trainer_lib.Trainer, int]:
    """(Trainer, member slots) of a population of `num_members` runs that carry their own values of
    `member_hyperparameters`: the experiment's own Trainer of one (`trainer()`) for a single run with none
    whose batch divides the devices, else a population laid out by `parallel.member_layout` (slots beyond
    `num_members` are padding)."""
    if num_members == 1 and not member_hyperparameters and parallel.member_groups(self.mesh) == 1:
      return self.trainer(), 1
    groups, slots = self.member_layout(num_members)
    return self._build_trainer(slots, groups, member_hyperparameters), slots

  def member_layout(self, num_members: int) -> tuple[int, int]:
    """(member groups, member slots) of a population of `num_members` runs on this experiment's devices
    (see `parallel.member_layout`); a ConfigError naming the fields when none fits."""
    batch = self.spec.training.batch_size
    found = parallel.member_layout(num_members, self.mesh.devices.size, batch, self.local_device_counts())
    if found is None:
      raise config_lib.ConfigError(
          f'parallel.members_per_program={self.spec.parallel.members_per_program}: a program of '
          f'{num_members} runs cannot be laid on the {self.mesh.devices.size} devices with '
          f'training.batch_size={batch} (no member grouping leaves a batch that divides its devices); change '
          'the batch size or parallel.num_devices'
      )
    return found

  def members_per_program_cap(self, cohort_sizes: tuple[int, int] | None = None) -> int:
    """The cap on runs per population: `parallel.members_per_program`, or with 0 (auto) the largest
    cohort whose program fits in device memory by `memory.footprint`'s estimate (at least 1), and on CPU
    devices no more runs than devices (one CPU device: one run at a time). Checks, before anything
    trains, that every population the run will form can be laid on the mesh, and that an explicit cap
    fits in memory where that can be estimated (a ConfigError saying what to set). `cohort_sizes`: the
    runs of (level 0, a pruned level) when they are not one search's (a sweep's variants packed together)."""
    spec = self.spec
    requested = spec.parallel.members_per_program
    level_zero, pruned_level = cohort_sizes or packing.largest_cohort(spec)
    largest = max(level_zero, pruned_level)
    batch = spec.training.batch_size

    @functools.cache
    def member() -> memory.MemberFootprint:  # traced only where a program of several runs is considered
      return memory.footprint(
          self.model, feeds.input_example(self.dataset), optim.from_config(spec.training, self.total_steps)
      )

    device_memory = memory.device_memory_bytes()
    resident = sum(
        int(getattr(self.dataset, name).nbytes)
        for name in ('train_inputs', 'train_targets')
        if hasattr(self.dataset, name)
    )

    def program_bytes(size: int) -> int:
      groups_, slots = self.member_layout(size)
      data = self.mesh.devices.size // groups_
      return member().device_bytes(slots // groups_, batch // data)

    def fits(size: int) -> bool:
      return (
          size == 1
          or device_memory is None
          or (program_bytes(size) + resident <= memory.USABLE_FRACTION * device_memory)
      )

    if requested == 0:
      cap = max([size for size in range(1, largest + 1) if fits(size)] or [1])
      if jax.default_backend() == 'cpu':  # XLA spreads one run over a CPU's cores: one run per device at most
        cap = min(cap, self.mesh.devices.size)
    else:
      cap = requested
      if min(cap, largest) > 1 and not fits(min(cap, largest)):
        assert device_memory is not None  # every size fits when the memory is unknown
        fitting = max([size for size in range(1, largest + 1) if fits(size)] or [1])
        raise config_lib.ConfigError(
            f'parallel.members_per_program={requested}: a program of {min(cap, largest)} runs needs about '
            f'{memory.format_bytes(program_bytes(min(cap, largest)) + resident)} per device, more than '
            f'{memory.USABLE_FRACTION:.0%} of its {memory.format_bytes(device_memory)}; set '
            f'parallel.members_per_program={fitting} (or 0 to choose by memory)'
        )
    for cohort in (level_zero, pruned_level):
      for group in packing.groups(list(range(cohort)), cap):
        if len(group) > 1:
          self.member_layout(len(group))
    return cap

  def for_variant(self, spec: config_lib.RunSpec, ticket: tickets_lib.Ticket | None) -> 'Experiment':
    """This experiment for another variant of a sweep that trains in the same programs (same data,
    model, mesh and program shape): its own resolved values and ticket, this one's dataset and Trainers."""
    return dataclasses.replace(self, spec=spec, ticket=ticket)

  def local_device_counts(self) -> tuple[int, ...] | None:
    """See `local_device_counts`: the constraint on member groups on this experiment's mesh."""
    return local_device_counts(self.mesh, self.dataset)

  def prunable(self, params: Any) -> Any:
    """The prunable-leaf tree of `params` under this config."""
    return self.spec.pruning.prunable(params)


def prepare(config: ml_collections.ConfigDict, custom: custom_lib.CustomParts | None = None) -> Experiment:
  """Validates `config` (raising `ConfigError` naming the field), builds the dataset, model and mesh,
  and resolves the config once into typed values (`lth_jax.config.resolve`). `custom`: parts given from
  Python instead of the config (`lth_jax.search.custom`). Checks the model against the data (its
  outputs against the labels, the loss and metrics on them) by shapes alone. No training happens here."""
  custom = custom or custom_lib.CustomParts()
  config_lib.check_config(config)
  num_devices = config_lib.parallel_spec(config).num_devices
  try:
    mesh = parallel.create_mesh(num_devices)
  except ValueError as error:
    raise config_lib.ConfigError(str(error)) from error
  try:
    dataset = custom.dataset if custom.dataset is not None else _configured_dataset(config)
    if custom.model is not None:
      model = custom.build_model(dataset.num_outputs)
    else:
      model = models_lib.build(config_lib.model_spec(config), dataset.num_outputs)
    task = custom.task or tasks_lib.from_names(dataset.task, **dataclasses.asdict(config_lib.task_spec(config)))
  except tfds_source.DatasetNotPreparedError:
    raise
  except ValueError as error:  # a dataset, model or task field the builders rejected
    raise config_lib.ConfigError(str(error)) from error
  param_shapes = _checked_shapes(model, dataset, task)
  config = custom.recorded(config, model)  # the spec names the parts given from Python as config.json does
  spec = config_lib.resolve(config, mesh.devices.size, dataset.num_train, param_shapes, custom.prunable)
  mesh = _run_mesh(spec, mesh, dataset)
  experiment = Experiment(spec=spec, dataset=dataset, model=model, mesh=mesh, task=task)
  return dataclasses.replace(
      experiment,
      members_per_program=experiment.members_per_program_cap(),
      ticket=_transferred_ticket(spec.transfer, param_shapes),
  )


def _configured_dataset(config: ml_collections.ConfigDict) -> data_lib.Dataset:
  """The dataset the config names (a ValueError for a dataset that was passed from Python)."""
  spec = config_lib.data_spec(config)
  if isinstance(spec.name, str) and spec.name.startswith(importing.PYTHON_PREFIX):
    raise ValueError(
        f'dataset.name={spec.name!r}: this dataset was passed from Python; pass it again, '
        'lth_jax.run(config, workdir, dataset=...)'
    )
  return data_lib.build(spec)


def _checked_shapes(model: Any, dataset: data_lib.Dataset, task: tasks_lib.Task) -> Any:
  """The model's parameter shapes, after checking by shapes alone that it runs on the data's inputs
  and that its outputs fit the labels, the loss and the metrics (a ConfigError in one line otherwise)."""
  example = feeds.input_example(dataset)
  batch = jax.ShapeDtypeStruct((2, *example.shape[1:]), example.dtype)
  try:
    shapes = calling.variable_shapes(model, example)
    outputs = jax.eval_shape(lambda variables, inputs: calling.apply(model, variables, inputs, False), shapes, batch)
  except Exception as error:  # pylint: disable=broad-except  (a user's module may raise anything)
    raise config_lib.ConfigError(
        f'the model fails on inputs of shape {tuple(batch.shape)} and dtype {batch.dtype}: '
        f'{tasks_lib.first_line(error)}'
    ) from None
  if not isinstance(outputs, jax.ShapeDtypeStruct):
    raise config_lib.ConfigError(
        f'the model returns {type(outputs).__name__}; it must return one array of outputs per batch'
    )
  targets = feeds.target_example(dataset, 2)
  num_classes = getattr(dataset, 'num_classes', None) if task.loss is tasks_lib.cross_entropy else None
  try:
    tasks_lib.check(task, outputs, targets, num_classes)
  except ValueError as error:
    raise config_lib.ConfigError(str(error)) from None
  param_shapes, _ = steps.split_variables(shapes)
  return param_shapes


def _run_mesh(spec: config_lib.RunSpec, mesh: jax.sharding.Mesh, dataset: data_lib.Dataset) -> jax.sharding.Mesh:
  """The mesh of one run alone: `mesh` (1 x N), or member groups where the batch does not divide the
  devices and programs may hold several runs; a ConfigError when the batch fits neither."""
  requested = spec.parallel.members_per_program
  if requested != 1:  # a run alone may need member groups where its batch does not divide the devices
    layout = parallel.member_layout(1, mesh.devices.size, spec.training.batch_size, local_device_counts(mesh, dataset))
    if layout is not None and layout[0] > 1:
      mesh = parallel.create_mesh(spec.parallel.num_devices, layout[0])
  try:
    parallel.check_batch_size(spec.training.batch_size, mesh)
  except ValueError as error:
    raise config_lib.ConfigError(
        str(error) + ('' if requested == 1 else ' (or parallel.members_per_program)')
    ) from error
  return mesh


def _transferred_ticket(transfer: config_lib.TransferSpec, param_shapes: Any) -> tickets_lib.Ticket | None:
  """The ticket of `transfer.ticket`, loaded and checked against the model's parameter shapes (a
  ConfigError naming the field when it is missing, damaged or of another architecture)."""
  path = transfer.ticket
  if not path:
    return None
  if not os.path.isfile(path):
    raise config_lib.ConfigError(
        f'transfer.ticket={path!r}: no such file (export one with `python -m '
        'lth_jax.tickets export --workdir=DIR --level=L --out=FILE`)'
    )
  try:
    ticket = tickets_lib.load_exported(path)
    shapes = jax.tree_util.tree_map(lambda shape: np.zeros(shape.shape, shape.dtype), param_shapes)
    tickets_lib.transfer_start(
        ticket, shapes, {}, transfer.start, transfer.output_layer, seed=0, where=f'transfer.ticket={path!r}'
    )
  except tickets_lib.TicketError as error:
    raise config_lib.ConfigError(str(error)) from error
  return ticket


def local_device_counts(mesh: jax.sharding.Mesh, dataset: data_lib.Dataset) -> tuple[int, ...] | None:
  """Every host's device count in the mesh when member groups must stay within hosts (streamed data
  on several hosts: each host reads its slice of every member's batch), else None."""
  if jax.process_count() == 1 or not isinstance(dataset, pipeline.StreamingDataset):
    return None
  counts: dict[int, int] = {}
  for device in mesh.devices.flat:
    counts[device.process_index] = counts.get(device.process_index, 0) + 1
  return tuple(counts.values())

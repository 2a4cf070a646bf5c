"""What a run minimizes and what it reports: a loss and named metrics (a `Task`).

    task = tasks.Task(loss=my_loss, metrics=(tasks.accuracy(), tasks.top_k_accuracy(5)))
    lth_jax.run(config, workdir, model=..., dataset=..., task=task)

The loss takes a batch, `loss(outputs, targets)`, and returns one scalar, the batch's mean; the train
step differentiates it. A metric returns one value per example, `metric(outputs, targets) -> (batch,)`;
a run reports its mean over the test set as `test_<name>` (the square root of the mean for a
root-mean metric such as RMSE). The first metric is the run's metric: its curve, its best value, the
report's plots and the winning-ticket stars use it.

Defaults by the dataset's kind: classification (softmax cross-entropy; accuracy) and regression (mean
squared error; RMSE). From a config, `task.loss` and `task.metrics` name built-ins ('cross_entropy',
'squared_error'; 'accuracy', 'top_<k>_accuracy', 'rmse') or import paths 'package.module:name' (a loss
function, a `Metric`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lth_jax import importing

LossFunction = Callable[[jax.Array, jax.Array], jax.Array]
MetricFunction = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Metric:
  """A named per-example metric: `per_example(outputs, targets)` gives one value per example."""

  name: str  # reported as test_<name>, best_test_<name>
  per_example: MetricFunction
  higher_is_better: bool = True
  root: bool = False  # reported as the square root of the mean (RMSE from squared errors)
  total: str = ''  # the key of its sum among a step's metric sums ('' : the name)

  @property
  def total_name(self) -> str:
    """The key of this metric's sum in a step's metric sums."""
    return self.total or self.name


@dataclasses.dataclass(frozen=True)
class Task:
  """A loss (a batch's mean, one scalar) and the metrics a run reports, the first being the run's metric."""

  loss: LossFunction
  metrics: tuple[Metric, ...]
  name: str = 'custom'
  # The loss of each example alone, for evaluation batches padded with weights; None: the loss applied
  # to every example as a batch of one.
  per_example_loss: LossFunction | None = None

  def __post_init__(self) -> None:
    metrics = tuple(self.metrics)
    if not metrics:
      raise ValueError("a Task needs at least one metric (the first is the run's metric)")
    if not all(isinstance(metric, Metric) for metric in metrics):
      raise ValueError(f'Task.metrics must be lth_jax.tasks.Metric values, got {metrics!r}')
    names = [metric.name for metric in metrics]
    if len(set(names)) != len(names) or 'loss' in names:
      raise ValueError(f'Task.metrics: names must be distinct and not "loss", got {names}')
    object.__setattr__(self, 'metrics', metrics)

  @property
  def metric_name(self) -> str:
    """The record field of the run's metric, e.g. 'test_accuracy'."""
    return f'test_{self.metrics[0].name}'

  @property
  def higher_is_better(self) -> bool:
    """Whether a larger value of the run's metric is better."""
    return self.metrics[0].higher_is_better

  def example_losses(self, outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Each example's loss, shape (batch,)."""
    if self.per_example_loss is not None:
      return self.per_example_loss(outputs, targets)
    return jax.vmap(lambda output, target: self.loss(output[None], target[None]))(outputs, targets)

  def sums(self, outputs: jax.Array, targets: jax.Array, weights: jax.Array | None = None) -> dict[str, jax.Array]:
    """A batch's metric sums for accumulation: 'loss', 'count' and one per metric (inside a program)."""
    if weights is None:
      weights = jnp.ones(outputs.shape[0], jnp.float32)
    sums = {'loss': (self.example_losses(outputs, targets) * weights).sum(), 'count': weights.sum()}
    for metric in self.metrics:
      sums[metric.total_name] = (metric.per_example(outputs, targets).astype(jnp.float32) * weights).sum()
    return sums

  def summary(self, sums: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Means of accumulated sums: {prefix_loss, prefix_<metric>...} (host values; lists for a population)."""
    count = np.maximum(np.asarray(sums['count'], np.float64), 1.0)
    means = {f'{prefix}_loss': np.asarray(sums['loss'], np.float64) / count}
    for metric in self.metrics:
      mean = np.asarray(sums[metric.total_name], np.float64) / count
      means[f'{prefix}_{metric.name}'] = np.sqrt(mean) if metric.root else mean
    return {name: value.tolist() if value.ndim else float(value) for name, value in means.items()}


# ------------------------------------------------------------------------------------------------
# Built-in losses and metrics.


def cross_entropy(outputs: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy of logits against integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(outputs, labels).mean()


def _example_cross_entropy(outputs: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(outputs, labels)


def squared_error(outputs: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean squared error over the batch (and over each example's outputs)."""
  return _example_squared_error(outputs, targets).mean()


def _example_squared_error(outputs: jax.Array, targets: jax.Array) -> jax.Array:
  targets = targets.reshape(outputs.shape)
  return jnp.mean(jnp.square(outputs - targets), axis=tuple(range(1, outputs.ndim)))


def _correct(outputs: jax.Array, labels: jax.Array) -> jax.Array:
  return (jnp.argmax(outputs, axis=-1) == labels).astype(jnp.float32)


def accuracy() -> Metric:
  """Top-1 accuracy of logits against integer labels."""
  return Metric('accuracy', _correct, total='correct')


@dataclasses.dataclass(frozen=True)
class _TopK:
  k: int

  def __call__(self, outputs: jax.Array, labels: jax.Array) -> jax.Array:
    top = jax.lax.top_k(outputs, self.k)[1]
    return jnp.any(top == labels[..., None], axis=-1).astype(jnp.float32)


def top_k_accuracy(k: int) -> Metric:
  """Whether the label is among the `k` largest logits, as `top_<k>_accuracy`."""
  if not isinstance(k, int) or k < 1:
    raise ValueError(f'top_k_accuracy: k must be a positive integer, got {k!r}')
  return Metric(f'top_{k}_accuracy', _TopK(k))


def rmse() -> Metric:
  """Root mean squared error (lower is better)."""
  return Metric('rmse', _example_squared_error, higher_is_better=False, root=True, total='squared_error')


CLASSIFICATION = Task(
    loss=cross_entropy, metrics=(accuracy(),), name='classification', per_example_loss=_example_cross_entropy
)
REGRESSION = Task(loss=squared_error, metrics=(rmse(),), name='regression', per_example_loss=_example_squared_error)
DEFAULTS = {'classification': CLASSIFICATION, 'regression': REGRESSION}
LOSSES = {'cross_entropy': CLASSIFICATION, 'squared_error': REGRESSION}
_TOP_K = re.compile(r'top_(\d+)_accuracy')


def for_dataset(kind: str) -> Task:
  """The default task of a dataset kind ('classification' or 'regression')."""
  if kind not in DEFAULTS:
    raise ValueError(f'unknown task {kind!r}; known: {", ".join(DEFAULTS)}')
  return DEFAULTS[kind]


def as_task(task: Task | str) -> Task:
  """`task` itself, or the default task of a dataset kind named by a string."""
  return for_dataset(task) if isinstance(task, str) else task


def metric_by_name(name: str) -> Metric:
  """A built-in metric ('accuracy', 'top_<k>_accuracy', 'rmse') or a `Metric` at an import path."""
  if name == 'accuracy':
    return accuracy()
  if name == 'rmse':
    return rmse()
  match = _TOP_K.fullmatch(name)
  if match:
    return top_k_accuracy(int(match.group(1)))
  if importing.is_import_path(name):
    value = importing.import_object(name, 'task.metrics')
    if not isinstance(value, Metric):
      raise ValueError(f'task.metrics: {name!r} is not an lth_jax.tasks.Metric (got {type(value).__name__})')
    return value
  raise ValueError(
      f"task.metrics: unknown metric {name!r}; built-in: accuracy, top_<k>_accuracy, rmse; or 'package.module:name'"
  )


def from_names(kind: str, loss: str, metrics: Sequence[str]) -> Task:
  """The task of a config's `task` section over a dataset of kind `kind`: the loss by name or import path
  ('': the kind's), the metrics by name or import path (empty: the kind's)."""
  default = for_dataset(kind)
  if not loss and not metrics:
    return default
  if not loss:
    loss_function, per_example, loss_name = default.loss, default.per_example_loss, default.name
  elif loss in LOSSES:
    loss_function, per_example, loss_name = LOSSES[loss].loss, LOSSES[loss].per_example_loss, loss
  elif loss.startswith(importing.PYTHON_PREFIX):
    raise ValueError(
        f'task.loss={loss!r}: this loss was passed from Python; pass the task again, lth_jax.run(..., task=...)'
    )
  elif importing.is_import_path(loss):
    loss_function, per_example, loss_name = importing.import_object(loss, 'task.loss'), None, loss
    if not callable(loss_function):
      raise ValueError(f'task.loss={loss!r} is not a function')
  else:
    raise ValueError(f"task.loss: unknown loss {loss!r}; built-in: {', '.join(LOSSES)}; or 'package.module:function'")
  chosen = tuple(metric_by_name(name) for name in metrics) if metrics else default.metrics
  return Task(loss=loss_function, metrics=chosen, name=loss_name, per_example_loss=per_example)


def check(task: Task, outputs: Any, targets: Any, num_classes: int | None = None) -> None:
  """Checks `task` on the shapes of a model's outputs and a batch's targets (jax.ShapeDtypeStruct or
  arrays, batch of at least 2) without computing anything: a ValueError in one line naming the loss
  or metric that fails, or the mismatch of outputs and labels (`num_classes`: of a classification
  dataset, which the outputs' last axis must match)."""
  outputs = jax.ShapeDtypeStruct(outputs.shape, outputs.dtype)
  targets = jax.ShapeDtypeStruct(targets.shape, targets.dtype)
  where = f'the model gives outputs of shape {tuple(outputs.shape)} for labels of shape {tuple(targets.shape)}'
  if num_classes is not None and (len(outputs.shape) != 2 or outputs.shape[-1] != num_classes):
    raise ValueError(f'{where}: {num_classes} classes need outputs of shape (batch, {num_classes})')
  if task.loss is squared_error and math.prod(outputs.shape[1:]) != math.prod(targets.shape[1:]):
    raise ValueError(f'{where}: each example needs as many outputs as targets')
  loss_shape = _result_shape(task.loss, 'the loss', outputs, targets)
  if loss_shape != ():
    raise ValueError(f'the loss must return one scalar (the batch mean), got shape {loss_shape}')
  for metric in task.metrics:
    values_shape = _result_shape(metric.per_example, f'metric {metric.name!r}', outputs, targets)
    if values_shape != (outputs.shape[0],):
      raise ValueError(
          f'metric {metric.name!r} must return one value per example, shape ({outputs.shape[0]},), got {values_shape}'
      )


def _result_shape(function: Callable[..., Any], what: str, outputs: Any, targets: Any) -> Any:
  """The shape of `function(outputs, targets)`, computing nothing (its type's name when it returns no
  array); a ValueError naming `what` when it fails on them."""
  try:
    result = jax.eval_shape(function, outputs, targets)
  except Exception as error:  # pylint: disable=broad-except  (a user's function may raise anything)
    raise ValueError(
        f"{what} fails on the model's outputs {tuple(outputs.shape)} and the labels {tuple(targets.shape)}: "
        f'{first_line(error)}'
    ) from None
  return getattr(result, 'shape', type(result).__name__)


def first_line(error: Exception) -> str:
  """An exception as one line: its type and the first line of its message."""
  text = str(error).strip().splitlines()
  return f'{type(error).__name__}: {text[0] if text else ""}'

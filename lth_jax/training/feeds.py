"""How training and evaluation batches reach the Trainer's compiled programs.

Two feeds share one interface, so the train loop, the population (vmapped) step and SNIP's gradient
program are the same for both:

* `ResidentFeed` (an in-memory `ArrayDataset`): the whole training set lives on the devices (image
  datasets as uint8, normalized by the program); the host sends only example indices, a pure function
  of (seed, step), and the program gathers the batch.
* `StreamingFeed` (a `StreamingDataset`: imagenet2012, or cifar10/mnist with augmentation): every host
  reads and augments its slice of each batch with grain's reader threads (uint8 images), the slices
  become one global sharded array, and the program normalizes the images.

In both, step s of seed k always sees the same batch, so a resumed run or a population's lockstep
members see identical data.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import data as data_lib
from lth_jax.data import arrays as arrays_lib
from lth_jax.data import pipeline
from lth_jax.training import parallel

# Evaluation sets up to this size (as uint8 model inputs) are read once and kept on the devices.
EVALUATION_CACHE_BYTES = 256 * 2**20


class Feed(Protocol):
  """What the Trainer needs from a data source."""

  arrays: tuple  # device arrays every training program takes ((): none)
  num_train: int
  eval_batch_size: int

  def host_steps(self, seed: int, start_step: int, num_steps: int) -> Any:
    """This host's part of steps start_step .. start_step + num_steps - 1, leading axis the step."""

  def put(self, tree: Any, batch_axis: int, member_axis: int | None = None) -> Any:
    """Places host trees (from `host_steps`, stacked) on the mesh, split along `batch_axis` (and the
    members of a population, axis `member_axis`, over the mesh's members)."""

  def batch(self, arrays: tuple, item: Any) -> tuple[jax.Array, jax.Array]:
    """Traced: one step's (inputs, targets) from `arrays` and that step's item."""

  def batch_shapes(self, batch_size: int) -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
    """Shapes and dtypes of one step's (inputs, targets)."""

  def evaluation_batch(self, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Traced: model inputs and targets of one batch of `evaluation_groups`."""

  def evaluation_groups(self) -> Iterator[dict[str, jax.Array]]:
    """The evaluation set as device trees {'inputs', 'targets', 'weights'} of shape
    [batches, eval_batch_size, ...]; padding examples have weight 0."""


def input_example(dataset: data_lib.Dataset) -> jax.ShapeDtypeStruct:
  """A batch of one model input of `dataset` (shape and dtype, as its feed gives inputs to the model):
  float32 for normalized images, the arrays' own dtype otherwise (integer token ids stay integers), the
  streamed dataset's `model_input_dtype`."""
  if isinstance(dataset, arrays_lib.ArrayDataset) and dataset.input_normalization is None:
    return jax.ShapeDtypeStruct((1, *dataset.input_shape), dataset.train_inputs.dtype)
  if isinstance(dataset, pipeline.StreamingDataset):
    return jax.ShapeDtypeStruct((1, *dataset.input_shape), dataset.preprocessing.model_input_dtype)
  return jax.ShapeDtypeStruct((1, *dataset.input_shape), jnp.float32)


def target_example(dataset: data_lib.Dataset, batch_size: int) -> jax.ShapeDtypeStruct:
  """A batch of `batch_size` targets of `dataset` (shape and dtype)."""
  if isinstance(dataset, arrays_lib.ArrayDataset):
    targets = dataset.train_targets
    return jax.ShapeDtypeStruct((batch_size, *targets.shape[1:]), targets.dtype)
  return jax.ShapeDtypeStruct((batch_size,), jnp.int32)


def evaluation_batch_size(requested: int, num_test: int, num_devices: int) -> int:
  """The evaluation batch: at most `requested` (and no larger than the padded test set), a multiple
  of the device count."""
  size = min(requested, -(-num_test // num_devices) * num_devices)
  return max(num_devices, size // num_devices * num_devices)


def pad_steps(tree: Any, length: int) -> Any:
  """Pads the leading (step) axis of every leaf with zeros to `length`."""

  def pad(leaf):
    leaf = np.asarray(leaf)
    if leaf.shape[0] == length:
      return leaf
    return np.concatenate([leaf, np.zeros((length - leaf.shape[0], *leaf.shape[1:]), leaf.dtype)])

  return jax.tree_util.tree_map(pad, tree)


def stack(trees: Sequence[Any], axis: int) -> Any:
  """Stacks host trees of one structure along a new `axis` (one tree: a view with that axis, no copy of
  its leaves, which may be a dispatch's streamed images)."""
  if len(trees) == 1:
    return jax.tree_util.tree_map(lambda leaf: np.expand_dims(np.asarray(leaf), axis), trees[0])
  return jax.tree_util.tree_map(lambda *leaves: np.stack(leaves, axis=axis), *trees)


class ResidentFeed:
  """The training set on the devices; batches gathered in the program from host-computed indices."""

  def __init__(
      self,
      dataset: arrays_lib.ArrayDataset,
      mesh: jax.sharding.Mesh,
      batch_size: int,
      eval_batch_size: int,
      training_arrays: tuple[Any, ...] | None = None,
      shapes_only: bool = False,
  ):
    """`training_arrays`: another feed's copy of the training set on the same devices (another mesh
    shape). `shapes_only`: nothing is put on the devices (which need not be attached: a TPU topology
    compiled for ahead of time); `arrays` are shapes, for lowering the programs only."""
    self.dataset, self.mesh, self.batch_size = dataset, mesh, batch_size
    self.num_train = dataset.num_train
    self.eval_batch_size = evaluation_batch_size(eval_batch_size, dataset.num_test, mesh.devices.size)
    replicated = parallel.replicated(mesh)
    if shapes_only:
      self.arrays = tuple(
          jax.ShapeDtypeStruct(array.shape, array.dtype, sharding=replicated)
          for array in (dataset.train_inputs, dataset.train_targets)
      )
      return
    if training_arrays is not None:
      self.arrays = tuple(jax.device_put(array, replicated) for array in training_arrays)
    else:
      self.arrays = (
          jax.device_put(dataset.train_inputs, replicated),
          jax.device_put(dataset.train_targets, replicated),
      )
    self._test_batches = self._put_test_batches()

  def _put_test_batches(self) -> dict[str, jax.Array]:
    """Pads the test set to whole evaluation batches, with weight 0 on the padding."""
    num_test, size = self.dataset.num_test, self.eval_batch_size
    num_batches = -(-num_test // size)
    padding = num_batches * size - num_test

    def batched(array):
      padded = np.concatenate([array, np.zeros((padding, *array.shape[1:]), array.dtype)])
      return parallel.put_batch(padded.reshape(num_batches, size, *array.shape[1:]), self.mesh, 1)

    return {
        'inputs': batched(self.dataset.test_inputs),
        'targets': batched(self.dataset.test_targets),
        'weights': batched(np.ones(num_test, np.float32)),
    }

  def host_steps(self, seed: int, start_step: int, num_steps: int) -> np.ndarray:
    """Example indices (num_steps, batch) — the whole global batch on every host."""
    return arrays_lib.batch_indices(seed, start_step, num_steps, self.num_train, self.batch_size)

  def put(self, tree: Any, batch_axis: int, member_axis: int | None = None) -> Any:
    return parallel.put_batch(tree, self.mesh, batch_axis, member_axis)

  def _model_inputs(self, inputs: jax.Array) -> jax.Array:
    """Traced: uint8 images normalized per channel (other inputs as they are)."""
    if self.dataset.input_normalization is None:
      return inputs
    return pipeline.normalize_on_device(inputs, *self.dataset.input_normalization)

  def batch(self, arrays: tuple, item: jax.Array) -> tuple[jax.Array, jax.Array]:
    train_inputs, train_targets = arrays
    return self._model_inputs(train_inputs[item]), train_targets[item]

  def batch_shapes(self, batch_size: int) -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
    targets = self.dataset.train_targets
    return (
        jax.ShapeDtypeStruct((batch_size, *self.dataset.input_shape), input_example(self.dataset).dtype),
        jax.ShapeDtypeStruct((batch_size, *targets.shape[1:]), targets.dtype),
    )

  def evaluation_batch(self, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    return self._model_inputs(batch['inputs']), batch['targets']

  def evaluation_groups(self) -> Iterator[dict[str, jax.Array]]:
    yield self._test_batches


class StreamingFeed:
  """Batches read, augmented and sent by every host for its own devices (grain over tfds files)."""

  def __init__(
      self,
      dataset: pipeline.StreamingDataset,
      mesh: jax.sharding.Mesh,
      batch_size: int,
      eval_batch_size: int,
      num_threads: int = 16,
      prefetch: int = 16,
  ):
    self.dataset, self.mesh, self.batch_size = dataset, mesh, batch_size
    self.num_train = dataset.num_train
    self.num_threads, self.prefetch = num_threads, prefetch
    self.eval_batch_size = evaluation_batch_size(eval_batch_size, dataset.num_test, mesh.devices.size)
    self.arrays = ()
    self._streams: dict[int, tuple[Iterator[dict[str, np.ndarray]], int]] = {}  # seed -> (batches, next step)
    self._cached_evaluation: dict[str, jax.Array] | None = None

  def host_steps(self, seed: int, start_step: int, num_steps: int) -> dict[str, np.ndarray]:
    """This host's slices {'inputs': uint8 (num_steps, local batch, H, W, C), 'targets'} — continuing
    the open stream of `seed` when it is at `start_step` (its reader threads are already ahead)."""
    stream, next_step = self._streams.get(seed, (None, -1))
    if stream is None or next_step != start_step:
      step_batches = self.dataset.step_batches(seed, self.batch_size, jax.process_index(), jax.process_count())
      stream = pipeline.training_batches(step_batches, start_step, 2**62, self.num_threads, self.prefetch)
    batches = [next(stream) for _ in range(num_steps)]
    self._streams[seed] = (stream, start_step + num_steps)
    return stack(batches, 0)

  def forget_streams(self, keep: Sequence[int] = ()) -> None:
    """Closes the open streams of every seed not in `keep` (stops their read-ahead)."""
    for seed in [seed for seed in self._streams if seed not in keep]:
      del self._streams[seed]

  def put(self, tree: Any, batch_axis: int, member_axis: int | None = None) -> Any:
    return jax.tree_util.tree_map(lambda leaf: parallel.put_local_batch(leaf, self.mesh, batch_axis, member_axis), tree)

  def batch(self, arrays: tuple, item: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    return self.evaluation_batch(item)

  def evaluation_batch(self, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    return self.dataset.preprocessing.model_inputs(batch['inputs']), batch['targets']

  def batch_shapes(self, batch_size: int) -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
    return (
        jax.ShapeDtypeStruct((batch_size, *self.dataset.input_shape), self.dataset.preprocessing.model_input_dtype),
        jax.ShapeDtypeStruct((batch_size,), jnp.int32),
    )

  def _evaluation_batches(self) -> Iterator[dict[str, np.ndarray]]:
    return pipeline.evaluation_batches(
        self.dataset.test_records,
        self.dataset.preprocessing,
        self.eval_batch_size,
        jax.process_index(),
        jax.process_count(),
        self.num_threads,
        self.prefetch,
    )

  def evaluation_groups(self) -> Iterator[dict[str, jax.Array]]:
    """Small evaluation sets (CIFAR-10's) are read once and kept on the devices; large ones
    (ImageNet's) are streamed batch by batch at every evaluation."""
    if self._cached_evaluation is not None:
      yield self._cached_evaluation
      return
    size = self.dataset.num_test * math.prod(self.dataset.input_shape)
    if size <= EVALUATION_CACHE_BYTES:
      self._cached_evaluation = self.put(stack(list(self._evaluation_batches()), 0), 1)
      yield self._cached_evaluation
      return
    for batch in self._evaluation_batches():
      yield self.put(stack([batch], 0), 1)


def create(
    dataset: data_lib.Dataset,
    mesh: jax.sharding.Mesh,
    batch_size: int,
    eval_batch_size: int,
    like: Feed | None = None,
    shapes_only: bool = False,
) -> ResidentFeed | StreamingFeed:
  """The feed for `dataset`: resident for an ArrayDataset, streaming for a StreamingDataset. `like`,
  a feed of the same dataset on another mesh of the same devices, lends its training set on the
  devices instead of a second copy from the host. `shapes_only`: a feed that puts nothing on the
  devices and reads nothing, for lowering programs ahead of time (`lth_jax.training.compiled`)."""
  if isinstance(dataset, pipeline.StreamingDataset):
    return StreamingFeed(dataset, mesh, batch_size, eval_batch_size)  # reads nothing until it is asked
  arrays = like.arrays if isinstance(like, ResidentFeed) and like.dataset is dataset else None
  return ResidentFeed(dataset, mesh, batch_size, eval_batch_size, arrays, shapes_only)

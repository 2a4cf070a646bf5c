"""Small classification datasets that need no download: scikit-learn digits and MNIST-1D."""

from __future__ import annotations

import contextlib
import os
import pathlib
import random
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from lth_jax.data.arrays import ArrayDataset
from lth_jax.data.arrays import first_examples
from lth_jax.data.arrays import read_fraction
from lth_jax.data.arrays import read_seed
from lth_jax.data.arrays import shuffled_split
from lth_jax.data.arrays import standardize_features

NUM_CLASSES = 10
CACHE_ENV_VAR = 'LTH_JAX_CACHE'
DEFAULT_CACHE_DIR = '~/.cache/lth_jax'
MNIST1D_ARRAY_NAMES = ('x', 'y', 'x_test', 'y_test')

# ----------------------------------------------------------------------------------------------
# scikit-learn digits


def build_digits(dataset_config: Any) -> ArrayDataset:
  """Builds sklearn's bundled 8x8 digits: 64 features in [0, 1], standardized with train statistics
  (of the first dataset.num_train training examples when set; dataset.num_test likewise)."""
  from sklearn.datasets import load_digits  # Imported lazily: sklearn is slow to import.

  seed = read_seed(dataset_config)
  test_fraction = read_fraction(dataset_config, 'test_fraction')
  digits = load_digits()
  inputs = digits.data.astype(np.float32) / 16.0
  labels = digits.target.astype(np.int32)
  train_indices, test_indices = shuffled_split(len(labels), test_fraction, seed)
  return standardized_dataset(
      'digits',
      (inputs[train_indices], labels[train_indices], "digits' training split"),
      (inputs[test_indices], labels[test_indices], "digits' test split"),
      dataset_config,
  )


def standardized_dataset(
    name: str,
    train: tuple[np.ndarray, np.ndarray, str],
    test: tuple[np.ndarray, np.ndarray, str],
    dataset_config: Any,
) -> ArrayDataset:
  """A 10-class ArrayDataset of (inputs, labels, description) train and test splits: the first
  dataset.num_train / num_test examples of each, standardized per feature with training statistics."""
  train_inputs, train_targets = first_examples(train[0], train[1], dataset_config, 'num_train', train[2])
  test_inputs, test_targets = first_examples(test[0], test[1], dataset_config, 'num_test', test[2])
  train_inputs, test_inputs = standardize_features(train_inputs, test_inputs)
  return ArrayDataset(
      name=name,
      task='classification',
      train_inputs=train_inputs,
      train_targets=train_targets,
      test_inputs=test_inputs,
      test_targets=test_targets,
      num_classes=NUM_CLASSES,
  )


# ----------------------------------------------------------------------------------------------
# MNIST-1D


def resolve_cache_dir(data_dir: str | os.PathLike[str] | None) -> pathlib.Path:
  """Cache folder: data_dir if given, else $LTH_JAX_CACHE if set, else ~/.cache/lth_jax."""
  if data_dir:
    folder = data_dir
  else:
    folder = os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_DIR
  return pathlib.Path(folder).expanduser()


def mnist1d_cache_path(cache_dir: pathlib.Path, seed: int) -> pathlib.Path:
  """Path of the cached MNIST-1D arrays generated with `seed`."""
  return cache_dir / f'mnist1d_default_args_seed{seed}.npz'


@contextlib.contextmanager
def _preserved_global_rng_state() -> Iterator[None]:
  """Restores Python's and NumPy's global RNG states on exit (mnist1d reseeds both)."""
  python_state = random.getstate()
  numpy_state = np.random.get_state()
  try:
    yield
  finally:
    random.setstate(python_state)
    np.random.set_state(numpy_state)


def generate_mnist1d(seed: int) -> dict[str, np.ndarray]:
  """Generates MNIST-1D with the package's default args and `seed`: arrays x, y, x_test, y_test."""
  from mnist1d.data import get_dataset_args, make_dataset  # Lazy: pulls in matplotlib.

  args = get_dataset_args()
  args.seed = seed
  with _preserved_global_rng_state():
    dataset = make_dataset(args)
  return {
      'x': np.asarray(dataset['x'], dtype=np.float32),
      'y': np.asarray(dataset['y'], dtype=np.int32),
      'x_test': np.asarray(dataset['x_test'], dtype=np.float32),
      'y_test': np.asarray(dataset['y_test'], dtype=np.int32),
  }


def write_npz_atomically(path: pathlib.Path, arrays: Mapping[str, np.ndarray]) -> None:
  """Writes arrays to `path` via a temp file in the same folder and os.replace."""
  path.parent.mkdir(parents=True, exist_ok=True)
  file_descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  try:
    with os.fdopen(file_descriptor, 'wb') as temp_file:
      np.savez(temp_file, **arrays)  # type: ignore[arg-type]  # numpy's stub takes ** for allow_pickle
    os.replace(temp_name, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(temp_name)
    raise


def read_cached_arrays(path: pathlib.Path, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
  """Loads `names` from an .npz cache; None if it is missing or unreadable."""
  if not path.is_file():
    return None
  try:
    with np.load(path, allow_pickle=False) as cached:
      return {name: cached[name] for name in names}
  except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
    return None


def load_mnist1d_arrays(seed: int, cache_dir: pathlib.Path) -> dict[str, np.ndarray]:
  """MNIST-1D raw arrays for `seed`, read from the cache or generated and cached."""
  path = mnist1d_cache_path(cache_dir, seed)
  arrays = read_cached_arrays(path, MNIST1D_ARRAY_NAMES)
  if arrays is None:
    arrays = generate_mnist1d(seed)
    write_npz_atomically(path, arrays)
  return arrays


def build_mnist1d(dataset_config: Any) -> ArrayDataset:
  """Builds MNIST-1D (4000 train / 1000 test signals of length 40, or the first dataset.num_train /
  num_test of them), standardized per feature with training statistics."""
  seed = read_seed(dataset_config)
  cache_dir = resolve_cache_dir(dataset_config.data_dir)
  arrays = load_mnist1d_arrays(seed, cache_dir)
  return standardized_dataset(
      'mnist1d',
      (arrays['x'], arrays['y'].astype(np.int32), "MNIST-1D's training set"),
      (arrays['x_test'], arrays['y_test'].astype(np.int32), "MNIST-1D's test set"),
      dataset_config,
  )

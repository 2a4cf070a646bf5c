"""Datasets as in-memory arrays, built by name from a `dataset` config.

    from lth_jax import data
    dataset = data.build(config.dataset)   # -> data.ArrayDataset
    indices = data.batch_indices(seed, start_step, num_steps, dataset.num_train, batch_size)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lth_jax.data.arrays import ArrayDataset, batch_indices
from lth_jax.data.embedded import build_digits, build_mnist1d
from lth_jax.data.sum_of_two import build_sum_of_two
from lth_jax.data.tfds_source import DatasetNotPreparedError, build_image_dataset

_BUILDERS: dict[str, Callable[[Mapping[str, Any]], ArrayDataset]] = {
    "sum_of_two": build_sum_of_two,
    "digits": build_digits,
    "mnist1d": build_mnist1d,
    "mnist": build_image_dataset,
    "cifar10": build_image_dataset,
}

DATASET_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build(dataset_config: Mapping[str, Any]) -> ArrayDataset:
    """Builds the dataset named by `dataset_config.name` (an ml_collections.ConfigDict or mapping)."""
    name = dataset_config.get("name", None)
    if not isinstance(name, str) or name not in _BUILDERS:
        raise ValueError(f"dataset.name must be one of {DATASET_NAMES}, got {name!r}")
    return _BUILDERS[name](dataset_config)


__all__ = [
    "ArrayDataset",
    "DATASET_NAMES",
    "DatasetNotPreparedError",
    "batch_indices",
    "build",
]

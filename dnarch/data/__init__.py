"""Datasets: a registry of named loaders, plus the user's own tensors or ``.npz`` files."""

from dnarch.data.registry import DATASETS, TASKS, DataBundle, DataError, from_arrays, load_data

__all__ = ["DATASETS", "TASKS", "DataBundle", "DataError", "from_arrays", "load_data"]

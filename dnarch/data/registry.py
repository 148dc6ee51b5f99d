"""Dataset registry: every dataset by name (``DATASETS``), and ``load_data``, which loads one by name
or from a user's ``.npz`` file. The loaders live beside it (``sources``, ``dense``, ``cifar``,
``speech_commands``, ``spoken_digits``, ``listops``) and share ``base``; only this module imports
them all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from dnarch.data.base import (
    MAX_CLASSES,
    DataBundle,
    DataError,
    cache_dir,
    check_root,
    from_arrays,
    search_folders,
)
from dnarch.data.sources import (
    FASHION_DEBIAN,
    check_file,
    load_digits,
    load_fashion,
    load_mnist,
    load_mnist1d,
    load_npz,
)
from dnarch.tasks import TASKS

__all__ = [
    "DATASETS",
    "FASHION_DEBIAN",
    "MAX_CLASSES",
    "TASKS",
    "DataBundle",
    "DataError",
    "Loader",
    "cache_dir",
    "check_data_name",
    "from_arrays",
    "load_data",
    "load_mnist1d",
    "search_folders",
]

Loader = Callable[[Path | None], DataBundle]


def _fashion(layout: str) -> Loader:
    return lambda root: load_fashion(layout, root)


def _mnist(layout: str) -> Loader:
    return lambda root: load_mnist(layout, root)


def _cifar(classes: int) -> Loader:
    def load(root: Path | None) -> DataBundle:
        from dnarch.data.cifar import load_cifar10, load_cifar100

        return load_cifar10(root) if classes == 10 else load_cifar100(root)

    return load


def _speech(subset: str) -> Loader:
    def load(root: Path | None) -> DataBundle:
        from dnarch.data.speech_commands import load_speech_commands

        return load_speech_commands(root, subset)

    return load


def _generated(make: Callable[[], DataBundle]) -> Loader:
    """A generated dataset: ``root``, if given, is where its cache lives instead of ``cache_dir()``."""

    def load(root: Path | None) -> DataBundle:
        if root is None:
            return make()
        old = os.environ.get("DNARCH_CACHE")
        os.environ["DNARCH_CACHE"] = str(root)
        try:
            return make()
        finally:
            if old is None:
                os.environ.pop("DNARCH_CACHE", None)
            else:
                os.environ["DNARCH_CACHE"] = old

    return load


def _spoken_digits() -> DataBundle:
    from dnarch.data.spoken_digits import load_spoken_digits

    return load_spoken_digits()


def _listops() -> DataBundle:
    from dnarch.data.listops import load_listops

    return load_listops()


def _fashion_scenes(root: Path | None) -> DataBundle:
    from dnarch.data.dense import load_fashion_scenes

    return load_fashion_scenes(root)


def _fashion_denoise(root: Path | None) -> DataBundle:
    from dnarch.data.dense import load_fashion_denoise

    return load_fashion_denoise(root)


def _mnist1d_steps() -> DataBundle:
    from dnarch.data.dense import load_mnist1d_steps

    return load_mnist1d_steps()


def _mnist1d_denoise() -> DataBundle:
    from dnarch.data.dense import load_mnist1d_denoise

    return load_mnist1d_denoise()


DATASETS: dict[str, Loader] = {
    "mnist1d": _generated(load_mnist1d),
    "digits": lambda root: load_digits(),
    "fashion-mnist": _fashion("image"),
    "fashion-mnist-seq": _fashion("seq"),
    "fashion-mnist-pseq": _fashion("pseq"),
    "mnist": _mnist("image"),
    "mnist-seq": _mnist("seq"),
    "mnist-pseq": _mnist("pseq"),
    "cifar10": _cifar(10),
    "cifar100": _cifar(100),
    "speech-commands": _speech("all"),
    "speech-commands-10": _speech("10"),
    "spoken-digits": _generated(_spoken_digits),
    "listops": _generated(_listops),
    "fashion-scenes": _fashion_scenes,
    "fashion-denoise": _fashion_denoise,
    "mnist1d-steps": _generated(_mnist1d_steps),
    "mnist1d-denoise": _generated(_mnist1d_denoise),
}
"""Registered datasets: name -> loader(root). ``root``: the folder holding the files (None: search
the usual places); for generated sets, where their cache lives."""


def check_data_name(name: str, root: str | os.PathLike[str] | None = None) -> None:
    """Raise DataError unless ``name`` is a registered dataset or an existing file, and ``root`` (if
    given) an existing folder."""
    check_root(root)
    if name in DATASETS:
        return
    if name.endswith(".npz") or Path(name).exists():
        check_file(Path(name))
        return
    raise DataError(
        f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)} or give a .npz path"
    )


def load_data(
    name: str, root: str | os.PathLike[str] | None = None, task: str = "auto"
) -> DataBundle:
    """A registered dataset by name (``DATASETS``), or a path to an ``.npz`` file. ``root``: the
    folder that holds the dataset's files, instead of searching $DNARCH_DATA and the usual places.
    ``task``: 'auto' (the dataset's own; classify for .npz), or the task the data must be."""
    if task != "auto" and task not in TASKS:
        raise DataError(f"unknown task {task!r}: choose auto or one of {', '.join(TASKS)}")
    check_data_name(name, root)
    if name not in DATASETS:
        return load_npz(name, task="classify" if task == "auto" else task)
    bundle = DATASETS[name](Path(root) if root is not None else None)
    if task not in ("auto", bundle.task):
        raise DataError(f"dataset {name!r} is a {bundle.task} task, not {task}; drop --task")
    return bundle

"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from the official "python version" files.

The files are Python pickles of dicts with bytes keys: b"data" uint8 (N, 3072), each row the red,
green and blue 32x32 planes in turn, and b"labels" (CIFAR-10) or b"fine_labels" / b"coarse_labels"
(CIFAR-100). Unpickling can call any function the file names, so a downloaded file could run code on
the user's machine. ``_SafeUnpickler`` therefore resolves only the globals these files need (builtin
containers and numpy's array reconstruction) and refuses every other one, such as ``os.system``.

Looked for, in order, in: the folder the user names, else ``$DNARCH_DATA/<name>``, ``$DNARCH_DATA``
and ``cache_dir()/<name>`` (name ``cifar10`` or ``cifar100``). Each place may be the extracted folder
(``cifar-10-batches-py`` / ``cifar-100-python``), hold it (torchvision's root), or hold the archive
(``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``), which is read in memory, not extracted.
"""

from __future__ import annotations

import pickle
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from dnarch.data.base import DataBundle, DataError, from_arrays, search_folders

_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class _Variant:
    name: str
    folder: str  # the extracted folder, also the top folder inside the archive
    archive: str
    train: tuple[str, ...]
    test: str
    label_key: bytes
    num_classes: int

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, self.test)

    @property
    def how_to_get(self) -> str:
        return (
            f"download {self.archive} (python version) from {_URL}, or let "
            f"torchvision.datasets.{self.name.upper()}(root, download=True) fetch it, and put the "
            f"archive or its extracted {self.folder} folder under $DNARCH_DATA/{self.name}"
        )


_CIFAR10 = _Variant(
    "cifar10", "cifar-10-batches-py", "cifar-10-python.tar.gz",
    tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", b"labels", 10,
)  # fmt: skip
_CIFAR100 = _Variant(
    "cifar100",
    "cifar-100-python",
    "cifar-100-python.tar.gz",
    ("train",),
    "test",
    b"fine_labels",
    100,
)


def load_cifar10(root: str | Path | None = None) -> DataBundle:
    """CIFAR-10: x_train (50000, 3, 32, 32), x_test (10000, 3, 32, 32) float32, standardised per
    channel with the training set's mean and std; y (N,) int64 in [0, 10)."""
    return _load(_CIFAR10, root)


def load_cifar100(root: str | Path | None = None) -> DataBundle:
    """CIFAR-100 with its 100 fine labels: x_train (50000, 3, 32, 32), x_test (10000, 3, 32, 32)
    float32, standardised per channel with the training set's mean and std; y (N,) int64 in [0, 100)."""
    return _load(_CIFAR100, root)


def _load(v: _Variant, root: str | Path | None) -> DataBundle:
    candidates = [Path(root)] if root is not None else search_folders(v.name)
    source = _find(v, candidates)
    if source is None:
        where = ", ".join(str(c) for c in candidates)
        raise DataError(f"{v.name} not found in {where}; {v.how_to_get}")
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for member, f in _open_members(v, source):
        parts[member] = _parse(
            _unpickle(f, f"{source}/{member}"), f"{source}/{member}", v.label_key
        )
    x_tr = np.concatenate([parts[m][0] for m in v.train]).reshape(-1, 3, 32, 32)  # (N, C, H, W)
    y_tr = np.concatenate([parts[m][1] for m in v.train])
    x_te, y_te = parts[v.test][0].reshape(-1, 3, 32, 32), parts[v.test][1]
    mean, std = _channel_stats(x_tr)
    return from_arrays(
        _standardise(x_tr, mean, std), y_tr, _standardise(x_te, mean, std), y_te,
        name=v.name, num_classes=v.num_classes,
    )  # fmt: skip


def _find(v: _Variant, candidates: list[Path]) -> Path | None:
    """The first extracted folder or archive found; in each place the folder wins over the archive."""
    for place in candidates:
        for folder in (place, place / v.folder):
            if all((folder / f).is_file() for f in v.files):
                return folder
        if (place / v.archive).is_file():
            return place / v.archive
    return None


def _open_members(v: _Variant, source: Path) -> Iterator[tuple[str, IO[bytes]]]:
    """(file name, open binary file) for every file of ``v``, from a folder or a .tar.gz."""
    if source.is_dir():
        for name in v.files:
            with open(source / name, "rb") as f:
                yield name, f
        return
    wanted = {f"{v.folder}/{name}": name for name in v.files}
    seen = set()
    try:
        with tarfile.open(source, "r:gz") as tar:
            for member in tar:  # one pass: a gzip stream cannot seek backwards cheaply
                key = wanted.get(member.name.removeprefix("./"))
                fh = tar.extractfile(member) if key is not None and member.isfile() else None
                if key is not None and fh is not None:
                    seen.add(key)
                    yield key, fh
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"cannot read {source} as a .tar.gz archive: {err}") from err
    missing = [n for n in v.files if n not in seen]
    if missing:
        raise DataError(f"{source} lacks {v.folder}/{missing[0]}; {v.how_to_get}")


_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's own _reconstruct, whichever module holds it
_ALLOWED: dict[tuple[str, str], Any] = {
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "bytes"): bytes,
    ("builtins", "str"): str,
    ("builtins", "int"): int,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy 1 names, as in the real files
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy 2 names
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only the globals in ``_ALLOWED``: a pickle that names anything else (``os.system``,
    ``builtins.eval``, ...) is refused before it can be called."""

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # the files come from Python 2
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name} (only dicts, lists, strings, ints and numpy "
                "arrays are allowed)"
            )
        return _ALLOWED[(module, name)]


def _unpickle(f: IO[bytes], where: str) -> Any:
    try:
        return _SafeUnpickler(f, encoding="bytes").load()
    except Exception as err:  # a bad file can fail in many ways inside pickle and numpy
        raise DataError(f"cannot read {where}: {err}") from err


def _parse(batch: Any, where: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """x (N, 3072) uint8 and y (N,) int64 from one unpickled batch dict."""
    if not isinstance(batch, dict):
        raise DataError(
            f"{where} is not a CIFAR batch: expected a dict, got {type(batch).__name__}"
        )

    def get(key: bytes) -> Any:  # bytes keys as in the files; str keys if someone re-saved them
        return batch.get(key, batch.get(key.decode()))

    data, labels = get(b"data"), get(label_key)
    if data is None or labels is None:
        raise DataError(f"{where} lacks the key b'data' or {label_key!r}")
    x, y = np.asarray(data), np.asarray(labels)
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise DataError(f"{where}: data must be uint8 (N, 3072), got {x.dtype} {x.shape}")
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: labels must be {len(x)} integers, got {y.dtype} {y.shape}")
    return x, y.astype(np.int64)


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and std per channel of uint8 images (N, C, H, W), from a histogram of the 256
    levels rather than a float copy of the whole training set."""
    levels = np.arange(256, dtype=np.float64)
    mean, std = np.empty(x.shape[1]), np.empty(x.shape[1])
    for c in range(x.shape[1]):
        p = np.bincount(x[:, c].ravel(), minlength=256) / x[:, c].size
        mean[c] = p @ levels
        std[c] = np.sqrt(p @ (levels - mean[c]) ** 2)
    return mean, np.where(std > 0, std, 1.0)  # a constant channel stays constant, not NaN


def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(N, C, H, W) uint8 -> float32 (x - mean) / std, with one float copy."""
    out = x.astype(np.float32)
    out -= mean.astype(np.float32)[None, :, None, None]
    out /= std.astype(np.float32)[None, :, None, None]
    return out

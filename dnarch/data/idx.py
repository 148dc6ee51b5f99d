"""IDX files (the MNIST family's format) and the MNIST / Fashion-MNIST loaders built on them.

Looked for, in order, in: the folder the user names; ``$DNARCH_DATA/<name>``; torchvision's layout
``<root>/<Name>/raw``; Debian's ``/usr/share/datasets/fashion-mnist`` (package dataset-fashion-mnist).
Files may be plain or gzipped.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class IDXError(ValueError):
    """A file that is not a valid IDX file; one line for the user."""


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """The array stored in an IDX file (plain or .gz). Shape as the header says."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise IDXError(f"cannot read {p}: {err}") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise IDXError(f"{p} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXError(f"{p} is truncated (header)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise IDXError(f"{p} holds {len(raw) - header} data bytes, its header promises {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).copy()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an IDX file, gzipped if the name ends in .gz. For tests and tools."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    head = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in a.shape)
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "wb") as f:
        f.write(head + a.tobytes())


def find_idx_folder(name: str, candidates: list[Path]) -> Path | None:
    """The first folder among ``candidates`` that holds all four IDX files (plain or .gz)."""
    for folder in candidates:
        if all(_find(folder, stem) is not None for pair in SPLITS.values() for stem in pair):
            return folder
    return None


def load_idx_split(folder: Path) -> dict[str, np.ndarray]:
    """x_train (N, 28, 28) uint8, y_train (N,), x_test, y_test from an IDX folder."""
    out = {}
    for split, (images, labels) in SPLITS.items():
        x, y = read_idx(_find(folder, images)), read_idx(_find(folder, labels))  # type: ignore[arg-type]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise IDXError(f"{folder}: {split} images {x.shape} and labels {y.shape} do not match")
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    return out


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None

"""What every dataset loader shares: the ``DataBundle`` of float32 inputs (N, C, *S) and targets for
its task, validated by the one shared validator ``from_arrays``:

- ``classify``: int64 labels (N,);
- ``segment``: int64 labels per position (N, *S);
- ``regress``: float32 values per position (N, C_out, *S);

the ``DataError`` a bad dataset raises, where generated sets are cached and where file-based sets are
looked for. The loaders import this module; ``registry`` imports the loaders.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dnarch.tasks import TASKS


class DataError(ValueError):
    """Bad or missing data. Its message is one line meant for the user."""


MAX_CLASSES = 1024  # more labels than this is almost always a regression target read as labels


@dataclass(frozen=True)
class DataBundle:
    """x_*: (N, C, *S) float32. y_*: for ``classify`` (N,) int64 in [0, num_classes); for
    ``segment`` (N, *S) int64 in [0, num_classes); for ``regress`` (N, num_classes, *S) float32,
    where num_classes is the number of output channels."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    task: str = "classify"

    @property
    def dense(self) -> bool:
        """Does the task want an output at every position?"""
        return self.task != "classify"

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x_train.shape[2:])

    def fingerprint(self) -> str:
        """SHA-256 of the four arrays' shapes and bytes: a resumed run checks it trains on the same
        data (a file changed in place, same shapes, is caught)."""
        digest = hashlib.sha256()
        for t in (self.x_train, self.y_train, self.x_test, self.y_test):
            a = np.ascontiguousarray(t.detach().cpu().numpy())
            digest.update(f"{a.dtype}{a.shape}".encode())
            digest.update(a.view(np.uint8).reshape(-1).data)
        return digest.hexdigest()

    def limited(self, n_train: int, n_test: int) -> DataBundle:
        """The first ``n_train`` / ``n_test`` samples (0 = all)."""
        tr = slice(None) if n_train == 0 else slice(0, n_train)
        te = slice(None) if n_test == 0 else slice(0, n_test)
        return from_arrays(
            self.x_train[tr], self.y_train[tr], self.x_test[te], self.y_test[te],
            name=self.name, num_classes=self.num_classes, task=self.task,
        )  # fmt: skip


def from_arrays(
    x_train: Tensor | np.ndarray,
    y_train: Tensor | np.ndarray,
    x_test: Tensor | np.ndarray,
    y_test: Tensor | np.ndarray,
    name: str = "arrays",
    num_classes: int | None = None,
    task: str = "classify",
) -> DataBundle:
    """Validate user arrays and wrap them. x: (N, S) sequences of one channel, (N, C, S) or (N, C, H, W).
    y by ``task``: 'classify' (N,) integer class labels; 'segment' (N, *S) an integer label per
    position; 'regress' (N, *S) or (N, C_out, *S) real values per position. num_classes defaults to
    max label + 1 (for 'regress': C_out)."""
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    xs, ys = [], []
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        for what, a in (("inputs", x), (LABELS[task], y)):
            kind = a.dtype.kind if isinstance(a, np.ndarray) else np.asarray(a).dtype.kind
            if not isinstance(a, Tensor) and kind in "USOVM":
                encode = (
                    "encode them as integers 0..K-1, e.g. np.unique(y, return_inverse=True)[1]"
                    if what == "labels"
                    else "they must be numbers"
                )
                raise DataError(f"{split} {what} are not numeric (dtype {kind!r}); {encode}")
        try:
            x = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
            y = torch.as_tensor(np.asarray(y) if not isinstance(y, Tensor) else y)
        except (TypeError, ValueError, RuntimeError) as err:
            raise DataError(
                f"{split} inputs and {LABELS[task]} must be numeric arrays: {err}"
            ) from err
        if not (
            x.is_floating_point()
            or x.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
        ):
            raise DataError(f"{split} inputs must be numeric, got dtype {x.dtype}")
        x = x.float()
        if x.ndim == 2:
            x = x[:, None, :]  # (N, S) -> (N, 1, S)
        if x.ndim not in (3, 4):
            raise DataError(
                f"{split} inputs must be (N, S), (N, C, S) or (N, C, H, W); got shape {tuple(x.shape)}"
            )
        y = _check_targets(split, task, x, y)
        if x.shape[0] == 0:
            raise DataError(f"{split} set is empty")
        if not torch.isfinite(x).all():
            raise DataError(f"{split} inputs contain NaN or inf")
        xs.append(x)
        ys.append(y)
    if xs[0].shape[1:] != xs[1].shape[1:]:
        raise DataError(
            f"train and test inputs differ in shape: {tuple(xs[0].shape[1:])} vs {tuple(xs[1].shape[1:])}"
        )
    if min(xs[0].shape[2:]) < 2:
        raise DataError(
            f"inputs of spatial size {tuple(xs[0].shape[2:])} have nothing to convolve; every "
            "spatial axis needs at least 2 samples (a 1-sample axis can be dropped: (N, C, S))"
        )
    if xs[0].shape[0] < 2:
        raise DataError(f"the training set needs at least 2 samples, got {xs[0].shape[0]}")
    if task == "regress":
        if ys[0].shape[1:] != ys[1].shape[1:]:
            raise DataError(
                f"train and test targets differ in shape: {tuple(ys[0].shape[1:])} vs "
                f"{tuple(ys[1].shape[1:])}"
            )
        k = int(ys[0].shape[1])
        if num_classes is not None and num_classes != k:
            raise DataError(
                f"regression targets have {k} channels but num_classes is {num_classes}"
            )
        return DataBundle(name, xs[0], ys[0], xs[1], ys[1], k, task)
    top = int(max(ys[0].max(), ys[1].max())) + 1
    if top > MAX_CLASSES and num_classes is None:
        raise DataError(
            f"labels go up to {top - 1}: more than {MAX_CLASSES} classes; if y holds values, not "
            "classes, use --task regress"
        )
    if num_classes is None and task == "classify":  # the user's own labels: one id per class
        _check_label_ids(ys[0], ys[1])
    k = top if num_classes is None else num_classes
    if k < 2:
        raise DataError(f"need at least 2 classes, got {k}")
    if top > k:
        raise DataError(f"labels go up to {top - 1} but num_classes is {k}")
    return DataBundle(name, xs[0], ys[0], xs[1], ys[1], k, task)


LABELS = {"classify": "labels", "segment": "labels", "regress": "targets"}


def _check_label_ids(y_train: Tensor, y_test: Tensor) -> None:
    """Class labels must name classes 0..K-1, each seen in training: refuse a single training class,
    test labels that training never shows (the network cannot learn them), and ids with gaps (0, 5,
    900 would make a 901-way head). Registered datasets, whose class count is given, skip this."""
    train, test = set(y_train.unique().tolist()), set(y_test.unique().tolist())
    if len(train) < 2:
        raise DataError(
            f"the training labels hold {len(train)} class ({min(train)}); need at least 2 classes"
        )
    unseen = sorted(test - train)
    if unseen:
        shown = ", ".join(map(str, unseen[:5])) + (", ..." if len(unseen) > 5 else "")
        raise DataError(
            f"test labels {shown} never occur in the training labels: the network cannot learn them"
        )
    if len(train) != max(train) + 1:
        shown = ", ".join(map(str, sorted(train)[:5])) + (", ..." if len(train) > 5 else "")
        raise DataError(
            f"labels must be the class ids 0..K-1; these are {len(train)} ids ({shown}) up to "
            f"{max(train)}, a {max(train) + 1}-way head: encode them as 0..{len(train) - 1}, "
            "e.g. np.unique(y, return_inverse=True)[1]"
        )


def _check_targets(split: str, task: str, x: Tensor, y: Tensor) -> Tensor:
    """y for ``task`` against inputs x (N, C, *S): int64 labels, or float32 regression targets."""
    n, spatial = x.shape[0], tuple(x.shape[2:])
    if task == "regress":
        if tuple(y.shape) == (n, *spatial):
            y = y[:, None]  # (N, *S) -> (N, 1, *S)
        if y.ndim != x.ndim or y.shape[0] != n or tuple(y.shape[2:]) != spatial:
            raise DataError(
                f"{split} targets must be (N, *S) or (N, C_out, *S) with N={n}, S={spatial}; "
                f"got shape {tuple(y.shape)}"
            )
        y = y.float()
        if not torch.isfinite(y).all():
            raise DataError(f"{split} targets contain NaN or inf")
        return y
    want = (n,) if task == "classify" else (n, *spatial)
    if tuple(y.shape) != want:
        what = "(N,)" if task == "classify" else "(N, *S), one label per position,"
        raise DataError(
            f"{split} labels must be {what} with N={n}"
            + ("" if task == "classify" else f", S={spatial}")
            + f"; got shape {tuple(y.shape)}"
        )
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise DataError(f"{split} labels must be integers, got non-integer values")
    y = y.long()
    if y.numel() and (y < 0).any():
        raise DataError(f"{split} labels must be >= 0, got {int(y.min())}")
    return y


def cache_dir() -> Path:
    """Where generated datasets are cached: $DNARCH_CACHE or ~/.cache/dnarch."""
    return Path(os.environ.get("DNARCH_CACHE", Path.home() / ".cache" / "dnarch"))


def search_folders(
    name: str, aliases: tuple[str, ...] = (), system: tuple[str, ...] = ()
) -> list[Path]:
    """Where a file-based dataset is looked for when the user names no folder, in order:
    ``$DNARCH_DATA/<name>``, ``$DNARCH_DATA/<alias>`` (other tools' layouts), ``$DNARCH_DATA``, the
    ``system`` folders (e.g. a Debian package's), and ``cache_dir()/<name>``."""
    out = []
    if os.environ.get("DNARCH_DATA"):
        base = Path(os.environ["DNARCH_DATA"])
        out += [base / name, *(base / a for a in aliases), base]
    out += [Path(f) for f in system]
    out.append(cache_dir() / name)
    return out


def check_root(root: str | os.PathLike[str] | None) -> None:
    """Raise DataError unless ``root`` is None or an existing folder."""
    if root is not None and not Path(root).is_dir():
        raise DataError(f"data root {str(root)!r} is not an existing folder")

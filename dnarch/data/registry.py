"""Dataset registry. Every loader returns a ``DataBundle`` of float32 inputs (N, C, *S) and targets
for its task, validated by the one shared validator ``from_arrays``:

- ``classify``: int64 labels (N,);
- ``segment``: int64 labels per position (N, *S);
- ``regress``: float32 values per position (N, C_out, *S).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dnarch.files import atomic_path
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


def load_mnist1d() -> DataBundle:
    """MNIST-1D (Greydanus 2020), generated locally by the ``mnist1d`` package with its published
    defaults: 4,000 train and 1,000 test sequences of length 40, 10 classes. Cached as .npz."""
    path = cache_dir() / "mnist1d.npz"
    if not path.exists():
        from mnist1d.data import get_dataset_args, make_dataset

        d = make_dataset(get_dataset_args())
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.savez(tmp, x_train=d["x"], y_train=d["y"], x_test=d["x_test"], y_test=d["y_test"])
    return load_npz(path, name="mnist1d")


def load_digits() -> DataBundle:
    """scikit-learn's bundled 8x8 digits as 1x8x8 images (1,437 train / 360 test), for tiny tests."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError as err:  # pragma: no cover - dev extra
        raise DataError("dataset 'digits' needs scikit-learn: pip install scikit-learn") from err
    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    x = (x - x.mean()) / x.std()
    cut = int(0.8 * len(x))
    return from_arrays(x[:cut], d.target[:cut], x[cut:], d.target[cut:], name="digits")


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise DataError(
            f"--data {str(path)!r} is a folder; give a .npz file, or a dataset name with "
            "--data.root for the folder that holds its files"
        )
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")


def load_npz(
    path: str | os.PathLike[str], name: str | None = None, task: str = "classify"
) -> DataBundle:
    """A user's ``.npz`` with arrays x_train, y_train, x_test, y_test (no pickled objects allowed);
    ``task`` says how y is read (see ``from_arrays``)."""
    p = Path(path)
    _check_file(p)
    if not zipfile.is_zipfile(p):
        raise DataError(
            f"{p} is not a .npz archive (np.savez writes one, with x_train, y_train, ...)"
        )
    try:
        with np.load(p, allow_pickle=False) as f:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f.files]
            if missing:
                raise DataError(
                    f"{p} lacks arrays {', '.join(missing)} (needs x_train, y_train, x_test, y_test)"
                )
            arrays = [f[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"cannot read {p} as .npz: {err}") from err
    x_train, y_train, x_test, y_test = arrays
    return from_arrays(x_train, y_train, x_test, y_test, name=name or p.stem, task=task)


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


def _load_idx_images(
    name: str,
    torchvision_name: str,
    debian: str | None,
    layout: str,
    how_to_get: str,
    root: Path | None,
) -> DataBundle:
    """An MNIST-family dataset as 28x28 images ('image'), sequences of 784 ('seq') or sequences under
    a fixed random permutation ('pseq'), standardised with the training set's mean and std."""
    from dnarch.data.idx import IDXError, find_idx_folder, load_idx_split

    candidates = (
        [root, root / torchvision_name / "raw"]
        if root is not None
        else search_folders(name, (f"{torchvision_name}/raw",), (debian,) if debian else ())
    )
    folder = find_idx_folder(name, candidates)
    if folder is None:
        where = ", ".join(str(c) for c in candidates)
        raise DataError(f"{name} IDX files not found in {where}; {how_to_get}")
    try:
        d = load_idx_split(folder)
    except IDXError as err:
        raise DataError(str(err)) from err
    x_tr, x_te = d["x_train"].astype(np.float32) / 255.0, d["x_test"].astype(np.float32) / 255.0
    mean, std = float(x_tr.mean()), float(x_tr.std())
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    if layout == "image":
        x_tr, x_te = x_tr[:, None], x_te[:, None]
    else:
        x_tr, x_te = x_tr.reshape(len(x_tr), 1, -1), x_te.reshape(len(x_te), 1, -1)
        if layout == "pseq":  # the same permutation for every user: a fixed seed
            perm = np.random.default_rng(0).permutation(x_tr.shape[-1])
            x_tr, x_te = x_tr[..., perm], x_te[..., perm]
    suffix = {"image": "", "seq": "-seq", "pseq": "-pseq"}[layout]
    return from_arrays(x_tr, d["y_train"], x_te, d["y_test"], name=name + suffix, num_classes=10)


_FASHION_HELP = (
    "install Debian's dataset-fashion-mnist, or put the four IDX files (torchvision's layout works) "
    "under $DNARCH_DATA/fashion-mnist"
)
_MNIST_HELP = "put the four MNIST IDX files under $DNARCH_DATA/mnist (torchvision's layout works)"


Loader = Callable[[Path | None], DataBundle]


FASHION_DEBIAN = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def _fashion(layout: str) -> Loader:
    return lambda root: _load_idx_images(
        "fashion-mnist", "FashionMNIST", FASHION_DEBIAN, layout, _FASHION_HELP, root
    )


def _mnist(layout: str) -> Loader:
    return lambda root: _load_idx_images("mnist", "MNIST", None, layout, _MNIST_HELP, root)


def _cifar(classes: int) -> Loader:
    def load(root: Path | None) -> DataBundle:
        from dnarch.data import cifar

        return cifar.load_cifar10(root) if classes == 10 else cifar.load_cifar100(root)

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
    if root is not None and not Path(root).is_dir():
        raise DataError(f"data root {str(root)!r} is not an existing folder")
    if name in DATASETS:
        return
    if name.endswith(".npz") or Path(name).exists():
        _check_file(Path(name))
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

"""The loaders of the datasets dnarch reads from files or generates itself: MNIST-1D, scikit-learn's
digits, a user's ``.npz`` file, and the MNIST family from IDX files (as images, sequences and
permuted sequences). The dense sets (``data.dense``) are made from these; ``registry`` names them all.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from dnarch.data.base import DataBundle, DataError, cache_dir, from_arrays, search_folders
from dnarch.files import atomic_path


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


def check_file(path: Path) -> None:
    """Raise DataError unless ``path`` is an existing file (a folder gets its own message)."""
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
    check_file(p)
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


FASHION_DEBIAN = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def load_fashion(layout: str, root: Path | None = None) -> DataBundle:
    """Fashion-MNIST from its IDX files in ``root`` (None: the usual places, Debian's package
    included) as ``layout``: 'image', 'seq' or 'pseq' (``_load_idx_images``)."""
    return _load_idx_images(
        "fashion-mnist", "FashionMNIST", FASHION_DEBIAN, layout, _FASHION_HELP, root
    )


def load_mnist(layout: str, root: Path | None = None) -> DataBundle:
    """MNIST from its IDX files, as ``load_fashion``."""
    return _load_idx_images("mnist", "MNIST", None, layout, _MNIST_HELP, root)

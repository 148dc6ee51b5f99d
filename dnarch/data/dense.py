"""Dense-prediction datasets (a target at every position), built from classification sets.

- ``fashion-scenes`` (segment, 11 classes): 32x32 canvases holding 2-4 Fashion-MNIST items, shrunk to
  14x14, at random places; each pixel is labelled 0 (background) or 1 + the class of the topmost item that covers it.
- ``mnist1d-steps`` (segment, 11 classes): 2-4 MNIST-1D sequences, each cropped to 20-40 steps,
  concatenated and zero-padded to 160 steps; each step is labelled with its segment's class, the
  padding with the background class 10.
- ``mnist1d-denoise`` and ``fashion-denoise`` (regress): the inputs plus Gaussian noise of half the
  clean data's std; the target is the clean input.

The generators are pure numpy functions of their arguments and a seed. The loaders cache what they
generate as .npz under ``cache_dir()``, named by the parameters (and by the Fashion-MNIST folder the
user named, if any); a cached set is returned without reading its source again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

import dnarch.data.sources as sources
from dnarch.data.base import DataBundle, cache_dir, check_root, from_arrays
from dnarch.files import atomic_path

ON_FRACTION = 0.1  # an item's pixel is "on" above this fraction of the item's maximum
SCENE_CANVAS = (32, 32)
SCENE_ITEM_POOL = 2  # items are Fashion-MNIST images shrunk 2x, to 14x14
SCENE_ITEMS = (2, 4)
STEPS_LENGTH = 160
STEPS_SEGMENTS = (2, 4)
STEPS_CROP = (20, 40)
DENOISE_SIGMA = 0.5
_CACHE_VERSION = 2  # bump when a procedure changes, so old caches are not reused


# ----------------------------------------------------------------------------- scenes (2D segment)


def on_mask(image: np.ndarray) -> np.ndarray:
    """image (h, w), non-negative -> (h, w) bool: the pixels above ``ON_FRACTION`` of the image's
    maximum (none for an all-zero image)."""
    top = float(image.max())
    return image > ON_FRACTION * top if top > 0 else np.zeros(image.shape, dtype=bool)


def scene_layouts(
    num_images: int,
    n: int,
    canvas: tuple[int, int],
    item_shape: tuple[int, int],
    items: tuple[int, int] = SCENE_ITEMS,
    seed: int = 0,
) -> list[np.ndarray]:
    """``n`` random layouts, one per scene: each an int64 array (k, 3) of rows (image index, top, left),
    bottom item first, with k uniform in ``items`` (inclusive), images drawn with replacement from
    ``range(num_images)`` and every item wholly inside the canvas."""
    (lo, hi), (H, W), (h, w) = items, canvas, item_shape
    if not 1 <= lo <= hi:
        raise ValueError(f"items must be (min, max) with 1 <= min <= max, got {items}")
    if h > H or w > W:
        raise ValueError(f"items of shape {item_shape} do not fit a canvas of {canvas}")
    if num_images < 1 or n < 1:
        raise ValueError(f"need at least one image and one scene, got {num_images} and {n}")
    rng = np.random.default_rng(seed)
    counts = rng.integers(lo, hi + 1, n)  # (n,)
    out = []
    for k in counts:
        rows = np.stack(
            [
                rng.integers(0, num_images, k),
                rng.integers(0, H - h + 1, k),
                rng.integers(0, W - w + 1, k),
            ],
            axis=1,
        )  # (k, 3)
        out.append(rows.astype(np.int64))
    return out


def paint_scene(
    images: np.ndarray, labels: np.ndarray, layout: np.ndarray, canvas: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """One scene from ``layout`` (k, 3) rows (image index, top, left), painted bottom item first.

    images (M, h, w) non-negative, labels (M,) int. Occlusion rule: where an item is on (``on_mask``),
    it replaces both the intensity and the label beneath it; its pixels that are not on never change a
    label, and only brighten the canvas (max). So a labelled pixel always shows its label's item.
    Returns x (H, W) float32 and y (H, W) int64: 0 background, 1 + class where an item is on."""
    H, W = canvas
    h, w = images.shape[1:]
    x = np.zeros((H, W), dtype=np.float32)  # (H, W)
    y = np.zeros((H, W), dtype=np.int64)  # (H, W)
    for i, top, left in layout:
        img = images[i].astype(np.float32)  # (h, w)
        on = on_mask(img)  # (h, w)
        xs, ys = x[top : top + h, left : left + w], y[top : top + h, left : left + w]  # views
        np.copyto(xs, np.where(on, img, np.maximum(xs, img)))
        ys[on] = 1 + int(labels[i])
    return x, y


def compose_scenes(
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    canvas: tuple[int, int] = SCENE_CANVAS,
    items: tuple[int, int] = SCENE_ITEMS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` scenes of ``items`` (min, max) images at random places on an empty canvas.

    images: (M, h, w) non-negative intensities, 0 = empty; labels: (M,) int in [0, C). Layouts come
    from ``scene_layouts``, painted by ``paint_scene`` (later items occlude earlier ones where they are
    on). Returns x (n, 1, H, W) float32 and y (n, H, W) int64 in [0, C + 1): 0 background, 1 + class."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"need images (M, h, w) and labels (M,), got {images.shape} and {labels.shape}"
        )
    if images.size and float(images.min()) < 0:
        raise ValueError(f"images must be non-negative (0 = empty), got min {float(images.min())}")
    if labels.size and int(labels.min()) < 0:
        raise ValueError(f"labels must be >= 0, got {int(labels.min())}")
    layouts = scene_layouts(len(images), n, canvas, images.shape[1:], items, seed)
    x = np.zeros((n, 1, *canvas), dtype=np.float32)  # (n, 1, H, W)
    y = np.zeros((n, *canvas), dtype=np.int64)  # (n, H, W)
    for j, layout in enumerate(layouts):
        x[j, 0], y[j] = paint_scene(images, labels, layout, canvas)
    return x, y


# ------------------------------------------------------------------------------ steps (1D segment)


def concatenate_segments(
    x: np.ndarray,
    y: np.ndarray,
    n: int,
    segments: tuple[int, int] = STEPS_SEGMENTS,
    length: int = STEPS_LENGTH,
    seed: int = 0,
    *,
    crop: tuple[int, int] = STEPS_CROP,
    background: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences, each 2-4 (``segments``, inclusive) source sequences laid end to end.

    x: (M, C, T) or (M, T) sources; y: (M,) int in [0, background). Each segment is a random source
    (with replacement), cropped to a random window of ``crop`` (min, max) steps (inclusive) at a random
    offset, so boundaries fall at varying places. The rest is padded with zeros on the right.
    Returns x (n, C, length) float32 and y (n, length) int64: each step labelled with its segment's
    class, the padding with ``background``."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 2:
        x = x[:, None, :]  # (M, T) -> (M, 1, T)
    if x.ndim != 3 or y.shape != x.shape[:1] or len(x) == 0:
        raise ValueError(f"need x (M, C, T) or (M, T) and y (M,), got {x.shape} and {y.shape}")
    if int(y.min()) < 0 or int(y.max()) >= background:
        raise ValueError(
            f"labels must be in [0, {background}) (background is {background}), got "
            f"{int(y.min())}..{int(y.max())}"
        )
    (s_lo, s_hi), (c_lo, c_hi), t = segments, crop, x.shape[2]
    if not 1 <= s_lo <= s_hi:
        raise ValueError(f"segments must be (min, max) with 1 <= min <= max, got {segments}")
    if not 1 <= c_lo <= c_hi <= t:
        raise ValueError(f"crop must be (min, max) with 1 <= min <= max <= {t}, got {crop}")
    if s_hi * c_hi > length:
        raise ValueError(f"{s_hi} segments of up to {c_hi} steps do not fit length {length}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    out_x = np.zeros((n, x.shape[1], length), dtype=np.float32)  # (n, C, L)
    out_y = np.full((n, length), background, dtype=np.int64)  # (n, L)
    for j in range(n):
        pos = 0
        for _ in range(int(rng.integers(s_lo, s_hi + 1))):
            i, k = int(rng.integers(0, len(x))), int(rng.integers(c_lo, c_hi + 1))
            start = int(rng.integers(0, t - k + 1))
            out_x[j, :, pos : pos + k] = x[i, :, start : start + k]  # (C, k)
            out_y[j, pos : pos + k] = y[i]
            pos += k
    return out_x, out_y


# --------------------------------------------------------------------------------- denoise (regress)


def noisy_copies(
    x_clean: np.ndarray, sigma: float, seed: int, *, std: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """x_clean (n, C, *S) -> (x_noisy, y_clean), both (n, C, *S) float32: x_noisy adds Gaussian noise
    of std ``sigma * std``, where ``std`` defaults to the std of all of x_clean; y_clean is a copy of
    x_clean."""
    clean = np.asarray(x_clean, dtype=np.float32)
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    scale = float(clean.std()) if std is None else float(std)
    if not (np.isfinite(scale) and scale >= 0):
        raise ValueError(f"std must be finite and >= 0, got {scale}")
    noise = np.random.default_rng(seed).standard_normal(clean.shape, dtype=np.float32)
    return clean + np.float32(sigma * scale) * noise, clean.copy()


# ------------------------------------------------------------------------------------------ loaders


def _cached(name: str, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """x_train, y_train, x_test, y_test cached as ``cache_dir()/name``, made by ``make`` and written
    atomically if absent."""
    path = cache_dir() / name
    if not path.exists():
        arrays = make()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.savez(
                tmp, x_train=arrays["x_train"], y_train=arrays["y_train"],
                x_test=arrays["x_test"], y_test=arrays["y_test"],
            )  # fmt: skip
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _source_tag(root: str | os.PathLike[str] | None) -> str:
    """Part of a cache name that tells Fashion-MNIST copies apart: the folder the user named (else
    $DNARCH_DATA, where the search starts); empty for the default search."""
    where = str(Path(root).resolve()) if root is not None else os.environ.get("DNARCH_DATA", "")
    return "-" + hashlib.blake2b(where.encode(), digest_size=4).hexdigest() if where else ""


def _fashion_pixels(
    root: str | os.PathLike[str] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fashion-MNIST through the ``fashion-mnist`` loader (so a missing set raises its DataError), as
    x (N, 28, 28) uint8 pixels and y (N,) for train and test. The loader standardises; its affine map
    is undone by sending the training set's range to 0..255 (exact for Fashion-MNIST, which spans it)."""
    d = sources.load_fashion("image", Path(root) if root is not None else None)
    x_tr, x_te = d.x_train.numpy()[:, 0], d.x_test.numpy()[:, 0]  # (N, 28, 28)
    lo, hi = float(x_tr.min()), float(x_tr.max())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0

    def pixels(x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint((x - lo) * scale), 0, 255).astype(np.uint8)

    return pixels(x_tr), d.y_train.numpy(), pixels(x_te), d.y_test.numpy()


def _standardised(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both standardised with the training set's mean and std."""
    mean, std = float(x_train.mean()), float(x_train.std()) or 1.0
    return (x_train - mean) / std, (x_test - mean) / std


def shrink(images: np.ndarray, factor: int) -> np.ndarray:
    """Average-pool (N, H, W) pixel images by ``factor`` per axis, rounded back to whole pixel values
    (the shape must divide). Returns (N, H / factor, W / factor) of the input's dtype."""
    n, h, w = images.shape
    if h % factor or w % factor:
        raise ValueError(f"images of {h}x{w} do not shrink by {factor}")
    pooled = images.reshape(n, h // factor, factor, w // factor, factor).mean(axis=(2, 4))
    return np.rint(pooled).astype(images.dtype)  # (N, H / factor, W / factor)


def load_fashion_scenes(
    root: str | os.PathLike[str] | None = None,
    n_train: int = 4_000,
    n_test: int = 1_000,
    seed: int = 0,
) -> DataBundle:
    """Fashion-MNIST scenes (``compose_scenes``) of items shrunk to 14x14: x (N, 1, 32, 32) float32,
    standardised with the training scenes' mean and std; y (N, 32, 32) int64, 0 background, 1 + class (11 classes). Training
    scenes use only training images, test scenes only test images. ``root``: the Fashion-MNIST folder,
    as for ``fashion-mnist``."""
    if root is not None:
        check_root(root)

    def make() -> dict[str, np.ndarray]:
        x_tr, y_tr, x_te, y_te = _fashion_pixels(root)
        x_tr, x_te = shrink(x_tr, SCENE_ITEM_POOL), shrink(x_te, SCENE_ITEM_POOL)
        xa, ya = compose_scenes(x_tr, y_tr, n_train, SCENE_CANVAS, SCENE_ITEMS, seed)
        xb, yb = compose_scenes(x_te, y_te, n_test, SCENE_CANVAS, SCENE_ITEMS, seed + 1)
        arrays = {"x_train": xa, "y_train": ya, "x_test": xb, "y_test": yb}
        # pixels stay whole numbers 0..255 under replace / max, and labels are below 11
        return {k: v.astype(np.uint8) for k, v in arrays.items()}

    name = f"fashion-scenes-v{_CACHE_VERSION}-tr{n_train}-te{n_test}-s{seed}{_source_tag(root)}.npz"
    a = _cached(name, make)
    x_tr, x_te = _standardised(a["x_train"].astype(np.float32), a["x_test"].astype(np.float32))
    return from_arrays(
        x_tr, a["y_train"].astype(np.int64), x_te, a["y_test"].astype(np.int64),
        name="fashion-scenes", num_classes=11, task="segment",
    )  # fmt: skip


def load_fashion_denoise(
    root: str | os.PathLike[str] | None = None,
    n_train: int = 4_000,
    n_test: int = 1_000,
    sigma: float = DENOISE_SIGMA,
    seed: int = 0,
) -> DataBundle:
    """The first ``n_train`` / ``n_test`` Fashion-MNIST images as standardised by ``fashion-mnist``,
    plus Gaussian noise of ``sigma`` times the clean training images' std (``noisy_copies``); the
    target is the clean image. x, y: (N, 1, 28, 28) float32; task 'regress' with 1 output channel."""
    if root is not None:
        check_root(root)

    def make() -> dict[str, np.ndarray]:
        d = sources.load_fashion("image", Path(root) if root is not None else None)
        clean_tr = d.x_train[:n_train].numpy()  # (N, 1, 28, 28)
        clean_te = d.x_test[:n_test].numpy()  # (N, 1, 28, 28)
        return _noisy_split(clean_tr, clean_te, sigma, seed)

    params = f"tr{n_train}-te{n_test}-sigma{sigma}-s{seed}{_source_tag(root)}"
    name = f"fashion-denoise-v{_CACHE_VERSION}-{params}.npz"
    return _regress_bundle(_cached(name, make), "fashion-denoise")


def load_mnist1d_steps(
    n_train: int = 4_000, n_test: int = 1_000, length: int = STEPS_LENGTH, seed: int = 0
) -> DataBundle:
    """MNIST-1D segments laid end to end (``concatenate_segments``): x (N, 1, length) float32 (MNIST-1D's
    values, zero padding), y (N, length) int64, the class per step, 10 for padding (11 classes).
    Training sequences use only MNIST-1D's training set, test sequences only its test set."""

    def make() -> dict[str, np.ndarray]:
        d = sources.load_mnist1d()
        xa, ya = concatenate_segments(
            d.x_train.numpy(), d.y_train.numpy(), n_train, STEPS_SEGMENTS, length, seed
        )
        xb, yb = concatenate_segments(
            d.x_test.numpy(), d.y_test.numpy(), n_test, STEPS_SEGMENTS, length, seed + 1
        )
        return {
            "x_train": xa,
            "y_train": ya.astype(np.uint8),
            "x_test": xb,
            "y_test": yb.astype(np.uint8),
        }

    name = f"mnist1d-steps-v{_CACHE_VERSION}-tr{n_train}-te{n_test}-L{length}-s{seed}.npz"
    a = _cached(name, make)
    return from_arrays(
        a["x_train"], a["y_train"].astype(np.int64), a["x_test"], a["y_test"].astype(np.int64),
        name="mnist1d-steps", num_classes=11, task="segment",
    )  # fmt: skip


def load_mnist1d_denoise(sigma: float = DENOISE_SIGMA, seed: int = 0) -> DataBundle:
    """All of MNIST-1D (4,000 / 1,000) plus Gaussian noise of ``sigma`` times the clean training
    inputs' std (``noisy_copies``); the target is the clean input. x, y: (N, 1, 40) float32."""

    def make() -> dict[str, np.ndarray]:
        d = sources.load_mnist1d()
        return _noisy_split(d.x_train.numpy(), d.x_test.numpy(), sigma, seed)

    name = f"mnist1d-denoise-v{_CACHE_VERSION}-sigma{sigma}-s{seed}.npz"
    return _regress_bundle(_cached(name, make), "mnist1d-denoise")


def _noisy_split(
    clean_train: np.ndarray, clean_test: np.ndarray, sigma: float, seed: int
) -> dict[str, np.ndarray]:
    """Noisy copies of both splits, the noise scaled by the training set's std in both."""
    std = float(np.std(clean_train))
    x_tr, y_tr = noisy_copies(clean_train, sigma, seed, std=std)
    x_te, y_te = noisy_copies(clean_test, sigma, seed + 1, std=std)
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}


def _regress_bundle(a: dict[str, np.ndarray], name: str) -> DataBundle:
    return from_arrays(
        a["x_train"], a["y_train"], a["x_test"], a["y_test"], name=name, task="regress"
    )

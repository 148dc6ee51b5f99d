"""Dense-prediction datasets (dnarch.data.dense): scenes, per-step sequences and denoising, checked on
synthetic inputs whose values say where they came from, and the loaders on tiny fake sources."""

import numpy as np
import pytest

from dnarch.data import DATASETS, DataError, from_arrays, load_data, sources
from dnarch.data.dense import (
    compose_scenes,
    concatenate_segments,
    load_fashion_scenes,
    noisy_copies,
    on_mask,
    paint_scene,
    scene_layouts,
)
from dnarch.data.idx import write_idx

# ------------------------------------------------------------------------------------------ scenes


def test_on_mask_is_relative_to_the_image_maximum() -> None:
    img = np.array([[0.0, 0.05, 0.11], [0.5, 1.0, 0.1]])
    assert on_mask(img).tolist() == [[False, False, True], [True, True, False]]
    assert on_mask(img * 200).tolist() == on_mask(img).tolist()
    assert not on_mask(np.zeros((3, 3))).any()


def _two_squares() -> tuple[np.ndarray, np.ndarray]:
    """Two 6x6 items: A a bright 4x4 square (1.0) in a faint frame (0.05, below 10%: not on); B a 3x6
    bar of 0.5 on its top rows."""
    a = np.full((6, 6), 0.05)
    a[1:5, 1:5] = 1.0
    b = np.zeros((6, 6))
    b[0:3, :] = 0.5
    return np.stack([a, b]), np.array([3, 7])


def test_paint_scene_gives_the_exact_label_map_with_the_later_item_on_top() -> None:
    images, labels = _two_squares()
    # A at (2, 3), then B at (4, 5): B's bar covers canvas rows 4-6, cols 5-10
    x, y = paint_scene(images, labels, np.array([[0, 2, 3], [1, 4, 5]]), (10, 12))
    want_y = np.zeros((10, 12), dtype=np.int64)
    want_y[3:7, 4:8] = 1 + 3  # A's square
    want_y[4:7, 5:11] = 1 + 7  # B on top
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert np.array_equal(y, want_y)
    want_x = np.zeros((10, 12), dtype=np.float32)
    want_x[2:8, 3:9] = 0.05
    want_x[3:7, 4:8] = 1.0
    want_x[4:7, 5:11] = 0.5  # B's on pixels replace A's brighter ones
    assert np.allclose(x, want_x)

    # the other order: A on top of B; A's faint frame neither relabels nor darkens B's bar
    x, y = paint_scene(images, labels, np.array([[1, 4, 5], [0, 2, 3]]), (10, 12))
    want_y = np.zeros((10, 12), dtype=np.int64)
    want_y[4:7, 5:11] = 1 + 7
    want_y[3:7, 4:8] = 1 + 3
    assert np.array_equal(y, want_y)
    want_x = np.zeros((10, 12), dtype=np.float32)
    want_x[2:8, 3:9] = 0.05
    want_x[4:7, 5:11] = 0.5
    want_x[3:7, 4:8] = 1.0
    assert np.allclose(x, want_x)


def _coded_items(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
    """m 28x28 items, item j a random rectangle of intensity 10 (j + 1) on 0: a pixel's value says
    which item shows there."""
    images = np.zeros((m, 28, 28), dtype=np.float32)
    for j in range(m):
        r, c = rng.integers(0, 14, 2)
        h, w = rng.integers(4, 14, 2)
        images[j, r : r + h, c : c + w] = 10 * (j + 1)
    return images, rng.integers(0, 10, m)


def test_compose_scenes_labels_follow_the_item_that_shows() -> None:
    images, labels = _coded_items(np.random.default_rng(1), 6)
    x, y = compose_scenes(images, labels, 30, canvas=(48, 40), seed=3)
    assert x.shape == (30, 1, 48, 40) and x.dtype == np.float32
    assert y.shape == (30, 48, 40) and y.dtype == np.int64
    assert y.min() >= 0 and y.max() < 11
    assert (y == 0).reshape(30, -1).any(1).all()  # background in every scene
    assert np.array_equal(y == 0, x[:, 0] == 0)
    shown = np.rint(x[:, 0][y > 0] / 10).astype(int) - 1  # which item shows at each labelled pixel
    assert np.array_equal(y[y > 0], 1 + labels[shown])
    # each scene is its layout painted: 2-4 items, all inside the canvas
    layouts = scene_layouts(6, 30, (48, 40), (28, 28), (2, 4), seed=3)
    assert {len(lay) for lay in layouts} == {2, 3, 4}
    for j, lay in enumerate(layouts):
        assert (lay[:, 1] <= 48 - 28).all() and (lay[:, 2] <= 40 - 28).all()
        xj, yj = paint_scene(images, labels, lay, (48, 40))
        assert np.array_equal(xj, x[j, 0]) and np.array_equal(yj, y[j])
    rows = np.concatenate(scene_layouts(6, 300, (48, 40), (28, 28), seed=0))  # (k, 3)
    assert rows[:, 0].min() == 0 and rows[:, 0].max() == 5  # every image can be drawn
    assert rows[:, 1].min() == 0 and rows[:, 1].max() == 48 - 28  # every place in the canvas
    assert rows[:, 2].min() == 0 and rows[:, 2].max() == 40 - 28


def test_compose_scenes_seeds_and_bad_input() -> None:
    images, labels = _coded_items(np.random.default_rng(0), 4)
    a, b, c = (compose_scenes(images, labels, 5, seed=s) for s in (0, 0, 1))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    with pytest.raises(ValueError, match="non-negative"):
        compose_scenes(images - 1, labels, 2)
    with pytest.raises(ValueError, match="do not fit"):
        compose_scenes(images, labels, 2, canvas=(20, 48))
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        compose_scenes(images, labels, 2, items=(3, 2))


# ------------------------------------------------------------------------------------------- steps


def _coded_sequences(m: int = 40, t: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """x[i, 0, s] = 10000 (class + 1) + 100 i + s: every value says its class, its source and its step."""
    y = np.arange(m) % 10
    x = 10000 * (y[:, None] + 1) + 100 * np.arange(m)[:, None] + np.arange(t)[None, :]
    return x[:, None, :].astype(np.float32), y


def test_concatenate_segments_labels_change_exactly_at_segment_boundaries() -> None:
    xs, ys = _coded_sequences()
    x, y = concatenate_segments(xs, ys, 60, seed=2)
    assert x.shape == (60, 1, 160) and x.dtype == np.float32
    assert y.shape == (60, 160) and y.dtype == np.int64
    assert y.min() >= 0 and y.max() <= 10
    first_boundaries, counts, all_lengths = set(), set(), []
    for v, lab in zip(x[:, 0].astype(np.int64), y, strict=True):
        used = int((v != 0).sum())
        assert (v[used:] == 0).all() and (lab[used:] == 10).all()  # padding: a suffix, class 10
        v, lab = v[:used], lab[:used]
        cls, src, step = v // 10000 - 1, (v % 10000) // 100, v % 100
        assert np.array_equal(lab, cls)  # each step labelled with its source's class
        # a segment is a run of consecutive steps of one source; boundaries are where that breaks
        cut = np.flatnonzero((src[1:] != src[:-1]) | (step[1:] != step[:-1] + 1)) + 1
        lengths = np.diff(np.concatenate([[0], cut, [used]]))
        assert 2 <= len(lengths) <= 4 and lengths.min() >= 20 and lengths.max() <= 40
        changes = np.flatnonzero(lab[1:] != lab[:-1]) + 1
        assert set(changes) == {c for c in cut if cls[c] != cls[c - 1]}
        first_boundaries.add(int(cut[0]))
        counts.add(len(lengths))
        all_lengths += lengths.tolist()
    assert len(first_boundaries) > 5  # crops move the boundaries around
    assert counts == {2, 3, 4} and min(all_lengths) == 20 and max(all_lengths) == 40


def test_concatenate_segments_seeds_and_bad_input() -> None:
    xs, ys = _coded_sequences()
    a, b, c = (concatenate_segments(xs[:, 0], ys, 8, seed=s) for s in (5, 5, 6))
    assert a[0].shape == (8, 1, 160)  # (M, T) sources count as one channel
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    with pytest.raises(ValueError, match="length 100"):
        concatenate_segments(xs, ys, 2, length=100)
    with pytest.raises(ValueError, match="labels must be in"):
        concatenate_segments(xs, ys + 1, 2)
    with pytest.raises(ValueError, match="crop"):
        concatenate_segments(xs, ys, 2, crop=(20, 41))


# ----------------------------------------------------------------------------------------- denoise


def test_noisy_copies_noise_has_the_asked_std_and_target_is_clean() -> None:
    clean = 3.0 * np.random.default_rng(0).standard_normal((200, 2, 50)) + 1.0  # std 3
    x, y = noisy_copies(clean, 0.5, seed=0)
    assert x.shape == y.shape == clean.shape and x.dtype == y.dtype == np.float32
    assert np.array_equal(y, clean.astype(np.float32))
    noise = x - y
    assert abs(noise.std() / (0.5 * clean.std()) - 1) < 0.02 and abs(noise.mean()) < 0.02
    x2, _ = noisy_copies(clean, 0.5, seed=0, std=1.0)  # an explicit reference std
    assert abs((x2 - y).std() / 0.5 - 1) < 0.02
    assert np.array_equal(noisy_copies(clean, 0.5, 0)[0], x)
    assert not np.array_equal(noisy_copies(clean, 0.5, 1)[0], x)
    with pytest.raises(ValueError, match="-0.1"):
        noisy_copies(clean, -0.1, 0)


# ----------------------------------------------------------------------------------------- loaders


def test_the_four_are_registered() -> None:
    assert {"fashion-scenes", "fashion-denoise", "mnist1d-steps", "mnist1d-denoise"} <= set(
        DATASETS
    )


def _fake_mnist1d(calls: list[int]):
    rng = np.random.default_rng(0)
    bundle = from_arrays(
        rng.standard_normal((50, 1, 40)), rng.integers(0, 10, 50),
        rng.standard_normal((20, 1, 40)), rng.integers(0, 10, 20), name="mnist1d",
    )  # fmt: skip

    def load():
        calls.append(1)
        return bundle

    return bundle, load


def test_mnist1d_loaders_generate_once_then_read_the_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DNARCH_CACHE", str(tmp_path))
    calls: list[int] = []
    src, fake = _fake_mnist1d(calls)
    monkeypatch.setattr(sources, "load_mnist1d", fake)

    d = load_data("mnist1d-steps")
    assert (d.name, d.task, d.num_classes) == ("mnist1d-steps", "segment", 11)
    assert tuple(d.x_train.shape) == (4000, 1, 160) and tuple(d.y_test.shape) == (1000, 160)
    assert set(np.flatnonzero(np.bincount(d.y_train.numpy().ravel()))) == set(range(11))
    test_values = set(src.x_test.numpy().ravel().tolist()) | {0.0}
    assert set(d.x_test.numpy().ravel().tolist()) <= test_values  # test from MNIST-1D's test set

    n = load_data("mnist1d-denoise")
    assert (n.name, n.task, n.num_classes) == ("mnist1d-denoise", "regress", 1)
    assert np.array_equal(n.y_train.numpy(), src.x_train.numpy())
    assert np.array_equal(n.y_test.numpy(), src.x_test.numpy())
    noise = (n.x_train - n.y_train).numpy()
    assert abs(noise.std() / (0.5 * src.x_train.numpy().std()) - 1) < 0.05

    assert calls == [1, 1] and len(list(tmp_path.glob("*.npz"))) == 2
    d2, n2 = load_data("mnist1d-steps"), load_data("mnist1d-denoise")
    assert calls == [1, 1]  # served from the cache
    assert np.array_equal(d2.x_train.numpy(), d.x_train.numpy())
    assert np.array_equal(d2.y_test.numpy(), d.y_test.numpy())
    assert np.array_equal(n2.x_test.numpy(), n.x_test.numpy())


def _fake_fashion(folder, n_train: int = 40, n_test: int = 15) -> None:
    """IDX files of items: a random rectangle of 60..255 on 0 (no faint pixels); one pixel of 255 in the
    training set. Training labels 0-4, test labels 5-9, so a scene tells which split it came from."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, n, first in (("train", n_train, 0), ("t10k", n_test, 5)):
        x = np.zeros((n, 28, 28), dtype=np.uint8)
        for j in range(n):
            r, c = rng.integers(0, 18, 2)
            x[j, r : r + rng.integers(5, 10), c : c + rng.integers(5, 10)] = rng.integers(60, 256)
        x[0, 0, 0] = 255
        write_idx(folder / f"{stem}-images-idx3-ubyte", x)
        write_idx(folder / f"{stem}-labels-idx1-ubyte", first + rng.integers(0, 5, n))


def test_fashion_scenes_from_idx_files_and_its_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DNARCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "fm"
    _fake_fashion(root)
    d = load_data("fashion-scenes", root=root)  # the registered sizes
    assert (d.name, d.task, d.num_classes) == ("fashion-scenes", "segment", 11)
    assert tuple(d.x_train.shape) == (4000, 1, 32, 32) and tuple(d.y_train.shape) == (4000, 32, 32)
    assert tuple(d.x_test.shape) == (1000, 1, 32, 32) and tuple(d.y_test.shape) == (1000, 32, 32)

    d = load_fashion_scenes(root, n_train=300, n_test=100)
    assert abs(float(d.x_train.mean())) < 1e-4 and abs(float(d.x_train.std()) - 1) < 1e-3
    assert set(np.flatnonzero(np.bincount(d.y_train.numpy().ravel()))) == {0, 1, 2, 3, 4, 5}
    assert set(np.flatnonzero(np.bincount(d.y_test.numpy().ravel()))) == {0, 6, 7, 8, 9, 10}
    empty = float(d.x_train.min())  # the standardised 0
    for x, y in ((d.x_train[:, 0], d.y_train), (d.x_test[:, 0], d.y_test)):
        assert (x[y == 0] == empty).all() and (x[y > 0] > empty).all()

    for f in root.iterdir():  # the source is gone: the cache serves
        f.unlink()
    again = load_fashion_scenes(root, n_train=300, n_test=100)
    assert np.array_equal(again.x_test.numpy(), d.x_test.numpy())
    assert np.array_equal(again.y_train.numpy(), d.y_train.numpy())
    empty_root = tmp_path / "empty"
    empty_root.mkdir()
    with pytest.raises(DataError, match="not found"):  # another folder is another source
        load_fashion_scenes(empty_root, n_train=300, n_test=100)


def test_fashion_denoise_from_idx_files(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DNARCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "fm"
    _fake_fashion(root)
    d = load_data("fashion-denoise", root=root)
    clean = load_data("fashion-mnist", root=root)
    assert (d.name, d.task, d.num_classes) == ("fashion-denoise", "regress", 1)
    assert tuple(d.x_train.shape) == (40, 1, 28, 28) and tuple(d.y_test.shape) == (15, 1, 28, 28)
    assert np.array_equal(d.y_train.numpy(), clean.x_train.numpy())
    assert np.array_equal(d.y_test.numpy(), clean.x_test.numpy())
    noise = (d.x_train - d.y_train).numpy()
    assert abs(noise.std() / (0.5 * clean.x_train.numpy().std()) - 1) < 0.05
    assert len(list((tmp_path / "cache").glob("fashion-denoise-*.npz"))) == 1


@pytest.mark.parametrize("name", ["fashion-scenes", "fashion-denoise"])
def test_missing_fashion_mnist_gives_the_fashion_mnist_error(tmp_path, monkeypatch, name) -> None:
    monkeypatch.setattr(sources, "FASHION_DEBIAN", str(tmp_path / "debian"))
    monkeypatch.setenv("DNARCH_DATA", str(tmp_path))
    monkeypatch.setenv("DNARCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError) as plain:
        load_data("fashion-mnist")
    with pytest.raises(DataError) as err:
        load_data(name)
    assert str(err.value) == str(plain.value) and "\n" not in str(err.value)


def test_shrink_averages_blocks_of_pixels() -> None:
    from dnarch.data.dense import shrink

    x = np.arange(2 * 4 * 6, dtype=np.uint8).reshape(2, 4, 6)
    small = shrink(x, 2)
    assert small.shape == (2, 2, 3) and small.dtype == np.uint8
    assert small[0, 0, 0] == round((0 + 1 + 6 + 7) / 4)
    with pytest.raises(ValueError, match="do not shrink"):
        shrink(x[:, :3], 2)

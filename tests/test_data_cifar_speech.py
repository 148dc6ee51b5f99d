"""CIFAR and Speech Commands loaders, on tiny datasets the tests write in the real on-disk formats."""

import os
import pickle
import struct
import tarfile
import wave

import numpy as np
import pytest
import torch

from dnarch.data import DataError
from dnarch.data import speech_commands as sc
from dnarch.data.cifar import load_cifar10, load_cifar100

# --- CIFAR ---------------------------------------------------------------------------------------


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote the real CIFAR files: bytes as str opcodes (not
    Python 3's ``_codecs.encode`` call) and numpy 1's ``numpy.core.multiarray._reconstruct``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_global(self, obj, name=None) -> None:
        if obj is np.zeros(0).__reduce__()[0]:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    dispatch[bytes] = save_bytes


def _py2_pickle(path, obj) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _fake_cifar(folder, label_keys, files, n: int, classes: int, seed: int = 0) -> dict:
    """Batches like the real ones; returns {file: (data (n, 3072) uint8, labels (n,))}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    out = {}
    for i, name in enumerate(files):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        data[:, 1024:2048] //= 2  # green darker than red: channels have different statistics
        labels = rng.integers(0, classes, n)
        batch = {b"batch_label": f"batch {i}".encode(), b"data": data,
                 b"filenames": [f"img_{i}_{j}.png".encode() for j in range(n)]}  # fmt: skip
        for key in label_keys:
            batch[key] = [int(v) for v in labels]
        _py2_pickle(folder / name, batch)
        out[name] = (data, labels)
    return out


CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _fake_cifar10(folder) -> dict:
    d = _fake_cifar(folder, [b"labels"], CIFAR10_FILES, n=8, classes=10)
    _py2_pickle(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return d


def _tar(archive, folder) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)


@pytest.mark.parametrize("layout", ["torchvision", "named", "archive", "explicit"])
def test_cifar10_shapes_labels_and_standardisation(tmp_path, monkeypatch, layout) -> None:
    base = tmp_path / "cifar10" if layout == "named" else tmp_path
    raw = _fake_cifar10(base / "cifar-10-batches-py")
    if layout == "archive":
        _tar(tmp_path / "cifar-10-python.tar.gz", tmp_path / "cifar-10-batches-py")
        for p in (tmp_path / "cifar-10-batches-py").iterdir():
            p.unlink()
        (tmp_path / "cifar-10-batches-py").rmdir()
    monkeypatch.setenv("DNARCH_DATA", str(tmp_path))
    monkeypatch.setenv("DNARCH_CACHE", str(tmp_path / "cache"))
    d = load_cifar10(base / "cifar-10-batches-py" if layout == "explicit" else None)
    assert not (
        layout == "archive" and (tmp_path / "cifar-10-batches-py").exists()
    )  # not extracted
    assert tuple(d.x_train.shape) == (40, 3, 32, 32) and tuple(d.x_test.shape) == (8, 3, 32, 32)
    assert d.x_train.dtype == d.x_test.dtype == torch.float32 and d.num_classes == 10
    assert d.name == "cifar10"
    train_u8 = np.concatenate([raw[f][0] for f in CIFAR10_FILES[:5]]).reshape(-1, 3, 32, 32)
    y_train = np.concatenate([raw[f][1] for f in CIFAR10_FILES[:5]])
    assert np.array_equal(d.y_train.numpy(), y_train)
    assert np.array_equal(d.y_test.numpy(), raw["test_batch"][1])
    x = d.x_train.numpy()
    assert np.allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    assert np.allclose(x.std(axis=(0, 2, 3)), 1, atol=1e-4)
    # the test set uses the training statistics; rows are the R, G, B planes in turn
    mean = train_u8.mean(axis=(0, 2, 3), dtype=np.float64)[None, :, None, None]
    std = train_u8.std(axis=(0, 2, 3), dtype=np.float64)[None, :, None, None]
    want = (raw["test_batch"][0].reshape(-1, 3, 32, 32) - mean) / std
    assert np.allclose(d.x_test.numpy(), want, atol=1e-5)


def test_cifar100_uses_fine_labels(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "cifar100" / "cifar-100-python"
    raw = _fake_cifar(folder, [b"fine_labels"], ["train", "test"], n=30, classes=100)
    for name in ("train", "test"):  # coarse labels differ from fine ones: the loader must pick fine
        data, fine = raw[name]
        _py2_pickle(folder / name, {b"data": data, b"fine_labels": [int(v) for v in fine],
                                    b"coarse_labels": [int(v) // 5 for v in fine]})  # fmt: skip
    _tar(tmp_path / "cifar100" / "cifar-100-python.tar.gz", folder)
    monkeypatch.setenv("DNARCH_DATA", str(tmp_path))
    for only_archive in (False, True):
        if only_archive:
            for p in folder.iterdir():
                p.unlink()
            folder.rmdir()
        d = load_cifar100(tmp_path / "cifar100" if only_archive else None)
        assert tuple(d.x_train.shape) == (30, 3, 32, 32) and d.num_classes == 100
        assert np.array_equal(d.y_train.numpy(), raw["train"][1])
        assert np.array_equal(d.y_test.numpy(), raw["test"][1])


class _Evil:
    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_cifar_restricted_unpickler_refuses_code(tmp_path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _fake_cifar10(folder)
    marker = tmp_path / "pwned"
    _py2_pickle(folder / "data_batch_3", {b"data": _Evil(marker)})
    with pytest.raises(DataError, match=r"data_batch_3.*refusing to unpickle posix\.system"):
        load_cifar10(tmp_path)
    assert not marker.exists()


def test_cifar_bad_batch_and_missing_data(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _fake_cifar10(folder)
    _py2_pickle(folder / "test_batch", {b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4})
    with pytest.raises(DataError, match=r"test_batch: data must be uint8 \(N, 3072\)"):
        load_cifar10(tmp_path)
    monkeypatch.setenv("DNARCH_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("DNARCH_CACHE", str(tmp_path / "cache"))
    for load, archive in ((load_cifar10, "cifar-10-python.tar.gz"), (load_cifar100, "cifar-100")):
        with pytest.raises(DataError, match="not found") as err:
            load()
        msg = str(err.value)
        assert "cs.toronto.edu" in msg and archive in msg and "\n" not in msg


# --- Speech Commands -----------------------------------------------------------------------------

WORDS = [*sc.TEN_WORDS, "bed", "cat"]  # sorted: bed, cat, down, go, left, ...


def _write_wav(path, samples, rate: int = 16000, width: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2" if width == 2 else "u1").tobytes())


def _marker(word: str, n: int) -> int:
    """The constant sample value of <word>/spk_nohash_<n>.wav, to recognise it after loading."""
    return 100 * WORDS.index(word) + n + 1


def _fake_speech(root) -> None:
    """Per word: file 0 train, file 1 validation, file 2 test. 'yes' file 0 lasts 0.5 s; 'no' file
    0 lasts 1.25 s with a different value after the first second."""
    for word in WORDS:
        for n in range(3):
            s = np.full(16000, _marker(word, n), dtype=np.int16)
            if (word, n) == ("yes", 0):
                s = s[:8000]
            if (word, n) == ("no", 0):
                s = np.concatenate([s, np.full(4000, -7, np.int16)])
            _write_wav(root / word / f"spk{n}_nohash_{n}.wav", s)
    _write_wav(root / "_background_noise_" / "noise.wav", np.ones(16000))
    (root / "validation_list.txt").write_text("".join(f"{w}/spk1_nohash_1.wav\n" for w in WORDS))
    (root / "testing_list.txt").write_text("".join(f"{w}/spk2_nohash_2.wav\n" for w in WORDS))
    (root / "README.md").write_text("not a word")


@pytest.fixture
def speech(tmp_path, monkeypatch):
    root = tmp_path / "data" / "speech-commands"
    _fake_speech(root)
    monkeypatch.setenv("DNARCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DNARCH_CACHE", str(tmp_path / "cache"))
    return root


@pytest.mark.parametrize("subset", ["all", "10"])
def test_speech_commands_labels_splits_and_padding(speech, subset) -> None:
    d = sc.load_speech_commands(subset=subset)
    classes = sorted(WORDS) if subset == "all" else sorted(sc.TEN_WORDS)
    assert d.num_classes == len(classes) and d.name.endswith("-10") == (subset == "10")
    k = len(classes)
    assert tuple(d.x_train.shape) == (k, 1, 16000) and tuple(d.x_test.shape) == (k, 1, 16000)
    assert (
        d.x_train.dtype == d.x_test.dtype == torch.float32 and float(d.x_train.abs().max()) <= 1.0
    )
    x_tr, x_te = d.x_train.numpy()[:, 0], d.x_test.numpy()[:, 0]
    # ordered by path, so by class; file 0 is train, file 2 is test, file 1 (validation) is in neither
    for i, word in enumerate(classes):
        assert int(d.y_train[i]) == i and int(d.y_test[i]) == i
        assert x_tr[i, 0] * 32768 == _marker(word, 0) and x_te[i, -1] * 32768 == _marker(word, 2)
    values = set(np.unique(np.round(np.concatenate([x_tr, x_te]) * 32768)).astype(int).tolist())
    assert not values & {_marker(w, 1) for w in WORDS}
    yes, no = classes.index("yes"), classes.index("no")
    assert np.all(x_tr[yes, :8000] * 32768 == _marker("yes", 0)) and np.all(x_tr[yes, 8000:] == 0)
    assert np.all(x_tr[no] * 32768 == _marker("no", 0))  # cropped: the -7 tail is gone


def test_speech_commands_cache_is_reused_and_keyed_by_file_count(speech, monkeypatch) -> None:
    first = sc.load_speech_commands(subset="10")
    assert len(list((speech.parent.parent / "cache").glob("speech-commands-10-*.npz"))) == 1
    opened = []
    real_open = wave.open

    def counting_open(*args, **kwargs):
        opened.append(args[0])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(sc.wave, "open", counting_open)
    again = sc.load_speech_commands(subset="10")
    assert opened == [] and np.array_equal(first.x_train.numpy(), again.x_train.numpy())
    assert np.array_equal(first.y_test.numpy(), again.y_test.numpy())
    _write_wav(speech / "go" / "spk9_nohash_0.wav", np.full(16000, 5))  # a new file: decode again
    grown = sc.load_speech_commands(subset="10")
    assert opened and len(grown.x_train) == len(first.x_train) + 1


def test_speech_commands_rejects_bad_wavs_and_subsets(tmp_path, speech) -> None:
    with pytest.raises(DataError, match="subset must be 'all' or '10', got '12'"):
        sc.load_speech_commands(subset="12")
    for rate, width, want in ((8000, 2, "8000 Hz"), (16000, 1, "8-bit")):
        bad = speech / "cat" / "spk0_nohash_0.wav"
        _write_wav(bad, np.zeros(100), rate=rate, width=width)
        with pytest.raises(DataError, match=want) as err:
            sc.load_speech_commands(speech)
        assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_speech_commands_missing_says_how_to_get_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DNARCH_DATA", str(tmp_path))
    monkeypatch.setenv("DNARCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="not found") as err:
        sc.load_speech_commands()
    assert "speech_commands_v0.02.tar.gz" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "yes").mkdir()
    _write_wav(tmp_path / "yes" / "a_nohash_0.wav", np.zeros(10))
    for name in ("validation_list.txt", "testing_list.txt"):
        (tmp_path / name).write_text("")
    with pytest.raises(DataError, match="lacks word folders"):
        sc.load_speech_commands(tmp_path, subset="10")

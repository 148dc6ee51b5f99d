"""Dataset registry: IDX files (MNIST family) written by the test in the real format."""

import gzip

import numpy as np
import pytest

from dnarch.data import DataError, load_data
from dnarch.data.idx import IDXError, read_idx, write_idx


def _fake_idx_folder(folder, gz: bool, n_train: int = 30, n_test: int = 10) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{ext}", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", rng.integers(0, 10, n_train))
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", rng.integers(0, 10, n_test))


def test_idx_round_trip_plain_and_gz(tmp_path) -> None:
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, a)
        assert np.array_equal(read_idx(tmp_path / name), a)


def test_idx_rejects_bad_files(tmp_path) -> None:
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(IDXError, match="magic"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "ok", np.zeros((4, 5), dtype=np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-3])
    with pytest.raises(IDXError, match="header promises"):
        read_idx(tmp_path / "short")
    (tmp_path / "broken.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01")[:-4])
    with pytest.raises(IDXError):
        read_idx(tmp_path / "broken.gz")


@pytest.mark.parametrize(
    "name,shape",
    [("mnist", (1, 28, 28)), ("mnist-seq", (1, 784)), ("mnist-pseq", (1, 784))],
)
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_mnist_family_from_idx(tmp_path, monkeypatch, name, shape, layout) -> None:
    folder = tmp_path / "mnist" if layout == "flat" else tmp_path / "MNIST" / "raw"
    _fake_idx_folder(folder, gz=layout == "torchvision")
    monkeypatch.setenv("DNARCH_DATA", str(tmp_path))
    d = load_data(name)
    assert tuple(d.x_train.shape) == (30, *shape) and tuple(d.x_test.shape) == (10, *shape)
    assert d.num_classes == 10 and abs(float(d.x_train.mean())) < 1e-5
    if name == "mnist-pseq":  # the permutation is fixed and is a permutation
        seq = load_data("mnist-seq")
        assert not np.array_equal(d.x_train.numpy(), seq.x_train.numpy())
        assert np.allclose(np.sort(d.x_train.numpy(), -1), np.sort(seq.x_train.numpy(), -1))


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DNARCH_DATA", str(tmp_path))
    monkeypatch.setenv("DNARCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="not found") as err:
        load_data("mnist")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_data_root_names_the_folder(tmp_path, monkeypatch, layout) -> None:
    monkeypatch.delenv("DNARCH_DATA", raising=False)
    root = tmp_path / "somewhere"
    _fake_idx_folder(root if layout == "flat" else root / "FashionMNIST" / "raw", gz=False)
    d = load_data("fashion-mnist", root=root)
    assert tuple(d.x_train.shape) == (30, 1, 28, 28)
    with pytest.raises(DataError, match="not an existing folder"):
        load_data("fashion-mnist", root=tmp_path / "nowhere")
    with pytest.raises(DataError, match="not found"):
        load_data("mnist", root=tmp_path)  # a folder without the files: no fallback search


def test_data_root_through_the_cli(tmp_path, monkeypatch, capsys) -> None:
    from dnarch.cli import main

    monkeypatch.delenv("DNARCH_DATA", raising=False)
    _fake_idx_folder(tmp_path / "fm", gz=True, n_train=40, n_test=20)
    code = main(["train", "--data", "fashion-mnist-seq", f"--data.root={tmp_path / 'fm'}",
                 "--epochs", "1", "--net.blocks=1", "--net.width=4", "--net.hidden=4",
                 "--net.kernel_hidden=4", "--train.batch_size=20", "--quiet",
                 "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 0
    assert (tmp_path / "run" / "model.pt").is_file()
    code = main(["train", "--data", "mnist", f"--data.root={tmp_path / 'none'}", "--quiet",
                 "--out", str(tmp_path / "run2")])  # fmt: skip
    assert code == 2 and "not an existing folder" in capsys.readouterr().err
    assert not (tmp_path / "run2").exists()


def test_every_registered_dataset_fails_cleanly_without_its_files(tmp_path, monkeypatch) -> None:
    from dnarch.data import DATASETS, sources

    monkeypatch.setattr(sources, "FASHION_DEBIAN", str(tmp_path / "debian"))
    monkeypatch.setenv("DNARCH_DATA", str(tmp_path))
    monkeypatch.setenv("DNARCH_CACHE", str(tmp_path / "cache"))
    generated = {
        "mnist1d",
        "digits",
        "spoken-digits",
        "listops",
        "mnist1d-steps",
        "mnist1d-denoise",
    }
    for name in sorted(set(DATASETS) - generated):
        with pytest.raises(DataError) as err:
            load_data(name)
        message = str(err.value)
        assert "\n" not in message and ("DNARCH_DATA" in message or "install" in message), name

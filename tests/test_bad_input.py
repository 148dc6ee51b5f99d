"""Bad input, the second suite (issue 5): every case ends in one line naming the problem and exit code
2 from the CLI, or a clear exception from the API, and nothing already saved is lost."""

import errno
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

import dnarch
from dnarch.cli import main
from dnarch.config import ConfigError
from dnarch.data import DataError

TINY = ["--epochs", "1", "--data.limit_train=64", "--data.limit_test=32", "--net.blocks=2",
        "--net.width=4", "--net.hidden=4", "--net.kernel_hidden=4", "--quiet"]  # fmt: skip


def _npz(path: Path, x_train, y_train, x_test=None, y_test=None) -> str:
    x_test = x_train if x_test is None else x_test
    y_test = y_train if y_test is None else y_test
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return str(path)


def _cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    rng = np.random.default_rng(0)
    y = np.arange(16) % 2
    return {
        "zero budget": (["--budget", "0"], "budget must be > 0"),
        "even direct kernel": (["--net.direct_kernel=4"], "net.direct_kernel must be 0 or odd"),
        "unreachable absolute budget": (["--budget", "5"], "below the smallest network"),
        "budget above the maximal": (["--budget", "1e12"], "above the maximal network"),
        "budget with no axis learned": (
            [
                "--budget",
                "0.5",
                "--net.learn_kernel=false",
                "--net.learn_width=false",
                "--net.learn_resolution=false",
                "--net.learn_depth=false",
            ],
            "learn more axes",
        ),  # fmt: skip
        "negative epochs": (["--epochs", "-3"], "train.epochs must be >= 1"),
        "fractional budget above 1": (["--budget", "1.5"], "neither a fraction"),
        "budget in percent above 100": (["--budget", "150%"], "lies in (0%, 100%]"),
        "budget that is not a number": (["--budget", "abc"], "--budget takes a fraction"),
        "negative seed": (["--seed", "-1"], "train.seed must lie in [0, 2**32)"),
        "seed of 2**32": (["--seed", str(2**32)], "train.seed must lie in [0, 2**32)"),
        "zero blocks": (["--net.blocks=0"], "net.blocks must be >= 1"),
        "negative width": (["--net.width=-4"], "net.width must be >= 1"),
        "zero batch size": (["--train.batch_size=0"], "train.batch_size must be >= 1"),
        "zero learning rate": (["--train.lr=0"], "train.lr must be > 0"),
        "threshold out of range": (["--net.threshold=0.7"], "net.threshold must lie in"),
        "nan weight": (["--budget.weight=nan"], "budget.weight must be finite"),
        "typo in a section": (["--trian.lr=1"], "unknown config key 'trian.lr'"),
        "bool expected": (["--net.learn_depth=maybe"], "net.learn_depth expects bool"),
        "rank-5 inputs": (
            ["--data", _npz(tmp / "r5.npz", rng.normal(size=(16, 1, 4, 4, 4, 4)), y)],
            "inputs must be (N, S), (N, C, S) or (N, C, H, W)",
        ),
        "negative labels": (
            ["--data", _npz(tmp / "neg.npz", rng.normal(size=(16, 8)), y - 1)],
            "labels must be >= 0",
        ),
        "empty training set": (
            [
                "--data",
                _npz(
                    tmp / "empty.npz",
                    np.zeros((0, 8)),
                    np.zeros(0, int),
                    rng.normal(size=(4, 8)),
                    y[:4],
                ),
            ],
            "train set is empty",
        ),  # fmt: skip
        "one training sample": (
            [
                "--data",
                _npz(
                    tmp / "one.npz", rng.normal(size=(1, 8)), y[:1], rng.normal(size=(4, 8)), y[:4]
                ),
            ],
            "at least 2 samples",
        ),  # fmt: skip
        "1x1 images": (
            ["--data", _npz(tmp / "1x1.npz", rng.normal(size=(16, 3, 1, 1)), y)],
            "nothing to convolve",
        ),
        "length-1 sequences": (
            ["--data", _npz(tmp / "len1.npz", rng.normal(size=(16, 1)), y)],
            "nothing to convolve",
        ),
        "NaN in the data": (
            ["--data", _npz(tmp / "nan.npz", np.full((16, 8), np.nan), y)],
            "contain NaN or inf",
        ),
        "train and test shapes differ": (
            [
                "--data",
                _npz(tmp / "mix.npz", rng.normal(size=(16, 8)), y, rng.normal(size=(16, 9)), y),
            ],
            "differ in shape",
        ),  # fmt: skip
        "one class only": (
            ["--data", _npz(tmp / "oneclass.npz", rng.normal(size=(16, 8)), y * 0)],
            "at least 2 classes",
        ),
        "a .npz that is not one": (
            ["--data", str(tmp / "fake.npz")],
            "is not a .npz archive",
        ),
        "a folder as --data": (["--data", str(tmp)], "is a folder; give a .npz file"),
        "missing data root": (
            ["--data", "fashion-mnist", f"--data.root={tmp / 'nowhere'}"],
            "not an existing folder",
        ),
        "data root without the files": (
            ["--data", "mnist", f"--data.root={tmp}"],
            "not found",
        ),
    }


with tempfile.TemporaryDirectory() as _tmp:
    CASES = list(_cases(Path(_tmp)))


@pytest.mark.parametrize("name", CASES)
def test_bad_train_input(name, tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "fake.npz").write_text("not a zip")
    argv, message = _cases(tmp_path)[name]
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dnarch: error:") and len(err.splitlines()) == 1, err
    assert message in err, err
    assert not (tmp_path / "runs").exists()


def test_not_a_run_folder(tmp_path, capsys) -> None:
    for argv in (
        ["finetune", str(tmp_path)],
        ["export", str(tmp_path)],
        ["finetune", str(tmp_path / "x")],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("dnarch: error:") and len(err.splitlines()) == 1, err


def test_read_only_output_folder(tmp_path, monkeypatch, capsys) -> None:
    real = Path.write_bytes

    def read_only(self, data):
        if ".write_test" in self.name:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    assert main(["train", *TINY, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "cannot write to output folder" in err and "Read-only" in err


@pytest.mark.slow
def test_full_disk_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys) -> None:
    from dnarch.train import callbacks
    from dnarch.train.callbacks import load_checkpoint

    folder = tmp_path / "run"
    writes = []
    real = Path.write_bytes

    def filling_up(self, data):
        if self.name.startswith("checkpoint.") and ".tmp" in self.name:
            writes.append(1)
            if len(writes) == 2:  # the second epoch's checkpoint hits a full disk half-way
                real(self, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", filling_up)
    argv = ["train", *TINY, "--epochs", "3", "--out", str(folder)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err
    assert "checkpoint.pt" in err and f"dnarch train --resume {folder}" in err, err
    blob = load_checkpoint(folder / "checkpoint.pt")  # epoch 1's, whole and valid
    assert blob["trainer"]["epoch"] == 1
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]  # no half-written file left
    assert callbacks  # (imported for the patch target's module)
    monkeypatch.undo()
    assert main(["train", "--resume", str(folder), "--quiet"]) == 0  # and the run can go on


def test_a_tensorboard_writer_that_fails_in_its_thread_prints_one_line(tmp_path, capfd) -> None:
    """The event writer's thread fails on a full disk: its traceback is not printed; the run's own
    error (raised again by the next flush) is the one line."""
    import subprocess
    import sys

    script = f"""
import errno, sys
from tensorboard.summary.writer import record_writer
def full(self, data):
    raise OSError(errno.ENOSPC, "No space left on device")
record_writer.RecordWriter.write = full
from dnarch.cli import main
sys.exit(main(["train", *{TINY!r}, "--epochs", "2", "--out", {str(tmp_path / "run")!r}]))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err, err
    assert "Exception in thread" not in err


def test_api_raises_clear_exceptions() -> None:
    x, y = np.random.default_rng(0).normal(size=(16, 8)), np.arange(16) % 2
    with pytest.raises(DataError, match="labels must be"):
        dnarch.fit(x, y[:8], x, y, epochs=1, progress=False)
    with pytest.raises(DataError, match="nothing to convolve"):
        dnarch.fit(x[:, :1], y, x[:, :1], y, epochs=1, progress=False)
    with pytest.raises(ConfigError, match="below the smallest network"):
        dnarch.fit(x, y, x, y, budget=3.0, epochs=1, progress=False)
    with pytest.raises(ConfigError, match="unknown config key"):
        dnarch.fit(x, y, x, y, epochs=1, progress=False, net__widht=3)
    with pytest.raises(ConfigError, match="unknown config key"):
        dnarch.fit(x, y, x, y, epochs=1, progress=False, **{"net.widht": 3})  # the CLI's spelling
    for budget, message in (
        ("abc", "budget takes a fraction"),
        ([0.5], "budget takes a fraction"),
        (True, "budget takes a fraction"),
        (1.5, "neither a fraction"),
        ("150%", "in percent"),
    ):
        with pytest.raises(ConfigError, match=message):
            dnarch.fit(x, y, x, y, budget=budget, epochs=1, progress=False)
    with pytest.raises(ConfigError, match=r"train.seed must lie in \[0, 2\*\*32\)"):
        dnarch.fit(x, y, x, y, epochs=1, progress=False, train__seed=-1)


def test_budget_spellings_and_version(capsys) -> None:
    from dnarch.config import RunConfig, parse_budget, with_overrides

    assert parse_budget("25%") == parse_budget("0.25") == 0.25
    assert parse_budget("None") is None and parse_budget("1200000") == 1.2e6
    assert with_overrides(RunConfig(), {"budget.budget": "10%"}).budget.budget == pytest.approx(0.1)
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert (
        exit_.value.code == 0 and capsys.readouterr().out.strip() == f"dnarch {dnarch.__version__}"
    )
    assert json.dumps  # keep the import honest


def test_an_axis_too_long_to_export_its_resampling_fails_before_training(tmp_path, capsys) -> None:
    from dnarch.config import NetConfig
    from dnarch.models import build_model
    from dnarch.models.dnarchnet import MAX_RESAMPLED_LENGTH

    n = MAX_RESAMPLED_LENGTH + 1
    with pytest.raises(ValueError, match="--net.learn_resolution=false"):
        build_model(NetConfig(blocks=2, width=2, hidden=2), 1, 2, (n,))
    build_model(NetConfig(blocks=2, width=2, hidden=2, learn_resolution=False), 1, 2, (n,))
    build_model(NetConfig(blocks=1, width=2, hidden=2), 1, 2, (n,))  # block 0 never downsamples
    x = np.random.default_rng(0).normal(size=(4, 1, n)).astype(np.float32)
    data = _npz(tmp_path / "long.npz", x, np.arange(4) % 2)
    out = tmp_path / "run"
    # the learned (Fourier) resolution refuses it; the auto preset's strided pyramid has no matrices
    assert main(["train", *TINY, "--preset", "seq", "--data", data, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "too long to learn where to downsample" in err, err
    assert not out.exists()


def test_labels_must_be_class_ids_each_seen_in_training() -> None:
    x = np.random.default_rng(0).normal(size=(12, 8))
    y = np.arange(12) % 3
    for y_train, y_test, message in [
        (y * 0, y * 0 + 1, "training labels hold 1 class"),
        (y % 2, y, "test labels 2 never occur in the training labels"),
        (np.array([0, 5, 900] * 4), np.array([0, 5, 900] * 4), "a 901-way head"),
        (np.array(["cat", "dog", "eel"] * 4), y, "train labels are not numeric"),
    ]:
        with pytest.raises(DataError, match=message) as err:
            dnarch.fit(x, y_train, x, y_test, epochs=1, progress=False)
        assert len(str(err.value).splitlines()) == 1
    with pytest.raises(DataError, match="encode them as integers"):
        dnarch.fit(x, y.astype(str), x, y, epochs=1, progress=False)


def test_ctrl_c_while_the_libraries_load_is_one_line() -> None:
    import subprocess
    import sys

    script = """
import sys
class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise KeyboardInterrupt
sys.meta_path.insert(0, CtrlC())
from dnarch.__main__ import main
sys.exit(main())
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 130
    assert proc.stderr.strip() == "dnarch: interrupted while starting; nothing was written"


def test_atomic_writes_keep_the_old_file_and_leave_no_temporary(tmp_path) -> None:
    from dnarch.files import atomic_path, atomic_write_text

    target = tmp_path / "cache.npz"
    atomic_write_text(target, "old")
    with pytest.raises(OSError), atomic_path(target) as tmp:
        assert tmp.suffix == ".npz" and str(os.getpid()) in tmp.name
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.npz"]
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        np.savez(tmp, x=np.zeros(2))  # savez keeps the name: it ends in .npz
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.npz"]
    with atomic_path(target) as tmp:
        np.savez(tmp, x=np.ones(2))
    assert np.load(target)["x"].tolist() == [1.0, 1.0]


def test_an_os_error_with_a_bytes_path_names_it_as_text(tmp_path, monkeypatch, capsys) -> None:
    real = Path.write_bytes

    def read_only(self, data):
        if self.name.startswith("config."):
            raise OSError(errno.EROFS, "Read-only file system", os.fsencode(str(self)))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    assert main(["train", *TINY, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Read-only file system" in err, err
    assert "b'" not in err and str(tmp_path / "run" / "config.json") in err, err

"""A run folder belongs to one run: --out rules, --overwrite, and the lock (dnarch.train.folder)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dnarch.cli import main
from dnarch.train.folder import LOCK, FolderError, RunLock, check_out_dir, clear_run, is_run
from tests.test_bad_input import TINY


def _run_folder(path: Path, finished: bool = False) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"train": {}, "resolved": {"dataset": "x"}}))
    (path / "checkpoint.pt").write_bytes(b"ckpt")
    (path / "metrics.csv").write_text("epoch\n1\n")
    (path / "tensorboard").mkdir(exist_ok=True)
    (path / "tensorboard" / "events").write_bytes(b"e")
    if finished:
        (path / "summary.json").write_text("{}")
    return path


def test_new_and_empty_folders_are_taken(tmp_path) -> None:
    assert check_out_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "empty").mkdir()
    assert check_out_dir(tmp_path / "empty") == tmp_path / "empty"


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_that_is_not_a_run_is_never_taken(tmp_path, overwrite) -> None:
    (tmp_path / "config.json").write_text('{"mine": 1}')  # a user's own config.json
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FolderError, match="does not hold a dnarch run"):
        check_out_dir(tmp_path, overwrite)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FolderError, match="is not a folder"):
        check_out_dir(tmp_path / "file", overwrite)


def test_a_run_is_refused_unless_overwrite(tmp_path) -> None:
    unfinished = _run_folder(tmp_path / "u")
    with pytest.raises(FolderError, match=f"dnarch train --resume {unfinished}"):
        check_out_dir(unfinished)
    finished = _run_folder(tmp_path / "f", finished=True)
    with pytest.raises(FolderError, match="already holds a finished run"):
        check_out_dir(finished)
    for folder in (unfinished, finished):
        assert is_run(folder)
        assert check_out_dir(folder, overwrite=True) == folder


def test_clear_run_removes_the_runs_files_only(tmp_path) -> None:
    folder = _run_folder(tmp_path, finished=True)
    (folder / "model.onnx").write_bytes(b"exported by the user")
    (folder / "notes.txt").write_text("mine")
    clear_run(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "notes.txt"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid names no process
    return proc.pid


def test_the_lock_refuses_a_live_owner_and_takes_over_a_stale_one(tmp_path) -> None:
    lock = tmp_path / LOCK
    with RunLock(tmp_path):
        assert lock.read_text() == f"{socket.gethostname()} {os.getpid()}"
        with RunLock(tmp_path):  # the same process may enter again
            pass
    assert not lock.exists()  # released
    for holder in (f"{socket.gethostname()} {os.getppid()}", "other-host 12345", ""):
        lock.write_text(holder)  # a live process here, one on another host, one mid-write
        with pytest.raises(FolderError, match="in use by another dnarch run"):
            RunLock(tmp_path).__enter__()
        assert lock.read_text() == holder  # not taken, not removed
    lock.write_text(f"{socket.gethostname()} {_dead_pid()}")  # killed: stale
    with RunLock(tmp_path):
        assert lock.read_text().endswith(f" {os.getpid()}")
    assert not lock.exists()


@pytest.mark.slow
def test_cli_refuses_an_interrupted_run_and_overwrites_only_when_asked(tmp_path, capsys) -> None:
    out = _run_folder(tmp_path / "run")
    assert main(["train", *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"dnarch train --resume {out}" in err, err
    assert (out / "checkpoint.pt").read_bytes() == b"ckpt"  # nothing lost
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.csv").write_text("my numbers")
    assert main(["train", *TINY, "--out", str(mine), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not hold a dnarch run" in err, err
    assert (mine / "metrics.csv").read_text() == "my numbers"
    assert main(["train", *TINY, "--out", str(out), "--overwrite"]) == 0
    capsys.readouterr()
    assert (out / "summary.json").exists() and not (out / "tensorboard" / "events").exists()
    assert not (out / LOCK).exists()
    assert main(["train", "--resume", str(out), "--overwrite"]) == 2
    assert "drop --overwrite" in capsys.readouterr().err


def test_cli_refuses_a_folder_another_run_holds(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text(f"{socket.gethostname()} {os.getppid()}")
    assert main(["train", *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "in use by another dnarch run" in err, err
    assert sorted(p.name for p in out.iterdir()) == [LOCK]  # nothing written

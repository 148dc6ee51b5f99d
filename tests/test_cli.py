"""CLI: a one-epoch run writes every artefact; bad input exits 2 with one line."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from dnarch.cli import main
from dnarch.export import load_static
from dnarch.train.callbacks import load_checkpoint

QUICK = ["--epochs", "1", "--data.limit_train=256", "--data.limit_test=128", "--net.backend=direct",
         "--net.blocks=3", "--quiet"]  # fmt: skip


def test_one_epoch_run_writes_every_artefact(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--budget", "0.5", *QUICK]) == 0
    printed = capsys.readouterr().out
    for needle in ("kernel", "hidden", "resolution in -> out", "MACs/sample", "test accuracy"):
        assert needle in printed
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "metrics.csv", "checkpoint.pt", "architecture.json", "model.pt",
            "summary.json"} <= names  # fmt: skip
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["net"]["blocks"] == 3 and cfg["budget"]["budget"] == 0.5
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 1 and {"test_acc", "macs", "b0_kernel", "b2_hidden"} <= set(rows[0])
    ckpt = load_checkpoint(out / "checkpoint.pt", cfg)["trainer"]
    assert ckpt["epoch"] == 1 and ckpt["step"] == 0 and "optimizer" in ckpt
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["macs"] <= summary["max_macs"]
    assert set(summary["maximal_sizes"]) == {"kernel", "res_out", "hidden", "depth"}
    # one short epoch: the cut-offs' rate the travel asks for is above arch_lr, so it is capped
    assert summary["resolution_lr_scale"] == 1.0
    static = load_static(out)
    assert static(torch.randn(2, 1, 40)).shape == (2, 10)
    # a finished run folder is never overwritten
    assert main(["train", "--out", str(out), *QUICK]) == 2


def test_npz_data_and_config_file(tmp_path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.normal(size=(64, 2, 8, 8)), y_train=rng.integers(0, 3, 64),
             x_test=rng.normal(size=(16, 2, 8, 8)), y_test=rng.integers(0, 3, 16))  # fmt: skip
    (tmp_path / "c.json").write_text(json.dumps({"net": {"width": 8, "hidden": 8}}))
    out = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path / "d.npz"), "--config", str(tmp_path / "c.json"),
            "--out", str(out), *QUICK]  # fmt: skip
    assert main(argv) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["net"]["width"] == 8 and cfg["net"]["omega0"] == 20.0  # image preset picked for 2D
    assert cfg["resolved"]["input_shape"] == [8, 8] and cfg["resolved"]["num_classes"] == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--net.widht=3"],
        ["train", "--net.width", "abc"],
        ["train", "--bogus"],
        ["train", "--budget", "-1"],
        ["train", "--budget", "lots"],
        ["train", "--epochs", "0"],
        ["train", "--data", "nosuchdata"],
        ["train", "--data", "/nonexistent/file.npz"],
        ["train", "--preset", "huge"],
        ["train", "--config", "/nonexistent.json"],
        ["train", "--net.width"],
        ["fly"],
        [],
        ["train", "--budget", "inf"],
        ["train", "--train.device=cuda:x"],
        ["train", "--config", "LIST_JSON"],
        ["train", "--config", "TMP"],
        ["train", "--data", "STRING_LABELS"],
        ["train", "--out", "UNDER_A_FILE", "--epochs=1", "--data.limit_train=64"],
        ["export", "TMP", "--format", "onnx"],
        ["export", "TMP", "--format", "gif"],
    ],
)
def test_bad_input_exits_2_with_one_line(argv, capsys, tmp_path, monkeypatch) -> None:
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "file").write_text("x")
    np.savez(tmp_path / "s.npz", x_train=np.zeros((4, 8)), y_train=np.array(["a", "b", "a", "b"]),
             x_test=np.zeros((4, 8)), y_test=np.array(["a", "b", "a", "b"]))  # fmt: skip
    subs = {"LIST_JSON": str(tmp_path / "list.json"), "TMP": str(tmp_path),
            "STRING_LABELS": str(tmp_path / "s.npz"), "UNDER_A_FILE": str(tmp_path / "file" / "run")}  # fmt: skip
    argv = [subs.get(a, a) for a in argv]
    monkeypatch.chdir(tmp_path)  # a default run folder would appear here
    assert main(argv) == 2
    assert not (tmp_path / "runs").exists()  # a rejected run leaves no empty run folder
    err = capsys.readouterr().err.strip()
    assert err.startswith("dnarch: error:") and len(err.splitlines()) == 1, err


def test_installed_command_exit_code(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dnarch", "train", "--net.width=zero"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["dnarch: error: net.width expects int, got 'zero'"]


@pytest.mark.slow
def test_threads_flag_sets_torch_threads_for_the_run(tmp_path, monkeypatch, capsys) -> None:
    import torch

    from tests.test_bad_input import TINY

    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    assert main(["train", *TINY, "--threads", "1", "--out", str(tmp_path / "run")]) == 0
    assert seen == [1]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["threads"] == 1
    assert main(["train", *TINY, "--threads", "-1", "--out", str(tmp_path / "bad")]) == 2
    assert "train.threads must be >= 0" in capsys.readouterr().err

"""Resume: a run stopped at any step (by a real SIGINT) and continued ends bit-identical to an
uninterrupted run; checkpoints are checksummed, tied to their config, and loaded without pickle code."""

import csv
import json
import os
import signal

import pytest
import torch

from dnarch import runner as run_module
from dnarch.cli import main
from dnarch.train.callbacks import CheckpointError, load_checkpoint
from dnarch.train.objective import Objective

pytestmark = pytest.mark.slow  # end-to-end runs of several seconds each

FLAGS = [
    "--epochs", "3", "--net.blocks=2", "--net.width=6", "--net.hidden=6", "--net.kernel_hidden=6",
    "--train.batch_size=32", "--data.limit_train=128", "--data.limit_test=64",
    "--train.deterministic=true", "--train.warmup_epochs=1", "--budget", "0.4", "--quiet",
]  # fmt: skip


def _with_footer(payload: bytes) -> bytes:
    """``payload`` with a valid checksum footer, as ``save_checkpoint`` writes it (a forgery)."""
    import hashlib

    return payload + b"\nDNARCH-CHECKPOINT-SHA256:" + hashlib.sha256(payload).hexdigest().encode()


def _stopped_run(folder, monkeypatch, capsys):
    """A run stopped by SIGINT at its fifth step; (checkpoint path, its bytes, its contents)."""
    _stop_after(monkeypatch, 5)
    assert main(["train", *FLAGS, "--out", str(folder)]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    ckpt = folder / "checkpoint.pt"
    return ckpt, ckpt.read_bytes(), load_checkpoint(ckpt)


def _stop_after(monkeypatch, steps: int) -> None:
    """Send this process a real SIGINT when the objective has run ``steps`` times."""
    calls = []

    class Stopping(Objective):
        def __call__(self, *a, **k):
            calls.append(1)
            if len(calls) == steps:
                os.kill(os.getpid(), signal.SIGINT)
            return super().__call__(*a, **k)

    monkeypatch.setattr(run_module, "Objective", Stopping)


def _outputs(folder):
    summary = json.loads((folder / "summary.json").read_text())
    summary.pop("train_seconds")
    summary.pop("train_cpu_seconds")  # CPU time, like wall time, differs between runs
    state = torch.load(folder / "model.pt", weights_only=True)
    with (folder / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row.pop("samples_per_s")  # wall clock: the one column a repeated run need not repeat
    return (
        summary,
        rows,
        (folder / "architecture.json").read_text(),
        state,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", *FLAGS, "--out", str(folder)]) == 0
    return _outputs(folder)


@pytest.mark.parametrize(
    "stop_at",
    [2, 4, 7, 10],
    ids=["mid-epoch-1", "epoch-boundary", "mid-epoch-2", "mid-frozen-epoch"],
)
def test_stopped_and_resumed_equals_uninterrupted(
    tmp_path, monkeypatch, capsys, reference, stop_at
):
    folder = tmp_path / "run"
    _stop_after(monkeypatch, stop_at)  # 4 steps per epoch
    assert main(["train", *FLAGS, "--out", str(folder)]) == 130
    err = capsys.readouterr().err
    assert "checkpoint saved" in err and f"--resume {folder}" in err and err.count("\n") == 1
    assert not (folder / "summary.json").exists()
    monkeypatch.undo()
    assert main(["train", "--resume", str(folder), "--quiet"]) == 0
    summary, csv, arch, state = _outputs(folder)
    want_summary, want_csv, want_arch, want_state = reference
    assert summary == want_summary and csv == want_csv and arch == want_arch
    assert state.keys() == want_state.keys()
    for k in state:
        assert torch.equal(state[k], want_state[k]), k


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_bad_checkpoints_are_refused_with_one_line(tmp_path, monkeypatch, capsys) -> None:
    folder = tmp_path / "run"
    ckpt, good, blob = _stopped_run(folder, monkeypatch, capsys)
    assert blob["trainer"]["epoch"] == 1 and blob["trainer"]["step"] == 1

    cases = {
        "corrupted": good[:100] + bytes([good[100] ^ 1]) + good[101:],
        "truncated": good[: len(good) // 2],
        "not a dnarch checkpoint": b"hello",
    }
    for what, data in cases.items():
        ckpt.write_bytes(data)
        assert main(["train", "--resume", str(folder), "--quiet"]) == 2, what
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("checkpoint" in err or "corrupted" in err), (what, err)
    ckpt.write_bytes(good)

    # a checkpoint of another config (same data, other budget) is refused
    config = json.loads((folder / "config.json").read_text())
    with pytest.raises(CheckpointError, match="different config"):
        load_checkpoint(ckpt, {**config, "budget": {**config["budget"], "budget": 0.3}})

    # a checkpoint whose payload holds code is refused by weights_only loading
    import io
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    buf = io.BytesIO()
    pickle.dump({"format": 1, "trainer": Evil()}, buf)
    ckpt.write_bytes(_with_footer(buf.getvalue()))
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_checkpoint(ckpt)


def test_checkpoint_contents_are_checked_after_the_checksum(tmp_path, monkeypatch, capsys) -> None:
    """A checkpoint with a valid footer whose contents cannot be this run's: one line, exit 2, and
    the checkpoint is left as it was."""
    import io

    folder = tmp_path / "run"
    ckpt, good, blob = _stopped_run(folder, monkeypatch, capsys)
    trainer = blob["trainer"]
    model = dict(trainer["model"])
    name = next(k for k, v in model.items() if v.ndim == 2)
    model[name] = torch.zeros(3, 3)

    def forged(**changes) -> bytes:
        buf = io.BytesIO()
        torch.save({**blob, "trainer": {**trainer, **changes} if changes else {}}, buf)
        return _with_footer(buf.getvalue())

    for what, data, message in [
        ("no trainer state", forged(), "KeyError"),
        ("a tensor of the wrong shape", forged(model=model), "size mismatch"),
        ("a step past the epoch", forged(step=10**6), "lies outside this run"),
        ("an epoch past the run", forged(epoch=99), "lies outside this run"),
        ("a history of another length", forged(epoch=2), "history holds"),
    ]:
        ckpt.write_bytes(data)
        assert main(["train", "--resume", str(folder), "--quiet"]) == 2, what
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "does not fit this run" in err and message in err, (
            what,
            err,
        )
    ckpt.write_bytes(good)
    assert main(["train", "--resume", str(folder), "--quiet"]) == 0  # the real one still resumes


def test_resume_rejects_what_it_cannot_continue(tmp_path, capsys) -> None:
    finished = tmp_path / "done"
    assert main(["train", *FLAGS[:-3], "--epochs", "1", "--quiet", "--out", str(finished)]) == 0
    capsys.readouterr()
    for argv, message in [
        (["train", "--resume", str(finished)], "finished run"),
        (["train", "--resume", str(tmp_path / "nowhere")], "not a folder"),
        (["train", "--resume", str(tmp_path)], "no config.json"),
        (["train", "--resume", str(finished), "--epochs", "5"], "drop --epochs"),
        (["train", "--resume", str(finished), "--net.width=8"], "drop --net.width=8"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)


def _nan_at(monkeypatch, steps: set[int]) -> None:
    """Make the objective's loss NaN at the given (1-based) step numbers."""
    calls = []

    class Faulty(Objective):
        def __call__(self, *a, **k):
            calls.append(1)
            out = super().__call__(*a, **k)
            if len(calls) in steps:
                out = {**out, "total": out["total"] * float("nan")}
            return out

    monkeypatch.setattr(run_module, "Objective", Faulty)


def test_one_nan_step_is_skipped_and_the_learning_rate_halved(
    tmp_path, monkeypatch, capsys
) -> None:
    _nan_at(monkeypatch, {6})
    folder = tmp_path / "run"
    assert main(["train", *FLAGS, "--out", str(folder)]) == 0
    err = capsys.readouterr().err
    assert "non-finite loss at epoch 2, step 2: step skipped, learning rates halved" in err
    state = torch.load(folder / "model.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    blob = load_checkpoint(folder / "checkpoint.pt")["trainer"]
    assert blob["faults"] == 1
    lrs = blob["scheduler"]["base_lrs"]
    assert lrs[0] == pytest.approx(3e-3 / 2)  # the default lr, halved once


def test_a_second_nan_ends_the_run_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch, capsys
) -> None:
    _nan_at(monkeypatch, {6, 10})  # epoch 2 step 2, epoch 3 step 2
    folder = tmp_path / "run"
    assert main(["train", *FLAGS, "--out", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "non-finite loss again at epoch 3, step 2" in err[-1]
    assert "checkpoint (epoch 2) is intact" in err[-1]
    blob = load_checkpoint(folder / "checkpoint.pt")["trainer"]
    assert blob["epoch"] == 2 and blob["step"] == 0
    assert not (folder / "summary.json").exists()


def test_a_nan_gradient_is_caught_too(tmp_path, monkeypatch) -> None:
    from dnarch.train import trainer as trainer_module

    calls = []
    real = trainer_module.Trainer._finite_gradients

    def flaky(self):
        calls.append(1)
        return False if len(calls) == 3 else real(self)

    monkeypatch.setattr(trainer_module.Trainer, "_finite_gradients", flaky)
    assert main(["train", *FLAGS, "--out", str(tmp_path / "run")]) == 0
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["trainer"]["faults"] == 1


def test_resume_finds_a_relative_data_file_and_notices_it_changed(tmp_path, monkeypatch, capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(96, 1, 16)).astype(np.float32), np.arange(96) % 3
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    np.savez(data_dir / "mine.npz", x_train=x, y_train=y, x_test=x[:32], y_test=y[:32])
    monkeypatch.chdir(data_dir)
    folder = tmp_path / "run"
    flags = [f for f in FLAGS if not f.startswith("--data.limit")]
    _stop_after(monkeypatch, 4)
    assert main(["train", *flags, "--data", "mine.npz", "--out", str(folder)]) == 130
    capsys.readouterr()
    saved = json.loads((folder / "config.json").read_text())
    assert saved["data"]["name"] == str(data_dir / "mine.npz")  # stored absolute
    assert len(saved["resolved"]["data_sha256"]) == 64
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)  # another working folder
    good = (data_dir / "mine.npz").read_bytes()
    x[0, 0, 0] += 1.0  # the same shapes, one value changed in place
    np.savez(data_dir / "mine.npz", x_train=x, y_train=y, x_test=x[:32], y_test=y[:32])
    assert main(["train", "--resume", str(folder), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the data differ" in err, err
    (data_dir / "mine.npz").write_bytes(good)
    assert main(["train", "--resume", str(folder), "--quiet"]) == 0


def test_a_run_resumed_under_another_maximal_network_keeps_its_budget(
    tmp_path, monkeypatch, capsys
) -> None:
    """A run begun by a dnarch that measured the maximal network otherwise (here 1.5x larger)
    resumes at the absolute budget it began with, and its config.json keeps its own maximum."""
    folder = tmp_path / "run"
    _stopped_run(folder, monkeypatch, capsys)
    saved = json.loads((folder / "config.json").read_text())["resolved"]
    original = run_module.DNArchNet.max_sizes

    def larger(self):
        sizes = original(self)
        return type(sizes)(**{**vars(sizes), "width": sizes.width * 1.5})

    monkeypatch.setattr(run_module.DNArchNet, "max_sizes", larger)
    assert main(["train", "--resume", str(folder), "--quiet"]) == 0
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["budget"] == pytest.approx(saved["budget_absolute"])
    after = json.loads((folder / "config.json").read_text())["resolved"]
    assert after["max_cost"] == saved["max_cost"]


def test_a_resumed_run_keeps_a_budget_that_is_not_a_whole_number(tmp_path, monkeypatch, capsys):
    """A fraction of the maximal cost is rarely a whole number of MACs: the run resumes at that
    absolute budget exactly (it was once refused as an ambiguous absolute budget)."""
    folder = tmp_path / "run"
    flags = [*FLAGS[: FLAGS.index("--budget")], "--budget", "0.377", "--quiet"]
    _stop_after(monkeypatch, 5)
    assert main(["train", *flags, "--out", str(folder)]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    target = json.loads((folder / "config.json").read_text())["resolved"]["budget_absolute"]
    assert not float(target).is_integer()
    assert main(["train", "--resume", str(folder), "--quiet"]) == 0, capsys.readouterr().err
    assert json.loads((folder / "summary.json").read_text())["budget"] == target

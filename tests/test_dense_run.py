"""Dense tasks end to end: the CLI and the API train, export, score and report per-position models."""

import csv
import json

import numpy as np
import pytest
import torch

import dnarch
from dnarch.cli import main
from dnarch.export import export_run, load_static

QUICK = ["--epochs", "3", "--train.warmup_epochs=0", "--net.backend=direct", "--net.blocks=3", "--net.width=8",
         "--net.hidden=8", "--quiet", "--budget", "0.5"]  # fmt: skip


def _stripes(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs whose sign at each position is its label (class 1 where x > 0): learnable per position."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, *shape)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(24,), (10, 12)])
def test_cli_segment_run_scores_exports_and_reports(tmp_path, capsys, shape) -> None:
    xtr, ytr = _stripes(768, shape, 0)
    xte, yte = _stripes(32, shape, 1)
    np.savez(tmp_path / "seg.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    out = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path / "seg.npz"), "--task", "segment", "--out", str(out)]
    # White noise carries its labels up to the Nyquist frequency, so every downsampling costs
    # accuracy; in 3 epochs the cut-offs' default rate (set for a full run's reach) lets the cost
    # pull the 1D resolution down (68.8% here), so the cut-offs move at 0.1 x arch_lr (86.7%; both
    # measured with the seq preset, before 1D dense data got seq-dense)
    slow = ["--train.resolution_lr_scale=0.1"]
    assert main([*argv, *QUICK, *slow]) == 0
    printed = capsys.readouterr().out
    assert "test mean IoU" in printed and "per-position accuracy" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "segment" and summary["score"] == "miou"
    net = json.loads((out / "config.json").read_text())["net"]  # the auto preset
    preset = (4.0, 0.5, 3) if len(shape) == 2 else (1.0, 1.0, 3)  # image-pyramid, seq-dense
    assert (net["widen"], net["init_resolution"], net["direct_kernel"]) == preset
    assert summary["test_score"] == pytest.approx(summary["static_test_score"], abs=1e-3)
    assert summary["test_accuracy"] > 0.7  # the sign of the input is easy to read off per position
    assert summary["macs_counted"] == summary["macs_estimate"]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {"train_acc", "test_acc", "test_miou"} <= set(rows[0])
    static = load_static(out)
    assert static.spec.dense and static(torch.from_numpy(xte[:3])).shape == (3, 2, *shape)
    page = (out / "report" / "index.html").read_text()
    assert page.count("mean IoU") >= 1 and "Example predictions" in page
    with np.load(out / "examples.npz") as ex:  # the examples are the exported network's output
        assert ex["x"].shape == (4, 1, *shape) and ex["y"].shape == ex["pred"].shape == (4, *shape)
        expected = static(torch.from_numpy(ex["x"])).argmax(1).numpy()
        assert (ex["pred"] == expected).all() and (ex["y"] == yte[:4]).all()
    assert (out / "report" / "examples.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["finetune", str(out), "--epochs", "1", "--quiet"]) == 0
    assert "test mean IoU" in capsys.readouterr().out
    tuned = json.loads((out / "finetuned" / "finetune.json").read_text())
    assert tuned["score"] == "miou" and "test_miou" in tuned["history"][-1]
    pt2 = export_run(out, "pt2")
    loaded = torch.export.load(str(pt2)).module()
    x = torch.from_numpy(xte[:5])
    assert torch.allclose(loaded(x), static(x), atol=1e-5)
    onnx_path = export_run(out, "onnx")  # checked in onnxruntime against PyTorch before it is kept
    assert onnx_path.stat().st_size > 0


def test_cli_rejects_a_task_the_labels_do_not_fit(tmp_path, capsys) -> None:
    xtr, ytr = _stripes(16, (12,), 0)
    np.savez(tmp_path / "d.npz", x_train=xtr, y_train=ytr[:, 0], x_test=xtr, y_test=ytr[:, 0])
    argv = ["train", "--data", str(tmp_path / "d.npz"), "--task", "segment", *QUICK]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "one label per position" in err
    assert main(["train", "--data", "mnist1d", "--task", "segment", *QUICK]) == 2
    assert "is a classify task" in capsys.readouterr().err
    assert main(["train", "--task", "detect", *QUICK]) == 2


def test_api_regression_denoises_and_reports_psnr(tmp_path) -> None:
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 32, dtype=np.float32)
    clean = np.sin(2 * np.pi * rng.integers(1, 4, (1056, 1)) * t).astype(np.float32)  # (N, 32)
    noisy = clean + 0.3 * rng.normal(size=clean.shape).astype(np.float32)
    result = dnarch.fit(
        noisy[:1024], clean[:1024], noisy[1024:], clean[1024:], task="regress", budget=0.5,
        epochs=4, out=tmp_path / "run", progress=False, net__width=8, net__hidden=8,
        net__blocks=3, net__backend="direct", train__warmup_epochs=0,
        train__resolution_lr_scale=0.1,  # 64 steps: the default rate over-cut (10.7 dB, not 20.5, with seq)
    )  # fmt: skip
    s = result.summary
    assert s["task"] == "regress" and s["score"] == "psnr"
    noise_psnr = 10 * np.log10(
        np.ptp(clean[1024:]) ** 2 / np.mean((noisy[1024:] - clean[1024:]) ** 2)
    )
    assert result.test_score > noise_psnr  # it removes some of the noise
    assert s["static_test_score"] == pytest.approx(s["test_score"], abs=1e-2)
    assert result.static(torch.from_numpy(noisy[1024:1026, None])).shape == (2, 1, 32)
    with pytest.raises(AttributeError, match="no accuracy"):
        _ = result.test_accuracy
    assert "Example predictions" in (tmp_path / "run" / "report" / "index.html").read_text()
    with np.load(tmp_path / "run" / "examples.npz") as ex:
        assert ex["pred"].shape == ex["y"].shape == (4, 1, 32)


def test_api_takes_the_task_from_an_override_and_saves_it(tmp_path) -> None:
    xtr, ytr = _stripes(64, (12,), 0)
    result = dnarch.fit(
        xtr, ytr, xtr, ytr, data__task="segment", budget=None, epochs=1, out=tmp_path / "r",
        progress=False, net__width=4, net__hidden=4, net__blocks=2, net__backend="direct",
    )  # fmt: skip
    assert result.summary["task"] == "segment"
    assert json.loads((tmp_path / "r" / "config.json").read_text())["data"]["task"] == "segment"


def test_guards_for_dense_inputs() -> None:
    from dnarch.baselines.prune import prune_then_finetune
    from dnarch.config import ConfigError, NetConfig
    from dnarch.data import DataError, from_arrays
    from dnarch.export import ArchSpec, harden
    from tests.conftest import shrunk_model

    x = np.zeros((4, 1, 12), np.float32)
    with pytest.raises(DataError, match="use --task regress"):
        from_arrays(x, np.full((4, 12), 5000), x, np.full((4, 12), 5000), task="segment")
    with pytest.raises(ConfigError, match="resolution_from"):
        NetConfig(blocks=3, resolution_from=4)
    text = harden(shrunk_model((12,), 0, task="segment")).to_json().replace('"segment"', '"segmnt"')
    with pytest.raises(ValueError, match="unknown task"):
        ArchSpec.from_json(text)
    labels = np.tile(np.arange(12) % 2, (4, 1))  # (4, 12): two classes
    data = from_arrays(x, labels, x, labels, task="segment")
    with pytest.raises(ValueError, match="classification only"):
        prune_then_finetune(torch.nn.Identity(), data, 1.0, 1)


def test_an_older_run_folder_keeps_its_architecture(tmp_path) -> None:
    from dnarch.config import upgrade_saved

    old = {"net": {"width": 8}, "resolved": {"dataset": "mnist1d"}}
    new = upgrade_saved(old)
    assert new["net"]["resolution_from"] == 0 and new["resolved"]["task"] == "classify"
    assert "resolution_from" not in old["net"]  # the saved dict is not changed in place
    assert upgrade_saved(new) == new


def test_api_picks_the_pyramid_preset_for_2d_segmentation(tmp_path) -> None:
    xtr, ytr = _stripes(32, (8, 8), 0)
    dnarch.fit(
        xtr, ytr, xtr, ytr, task="segment", budget=None, epochs=1, out=tmp_path / "r",
        progress=False, net__width=4, net__hidden=4, net__backend="direct",
    )  # fmt: skip
    net = json.loads((tmp_path / "r" / "config.json").read_text())["net"]
    assert (net["widen"], net["init_resolution"], net["learn_resolution"]) == (4.0, 0.5, False)

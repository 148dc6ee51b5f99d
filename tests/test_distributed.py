"""Data-parallel training: 2 gloo processes on CPU equal one process with the same global batch.

The maths first (BatchNorm over two ranks' halves equals BatchNorm over the whole batch, values and
gradients), then the whole CLI: ``torchrun --nproc-per-node 2 -m dnarch train`` against
``python -m dnarch train`` on the same data, seed and global batch.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import dnarch
from dnarch.data import load_data
from dnarch.export import load_static
from dnarch.nn.sync_norm import sync_batch_norm
from dnarch.train.distributed import World
from dnarch.train.loader import batch_loader

pytestmark = pytest.mark.slow  # end-to-end runs of several seconds each

ROOT = Path(__file__).resolve().parents[1]


def _bn_inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, 6, 4, generator=g) * 3 + 1  # (B, C, H, W), an odd batch
    w, b = torch.rand(5, generator=g) + 0.5, torch.randn(5, generator=g)
    up = torch.randn(7, 5, 6, 4, generator=g)  # the upstream gradient
    return x, w, b, up


def _bn_rank(rank: int, size: int, store_path: str, out_path: str) -> None:
    store = dist.FileStore(store_path, size)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=size)
    x, w, b, up = _bn_inputs()
    lo, hi = rank * len(x) // size, (rank + 1) * len(x) // size
    xr = x[lo:hi].clone().requires_grad_(True)
    wr, br = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    rm, rv = torch.zeros(5), torch.ones(5)
    y = sync_batch_norm(xr, rm, rv, wr, br, 0.1, 1e-5)
    (y * up[lo:hi]).sum().backward()
    assert wr.grad is not None and br.grad is not None and xr.grad is not None
    grads = torch.stack([wr.grad, br.grad])
    dist.all_reduce(grads)  # the parameter gradients DDP would sum
    torch.save(
        {"y": y.detach(), "dx": xr.grad, "dwb": grads, "rm": rm, "rv": rv}, out_path.format(rank)
    )
    dist.destroy_process_group()


@pytest.mark.parametrize("size", [1, 2, 3])
def test_sync_batch_norm_over_ranks_equals_batch_norm_on_the_whole_batch(
    tmp_path: Path, size: int
) -> None:
    outs = [str(tmp_path / f"rank{r}.pt") for r in range(size)]
    mp.spawn(
        _bn_rank, args=(size, str(tmp_path / "store"), str(tmp_path / "rank{}.pt")), nprocs=size
    )
    x, w, b, up = _bn_inputs()
    xs, ws, bs = (t.clone().requires_grad_(True) for t in (x, w, b))
    rm, rv = torch.zeros(5), torch.ones(5)
    ref = F.batch_norm(xs, rm, rv, ws, bs, True, 0.1, 1e-5)
    (ref * up).sum().backward()
    got = [torch.load(p) for p in outs]
    torch.testing.assert_close(torch.cat([g["y"] for g in got]), ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([g["dx"] for g in got]), xs.grad, rtol=1e-5, atol=1e-5)
    for g in got:  # every rank: the whole batch's parameter gradients and running statistics
        torch.testing.assert_close(g["dwb"], torch.stack([ws.grad, bs.grad]), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(g["rm"], rm, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(g["rv"], rv, rtol=1e-6, atol=1e-6)


def test_batches_split_every_global_batch_and_keep_the_single_process_order() -> None:
    n, batch = 50, 8
    data = TensorDataset(torch.arange(n))
    plain = DataLoader(data, batch_size=batch, shuffle=True, drop_last=True,
                       generator=torch.Generator().manual_seed(3))  # fmt: skip
    expected = [[b[0].tolist() for b in plain] for _ in range(2)]  # two epochs

    def order(rank: int, size: int) -> list[list[list[int]]]:
        g = torch.Generator().manual_seed(3)
        loader = batch_loader(data, batch, g, World(rank=rank, size=size))
        return [[b[0].tolist() for b in loader] for _ in range(2)]

    assert order(0, 1) == expected
    for size in (2, 3):
        shards = [order(r, size) for r in range(size)]
        for epoch, batches in enumerate(expected):
            for step, whole in enumerate(batches):
                parts = [shards[r][epoch][step] for r in range(size)]
                assert sum(parts, []) == whole  # contiguous slices, in rank order
                assert max(map(len, parts)) - min(map(len, parts)) <= 1
            assert all(len(shards[r][epoch]) == len(batches) for r in range(size))


# the same run, once in one process and once in two: MNIST-1D, few steps, no dropout (its random
# masks cannot match), a global batch of 33 that two ranks split 16 + 17, and 3 epochs, so that the
# architecture freezes (and DDP is rebuilt) in the last one. The cut-offs move at 0.1 x arch_lr: at the
# default rate (capped at arch_lr in a run this short) training amplifies the ranks' rounding 6x more
# (2.9e-5 of the largest kernel tap, against 4.5e-6), past the tolerances that catch a real mismatch
RUN = [
    "train", "--data", "mnist1d", "--budget", "0.5", "--epochs", "3", "--seed", "1", "--quiet",
    "--data.limit_train=528", "--data.limit_test=200", "--train.batch_size=33",
    "--net.dropout=0", "--net.width=16", "--net.hidden=32", "--net.blocks=2",
    "--train.deterministic=true", "--train.tensorboard=false", "--train.resolution_lr_scale=0.1",
]  # fmt: skip


def _command(nproc: int, args: list[str]) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "dnarch", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", "-m", "dnarch", *args]  # fmt: skip


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _launch(out: Path, nproc: int) -> subprocess.CompletedProcess[str]:
    cmd = _command(nproc, [*RUN, "--out", str(out)])
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600, check=False)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The same run in one process and in two: (one folder, two folder, two's stdout)."""
    tmp = tmp_path_factory.mktemp("ddp")
    one, two = tmp / "one", tmp / "two"
    r1 = _launch(one, 1)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = _launch(two, 2)
    assert r2.returncode == 0, r2.stderr[-2000:]
    return one, two, r2.stdout


def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(
    runs: tuple[Path, Path, str],
) -> None:
    one, two, stdout = runs
    # rank 0 alone printed the table and wrote the folder (one checkpoint, one summary)
    assert stdout.count("learned architecture") == 1
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())

    assert json.loads((two / "architecture.json").read_text()) == json.loads(
        (one / "architecture.json").read_text()
    )
    rows1, rows2 = _rows(one / "metrics.csv"), _rows(two / "metrics.csv")
    assert len(rows1) == len(rows2) == 3 and rows1[0].keys() == rows2[0].keys()
    assert float(rows1[-1]["train_loss"]) < float(rows1[0]["train_loss"]) - 0.1  # it learns
    for a, b in zip(rows1, rows2, strict=True):
        for key in ("train_loss", "train_penalty", "cost"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4, abs=1e-5), key
        # accuracies count argmaxes: rounding may flip a near tie, so allow one sample in either
        assert float(b["train_acc"]) == pytest.approx(float(a["train_acc"]), abs=1.5 / 528)
        assert float(b["test_acc"]) == pytest.approx(float(a["test_acc"]), abs=1.5 / 200)
        for key in (
            "macs",
            "residual_width",
            "blocks_kept",
            "b0_kernel",
            "b1_hidden",
            "arch_frozen",
        ):
            assert a[key] == b[key], key
    s1 = json.loads((one / "summary.json").read_text())
    s2 = json.loads((two / "summary.json").read_text())
    assert s2["macs"] == s1["macs"] and s2["params"] == s1["params"]
    assert s2["test_accuracy"] == pytest.approx(s1["test_accuracy"], abs=1.5 / 200)
    # the exported networks compute the same function. Rounding differs (sums over ranks), and
    # training amplifies it a little (one process with 2 threads instead of 1 differs from itself
    # by about as much), hence 1e-3 on the outputs and 1e-4 on the weights
    net1, net2 = load_static(one), load_static(two)
    x = load_data("mnist1d").x_test[:200]
    with torch.no_grad():
        torch.testing.assert_close(net2(x), net1(x), rtol=1e-3, atol=1e-3)
    w1 = torch.load(one / "model.pt", weights_only=True)
    w2 = torch.load(two / "model.pt", weights_only=True)
    assert w1.keys() == w2.keys()
    for k in w1:
        if k.endswith(".weight") or k.endswith("running_var"):
            torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=k)


def test_bf16_autocast_runs_the_forward_in_bfloat16_and_follows_float32(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dnarch import runner as run_module
    from dnarch.train.objective import Objective

    dtypes: list[torch.dtype] = []

    class Recording(Objective):
        def __call__(self, model, logits, y, progress, cost=None):  # type: ignore[no-untyped-def]
            dtypes.append(logits.dtype)
            return super().__call__(model, logits, y, progress, cost=cost)

    monkeypatch.setattr(run_module, "Objective", Recording)
    data = load_data("digits").limited(256, 128)
    losses = {}
    for precision in ("fp32", "bf16"):
        dtypes.clear()
        result = dnarch.fit(
            data.x_train, data.y_train, data.x_test, data.y_test, budget=0.5, epochs=4,
            progress=False, train__precision=precision, train__batch_size=32, net__width=8,
            net__hidden=16, net__blocks=2,
        )  # fmt: skip
        assert set(dtypes) == {torch.bfloat16 if precision == "bf16" else torch.float32}
        losses[precision] = [r["train_loss"] for r in result.history]
    assert all(map(math.isfinite, losses["bf16"]))
    # the same run to bfloat16's precision: every epoch's training loss within 0.03 of float32's
    assert losses["bf16"] == pytest.approx(losses["fp32"], abs=0.03)


def test_a_stopped_two_process_run_resumes_to_the_same_result(
    runs: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """SIGTERM to torchrun mid-run: every rank stops at the same step, rank 0 saves the checkpoint,
    and ``dnarch train --resume`` under torchrun finishes the run as if it had never stopped."""
    _, two, _ = runs
    cut = tmp_path / "cut"
    proc = subprocess.Popen(_command(2, [*RUN, "--out", str(cut)]), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not ((cut / "metrics.csv").exists() and len(_rows(cut / "metrics.csv")) >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended too early"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    _, err = proc.communicate(timeout=300)
    assert err.count("checkpoint saved") == 1, err[-2000:]  # one rank says so
    assert not (cut / "summary.json").exists()
    resumed = subprocess.run(_command(2, ["train", "--resume", str(cut), "--quiet"]), env=ENV,
                             capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _rows(cut / "metrics.csv") == [
        {k: v for k, v in r.items() if k != "samples_per_s"} | {"samples_per_s": c["samples_per_s"]}
        for r, c in zip(_rows(two / "metrics.csv"), _rows(cut / "metrics.csv"), strict=True)
    ]
    assert (cut / "architecture.json").read_text() == (two / "architecture.json").read_text()
    w1 = torch.load(two / "model.pt", weights_only=True)
    w2 = torch.load(cut / "model.pt", weights_only=True)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)  # deterministic: bit for bit

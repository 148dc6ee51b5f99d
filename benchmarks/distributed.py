"""Issue 8's benchmark: training samples per second for 1 and 2 data-parallel processes, and what the
data loader costs.

Part 1, the loader alone: batches of ``--batch-size`` from in-memory tensors, drawn three ways:
``DataLoader(shuffle=True)`` with its default per-sample fetch and collate (what dnarch used before),
dnarch's ``batch_loader`` (one tensor gather per batch), and ``batch_loader`` with 2 worker processes.

Part 2, training: the same ``dnarch train`` run (same data, seed, global batch) launched as
- one process with 1 thread, one process with as many threads as ranks below (the same cores), and
- ``torchrun --standalone --nproc-per-node N`` (gloo on CPU), 1 thread per rank,
reading each epoch's ``samples_per_s`` (training steps only, every rank's samples) from metrics.csv;
the table gives the median over epochs after the first. Pinned memory only matters for copies to a
GPU, so it is not measured on a CPU machine.

    python benchmarks/distributed.py                        # a few minutes
    python benchmarks/distributed.py --data fashion-mnist --limit-train 2000 --epochs 3
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from dnarch.data import load_data
from dnarch.provenance import git_commit
from dnarch.train.distributed import World
from dnarch.train.loader import batch_loader

ROOT = Path(__file__).resolve().parents[1]


def loader_rates(data: TensorDataset, batch: int, seconds: float) -> dict[str, float]:
    """Samples per second each way of drawing batches sustains (over at least ``seconds``)."""

    def rate(make: Any) -> float:
        loader, n, start = make(), 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for xb, _ in loader:
                n += len(xb)
        return n / (time.perf_counter() - start)

    g = torch.Generator().manual_seed(0)
    one = World()
    return {
        "DataLoader(shuffle=True), per-sample fetch + collate": rate(
            lambda: DataLoader(data, batch_size=batch, shuffle=True, drop_last=True, generator=g)
        ),
        "batch_loader: one gather per batch": rate(lambda: batch_loader(data, batch, g, one)),
        "batch_loader, 2 worker processes": rate(lambda: batch_loader(data, batch, g, one, 2)),
    }


def train_rate(args: argparse.Namespace, nproc: int, threads: int, folder: Path) -> dict[str, Any]:
    """One ``dnarch train`` run; its median samples/s over epochs 2.. and its wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    flags = [
        "train", "--data", args.data, "--epochs", str(args.epochs), "--budget", str(args.budget),
        "--seed", "0", "--quiet", "--out", str(folder), f"--train.batch_size={args.batch_size}",
        f"--data.limit_train={args.limit_train}", f"--data.limit_test={args.limit_test}",
        "--train.tensorboard=false",
    ]  # fmt: skip
    if nproc == 1:
        cmd = [sys.executable, "-m", "dnarch", *flags]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "dnarch", *flags]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
    with (folder / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    rates = [float(r["samples_per_s"]) for r in rows]
    summary = json.loads((folder / "summary.json").read_text())
    return {
        "processes": nproc,
        "threads_per_process": threads,
        "samples_per_s": statistics.median(rates[1:] or rates),
        "wall_s": wall,
        "test_score": summary["test_score"],
        "macs": summary["macs"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="mnist1d")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--budget", default="0.25")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--limit-train", type=int, default=0)
    p.add_argument("--limit-test", type=int, default=0)
    p.add_argument("--ranks", type=int, nargs="+", default=[2])
    p.add_argument("--loader-seconds", type=float, default=3.0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--name", default="distributed")
    args = p.parse_args()
    command = "python benchmarks/distributed.py " + " ".join(sys.argv[1:])

    data = load_data(args.data).limited(args.limit_train, args.limit_test)
    torch.set_num_threads(1)
    loaders = loader_rates(
        TensorDataset(data.x_train, data.y_train), args.batch_size, args.loader_seconds
    )
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = [(1, 1)] + [s for n in args.ranks for s in ((1, n), (n, 1))]
        for i, (nproc, threads) in enumerate(settings):
            print(f"training: {nproc} process(es) x {threads} thread(s)", flush=True)
            runs.append(train_rate(args, nproc, threads, Path(tmp) / f"run{i}"))

    base = runs[0]["samples_per_s"]
    lines = [
        f"Made by: `{command}` at commit {git_commit()}",
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; data "
        f"{data.name}, {len(data.x_train):,} training samples of shape "
        f"{tuple(data.x_train.shape[1:])}, global batch {args.batch_size}, budget {args.budget}, "
        f"{args.epochs} epochs.",
        "",
        "**Training** (samples/s: median over epochs after the first, training steps only, all "
        "ranks together; wall s: the whole command, start-up, evaluation and export included):",
        "",
        "| processes | threads each | samples/s | vs 1 x 1 | wall s | test score | MACs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['processes']} | {r['threads_per_process']} | {r['samples_per_s']:,.0f} | "
            f"{r['samples_per_s'] / base:.2f}x | {r['wall_s']:.0f} | {r['test_score']:.4f} | "
            f"{r['macs']:,} |"
        )
    lines += [
        "",
        f"**Data loading alone** (batches of {args.batch_size}, samples/s, 1 thread):",
        "",
        "| loader | samples/s |",
        "|---|---|",
        *(f"| {k} | {v:,.0f} |" for k, v in loaders.items()),
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    record = {"command": command, "runs": runs, "loaders": loaders}
    (out / f"{args.name}.json").write_text(json.dumps(record, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Issue 5's check: kill a real training run with SIGKILL at random moments, resume it each time, and
compare the end result with an uninterrupted run of the same seed (bit for bit on CPU).

    python benchmarks/kill_resume.py                 # 5 kills, a small MNIST-1D run (a few minutes)
    python benchmarks/kill_resume.py --kills 10 --seed 3

Every run is a separate ``dnarch train`` process. A kill before the first checkpoint exists restarts
the run from scratch (there is nothing to resume); later ones use ``dnarch train --resume``. Writes
benchmarks/results/kill_resume.md with every kill's moment and the comparison.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dnarch.provenance import git_commit

RUN = [
    "--data", "mnist1d", "--data.limit_train=1024", "--data.limit_test=256", "--epochs", "6",
    "--net.blocks=3", "--net.width=16", "--net.hidden=32", "--train.deterministic=true",
    "--budget", "0.4", "--quiet",
]  # fmt: skip


def dnarch(*args: str, kill_after: float | None = None) -> tuple[int, float]:
    """Run ``python -m dnarch ...``; SIGKILL it after ``kill_after`` seconds. (exit code, seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dnarch", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        _, err = proc.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.kill()  # SIGKILL: no handler runs, no file is closed cleanly
        proc.communicate()
        return -9, time.perf_counter() - start
    if proc.returncode not in (0, 130):
        raise SystemExit(f"dnarch {' '.join(args)} failed ({proc.returncode}): {err.strip()}")
    return proc.returncode, time.perf_counter() - start


# columns of metrics.csv that measure the machine, not the run: they differ between any two runs
CLOCK_COLUMNS = ("samples_per_s",)


def metrics_rows(path: Path) -> list[dict[str, str]]:
    """metrics.csv's rows without the wall-clock columns."""
    with path.open(newline="") as f:
        return [
            {k: v for k, v in row.items() if k not in CLOCK_COLUMNS} for row in csv.DictReader(f)
        ]


def outputs(folder: Path) -> tuple[dict, list[dict[str, str]], str, dict[str, torch.Tensor]]:
    summary = json.loads((folder / "summary.json").read_text())
    summary.pop("train_seconds")
    summary.pop("train_cpu_seconds")  # CPU time, like wall time, differs between runs
    return (
        summary,
        metrics_rows(folder / "metrics.csv"),
        (folder / "architecture.json").read_text(),
        torch.load(folder / "model.pt", weights_only=True),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ref, run = Path(tmp) / "reference", Path(tmp) / "killed"
        _, full = dnarch("train", *RUN, "--out", str(ref))
        print(f"uninterrupted run: {full:.0f} s", flush=True)
        log = []
        # summary.json is written last of the results (after model.pt): once it is there the run is
        # finished, even if a kill then stopped the report; ``dnarch report`` rewrites that
        while not (run / "summary.json").exists():
            resumable = (run / "checkpoint.pt").exists()
            argv = ["train", "--resume", str(run), "--quiet"] if resumable else \
                ["train", *RUN, "--out", str(run)]  # fmt: skip
            # a kill anywhere in the first half of a run's length: at start-up, mid-epoch, mid-write
            # (an attempt may not reach a checkpoint; only the first --kills attempts are killed)
            kill = rng.uniform(0.1, 0.5) * full if len(log) < args.kills else None
            code, secs = dnarch(*argv, kill_after=kill)
            what = "resume" if resumable else "start"
            log.append((what, kill, code))
            print(f"{what}: " + (f"killed after {secs:.1f} s" if code == -9 else "finished"),
                  flush=True)  # fmt: skip
        if not (run / "report" / "index.html").exists():
            dnarch("report", str(run))
            log.append(("report", None, 0))
        got, want = outputs(run), outputs(ref)
        same = {
            "summary.json (test accuracy, MACs, ...)": got[0] == want[0],
            "metrics.csv (every epoch; not samples_per_s, a clock)": got[1] == want[1],
            "architecture.json": got[2] == want[2],
            "model.pt (every tensor, bit for bit)": got[3].keys() == want[3].keys()
            and all(torch.equal(got[3][k], want[3][k]) for k in got[3]),
        }
    lines = [
        f"Made by: `{' '.join(['python', 'benchmarks/kill_resume.py', *sys.argv[1:]])}` "
        f"at commit {git_commit()}",
        "",
        f"Run: `dnarch train {' '.join(RUN)}` (uninterrupted: {full:.0f} s).",
        "",
        "| # | process | killed after (s) |",
        "|---|---|---|",
        *[
            f"| {i + 1} | {w} | {k:.1f} |" if c == -9 else f"| {i + 1} | {w} | finished |"
            for i, (w, k, c) in enumerate(log)
        ],  # fmt: skip
        "",
        "| output | equal to the uninterrupted run |",
        "|---|---|",
        *[f"| {k} | {'yes' if v else 'NO'} |" for k, v in same.items()],
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kill_resume.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not all(same.values()):
        raise SystemExit("the resumed run differs from the uninterrupted one")


if __name__ == "__main__":
    main()

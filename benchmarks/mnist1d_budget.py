"""Issue 2's acceptance benchmark: DNArch on MNIST-1D at the default budget and at 25% (with both budget
penalties), next to the same maximal network trained with its architecture frozen, in one run.

    python benchmarks/mnist1d_budget.py --seeds 0 1 2   # full: 4 methods x 3 seeds x 40 epochs, ~50 min
    python benchmarks/mnist1d_budget.py --epochs 3 --seeds 0   # quick smoke run

Writes benchmarks/results/mnist1d_budget.md (a Markdown table with the command that made it) and a JSON
file with every run's summary. MACs and parameters are those of the exported network, checked against
``torch.utils.flop_counter`` on it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import dnarch
from dnarch.config import BudgetConfig, NetConfig, RunConfig, TrainConfig
from dnarch.models import PRESETS

FROZEN = {
    "learn_kernel": False,
    "learn_width": False,
    "learn_resolution": False,
    "learn_depth": False,
}


def counted_macs(result: dnarch.RunResult) -> int:
    spec = result.spec
    with FlopCounterMode(display=False) as counter:
        result.static(torch.randn(1, spec.in_channels, *spec.input_shape))
    return counter.get_total_flops() // 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument(
        "--methods", nargs="+", default=["default", "b25", "upper", "frozen"],
        help="which rows: default, b25, upper, frozen",
    )  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = dnarch.load_data("mnist1d")
    base = PRESETS["seq"]
    every = {
        "default": ("DNArch, default budget (50% MACs)", RunConfig(net=base)),
        "b25": ("DNArch, --budget 0.25", RunConfig(net=base, budget=BudgetConfig(budget=0.25))),
        "upper": (
            "DNArch, --budget 0.25, budget.mode=upper (METHOD.md's one-sided penalty)",
            RunConfig(net=base, budget=BudgetConfig(budget=0.25, mode="upper")),
        ),
        "frozen": (
            "maximal network, architecture frozen",
            RunConfig(
                net=NetConfig(**{**base.__dict__, **FROZEN}), budget=BudgetConfig(budget=None)
            ),
        ),
    }
    unknown = set(args.methods) - set(every)
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}; choose from {sorted(every)}")
    methods = dict(every[m] for m in args.methods)
    rows, raw = [], []
    for name, cfg in methods.items():
        accs, macs, params, secs, ratio, counted = [], [], [], [], [], []
        for seed in args.seeds:
            run_cfg = RunConfig(
                net=cfg.net, budget=cfg.budget, data=cfg.data,
                train=TrainConfig(**{**TrainConfig().__dict__, "epochs": args.epochs, "seed": seed}),
            )  # fmt: skip
            start = time.perf_counter()
            result = dnarch.run(run_cfg, data=data, progress=False)
            wall = time.perf_counter() - start
            s = result.summary
            accs.append(100 * s["test_accuracy"])
            macs.append(s["macs"])
            params.append(s["params"])
            ratio.append(100 * s["macs"] / s["max_macs"])
            counted.append(counted_macs(result))
            secs.append(wall)
            raw.append({"method": name, "seed": seed, "wall_seconds": wall, **s})
            print(f"{name} seed {seed}: {accs[-1]:.2f}% {macs[-1]:,} MACs ({ratio[-1]:.1f}%) "
                  f"{wall:.0f}s", flush=True)  # fmt: skip
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        rows.append(
            f"| {name} | {statistics.mean(accs):.2f} ± {sd:.2f} | {statistics.mean(macs):,.0f} "
            f"({statistics.mean(ratio):.1f}%) | {statistics.mean(counted):,.0f} | "
            f"{statistics.mean(params):,.0f} | {statistics.mean(secs):.0f} |"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/mnist1d_budget.py " + " ".join(sys.argv[1:])
    table = "\n".join(
        [
            f"MNIST-1D (4,000 train / 1,000 test), {args.epochs} epochs, seeds {args.seeds}, "
            f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}.",
            f"Made by: `{command.strip()}`",
            "",
            "| method | test accuracy (%) | MACs/sample, estimate (% of maximal) | MACs, FlopCounter on "
            "exported net | parameters | wall time (s) |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    (out / "mnist1d_budget.md").write_text(table + "\n")
    (out / "mnist1d_budget.json").write_text(json.dumps(raw, indent=2))
    print(table)


if __name__ == "__main__":
    main()

"""Issue 3's benchmark: inference throughput of the exported network against (a) the masked network it
came from and (b) the same architecture written by hand with plain PyTorch layers, in one run.

    python benchmarks/export_throughput.py                    # learned architectures of a short run
    python benchmarks/export_throughput.py --run runs/<dir>   # ...or of a finished dnarch run

Without --run it trains DNArch briefly (MNIST-1D, 25% budget; and 8x8 digits in 2D) to get real learned
architectures. Writes benchmarks/results/export_throughput.md with the command that made it.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import dnarch
from dnarch.config import BudgetConfig, DataConfig, RunConfig, TrainConfig
from dnarch.export import ArchSpec, StaticNet
from dnarch.export.summary import count
from dnarch.functional.fourier import resample_matrix
from dnarch.provenance import git_commit


class HandWritten(nn.Module):
    """The architecture of ``spec`` written out by hand: plain layers in a list, no dnarch code."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        conv = nn.Conv1d if spec.ndim == 1 else nn.Conv2d
        norm = nn.BatchNorm1d if spec.ndim == 1 else nn.BatchNorm2d
        c = spec.residual_width
        if spec.widens:
            raise ValueError("HandWritten covers one residual width (net.widen = 1)")
        self.stem = conv(spec.in_channels, c, 1)
        self.layers = nn.ModuleList()
        self.mats: list[list[Tensor]] = []
        for b in spec.kept_blocks:
            k = b.kernel
            self.layers.append(
                nn.ModuleList(
                    [
                        norm(c),
                        conv(c, c, k, padding=tuple(i // 2 for i in k), groups=c),
                        conv(c, b.hidden, 1),
                        conv(b.hidden, c, 1),
                    ]
                )  # fmt: skip
            )
            self.mats.append(
                [resample_matrix(n, kb) if o != n else torch.empty(0)
                 for n, o, kb in zip(b.resolution_in, b.resolution_out, b.keep_bins, strict=True)]
            )  # fmt: skip
        self.head_norm = norm(c)
        self.head = nn.Linear(c, spec.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for (nrm, dw, pw1, pw2), mats in zip(self.layers, self.mats, strict=True):
            for axis in reversed(range(len(mats))):
                if mats[axis].numel():
                    h = torch.matmul(h.movedim(2 + axis, -1), mats[axis].T).movedim(-1, 2 + axis)
            h = h + pw2(F.gelu(pw1(F.gelu(dw(nrm(h))))))
        return self.head(self.head_norm(h).flatten(2).mean(-1))


def throughputs(
    nets: dict[str, Callable[[Tensor], Tensor]], x: Tensor, seconds: float
) -> dict[str, float]:
    """Samples per second of each network on batch ``x``. Rounds alternate between the networks (so a
    drift in machine speed hits all alike), each round lasting ``seconds / 5``; the best round counts."""
    best = dict.fromkeys(nets, 0.0)
    with torch.no_grad():
        for fn in nets.values():
            for _ in range(3):
                fn(x)  # warm-up
        for _ in range(5):
            for name, fn in nets.items():
                n, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds / 5:
                    fn(x)
                    n += 1
                best[name] = max(best[name], n * len(x) / (time.perf_counter() - start))
    return best


def learned(name: str, cfg: RunConfig) -> dnarch.RunResult:
    print(f"training {name} ...", flush=True)
    return dnarch.run(cfg, progress=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="a finished dnarch run folder to measure instead of short runs")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=10.0, help="measuring time per network")
    ap.add_argument("--epochs", type=int, default=10, help="epochs of the short runs")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    cases: list[tuple[str, nn.Module | None, StaticNet]] = []
    if args.run:
        cases.append((args.run, None, dnarch.load_static(args.run)))
    else:
        train = TrainConfig(epochs=args.epochs)
        r1 = learned("MNIST-1D", RunConfig(budget=BudgetConfig(budget=0.25), train=train))
        cases.append(("MNIST-1D, 25% budget (1D, length 40)", r1.model, r1.static))
        img = RunConfig(
            net=dnarch.models.PRESETS["image"], budget=BudgetConfig(budget=0.25), train=train,
            data=DataConfig(name="digits"),
        )  # fmt: skip
        r2 = learned("digits", img)
        cases.append(("8x8 digits, 25% budget (2D)", r2.model, r2.static))
    rows = []
    for name, masked, static in cases:
        spec = static.spec
        if spec.group_bits:
            sys.exit(
                "export_throughput.py: the hand-written network has no grouped layers; for a run with "
                "learned grouping use benchmarks/groups_speed.py"
            )
        hand = HandWritten(spec).eval()
        x = torch.randn(args.batch, spec.in_channels, *spec.input_shape)
        nets: dict[str, Callable[[Tensor], Tensor]] = {"static": static, "hand": hand}
        if masked is not None:
            nets["masked"] = masked.eval()
        t = throughputs(nets, x, args.seconds)
        t_static, t_hand, t_masked = t["static"], t["hand"], t.get("masked", float("nan"))
        macs, params = count(static)
        rows.append(
            f"| {name} | {macs:,} | {params:,} | {t_masked:,.0f} | {t_static:,.0f} | {t_hand:,.0f} | "
            f"{t_static / t_hand:.2f}x | {t_static / t_masked:.1f}x |"
        )
        print(rows[-1], flush=True)
    command = "python benchmarks/export_throughput.py " + " ".join(sys.argv[1:])
    table = "\n".join(
        [
            f"Inference throughput (samples/s, batch {args.batch}, eval, no grad), "
            f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}.",
            f"Made by: `{command.strip()}` at commit {git_commit()}",
            "",
            "| learned network | MACs/sample | parameters | masked (samples/s) | exported | hand-written "
            "| exported / hand-written | exported / masked |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "export_throughput.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()

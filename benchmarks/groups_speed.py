"""Issue 9: does learned grouping make networks faster, or only smaller in MACs? In one run:

1. a grouped 1x1 convolution (32 -> 64 channels) against the dense one, forward and backward, for every
   group count, in 1D (length 40) and 2D (28x28): where training gains by running the grouped
   layers grouped (dnarch times this per shape, ``functional.groups.choose_mixing``);
2. the exported networks that DNArch learned with grouping (the ``groups`` rows of a
   ``benchmarks/compare.py`` result file) against the same architectures with dense pointwise layers:
   MACs counted by ``torch.utils.flop_counter`` and inference throughput.

    python benchmarks/groups_speed.py --from benchmarks/results/g9-groups-mnist1d.json \\
        benchmarks/results/g9-groups-fashion.json

Writes benchmarks/results/groups_speed.md with the command that made it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from dnarch.export import ArchSpec, StaticNet
from dnarch.export.summary import count
from dnarch.provenance import git_commit


def paired_seconds(
    a: Callable[[], object], b: Callable[[], object], budget: float
) -> tuple[float, float]:
    """Median seconds per call of ``a`` and of ``b``, called alternately for about ``budget`` seconds
    (after warm-up), so that drifting load on the machine falls on both alike."""
    for _ in range(3):
        a()
        b()
    times: tuple[list[float], list[float]] = ([], [])
    end = time.perf_counter() + budget
    while time.perf_counter() < end or len(times[0]) < 5:
        for fn, out in ((a, times[0]), (b, times[1])):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return statistics.median(times[0]), statistics.median(times[1])


def layer_table(budget: float) -> list[str]:
    lines = [
        "| input | groups | MACs per position | dense: forward + backward (ms) | grouped (ms) | "
        "speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for name, shape in (("1D, length 40", (40,)), ("2D, 28x28", (28, 28))):
        x = torch.randn(64, 32, *shape, requires_grad=True)
        conv = F.conv1d if len(shape) == 1 else F.conv2d
        ones = [1] * len(shape)
        w_dense = torch.randn(64, 32, *ones, requires_grad=True)
        for groups in (2, 4, 8, 16, 32):
            w = torch.randn(64, 32 // groups, *ones, requires_grad=True)

            def step(w: torch.Tensor = w, groups: int = groups) -> None:
                conv(x, w, groups=groups).sum().backward()  # noqa: B023 (x, conv: this input)

            def dense() -> None:
                conv(x, w_dense).sum().backward()  # noqa: B023

            t_grouped, t_dense = paired_seconds(step, dense, budget)
            lines.append(
                f"| {name} | {groups} | {32 * 64 // groups:,} | {1e3 * t_dense:.3f} | "
                f"{1e3 * t_grouped:.3f} | {t_dense / t_grouped:.2f}x |"
            )
    return lines


def dense_twin(spec: ArchSpec) -> ArchSpec:
    """The same architecture with ungrouped pointwise layers."""
    return replace(spec, group_bits=0, blocks=tuple(replace(b, groups=(1, 1)) for b in spec.blocks))


def samples_per_s(a: StaticNet, b: StaticNet, batch: int, budget: float) -> tuple[float, float]:
    """Inference samples per second of two networks on the same input, measured alternately."""
    x = torch.randn(batch, a.spec.in_channels, *a.spec.input_shape)
    with torch.no_grad():
        ta, tb = paired_seconds(lambda: a(x), lambda: b(x), budget)
    return batch / ta, batch / tb


def network_table(paths: list[str], batch: int, budget: float) -> list[str]:
    lines = [
        "| data | budget | seed | groups per block (pw1/pw2) | MACs grouped | MACs dense twin | "
        "samples/s grouped | samples/s dense twin | speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in paths:
        for row in json.loads(Path(path).read_text())["runs"]:
            if row["method"] != "groups":
                continue
            spec = ArchSpec.from_json(json.dumps(row["architecture"]))
            grouped, twin = StaticNet(spec).eval(), StaticNet(dense_twin(spec)).eval()
            groups = " ".join(f"{b.groups[0]}/{b.groups[1]}" for b in spec.kept_blocks)
            a, b = samples_per_s(grouped, twin, batch, budget)
            lines.append(
                f"| {row['dataset']} | {row['budget']:.0%} | {row['seed']} | {groups} | "
                f"{count(grouped)[0]:,} | {count(twin)[0]:,} | {a:,.0f} | {b:,.0f} | {a / b:.2f}x |"
            )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--from", dest="paths", nargs="+", default=[], help="compare.py result files")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=2.0, help="measuring time per case")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    command = "python benchmarks/groups_speed.py " + " ".join(sys.argv[1:])
    text = [
        "# Learned grouping: MACs against speed",
        "",
        f"Made by: `{command.strip()}` at commit {git_commit()}",
        f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}.",
        "",
        "## A grouped 1x1 convolution, 32 -> 64 channels, batch 64",
        "",
        *layer_table(args.seconds),
    ]
    if args.paths:
        text += [
            "",
            f"## Learned grouped networks against their dense twins (batch {args.batch}, eval)",
            "",
            "The dense twin is the same exported architecture with ungrouped pointwise layers.",
            "",
            *network_table(args.paths, args.batch, args.seconds),
        ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "groups_speed.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()

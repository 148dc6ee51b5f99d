"""Which part of the U-Net's design wins on segmentation, at the same MACs.

Trains plain PyTorch networks (no masks, no search) on a dense task, each as wide as a MACs budget
allows (counted by ``torch.utils.flop_counter``), with the baselines' recipe (``train_fixed``):

- ``unet``: the benchmark's plain U-Net (``dnarch.models.plain_unet``), full 3x3 convolutions;
- ``unet-sepK``: the same U-Net with every 3x3 convolution made depthwise-separable (a KxK depthwise
  convolution, then a 1x1 one), DNArch's factorisation, so the budget buys more channels;
- ``unet-sepK-flat`` / ``unet-sepK-noskip``: the same with one width at every level / without the
  encoder's features in the decoder; ``unet-sepK-head``: its encoder with DNArch's dense head (norm,
  Fourier zero-padding to the input size, 1x1) instead of a decoder;
- ``isoK``: DNArch's block at full resolution (norm, KxK depthwise, GELU, 1x1 to 2C, GELU, 1x1 to C,
  residual), four blocks, its dense head (norm, the stem's output added, 1x1); ordinary conv weights,
  no kernel network: the shape DNArch finds on ``fashion-scenes`` at 25%.

    python benchmarks/probe_dense_family.py --variants unet unet-sep3 unet-sep7 iso13 --seeds 0
    python benchmarks/probe_dense_family.py --table-only --merge benchmarks/results/A.json ... --name T

Every run is a record of ``benchmarks.runs``' schema (the variant as the method, the MACs as the
budget), tabulated by its one writer.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import dnarch
from dnarch.flops import counted_macs
from dnarch.functional import fourier
from dnarch.models.plain_cnn import widest_under
from dnarch.models.plain_unet import PlainUNet
from dnarch.provenance import git_commit
from dnarch.train.fixed import train_fixed

if __package__ in (None, ""):  # run as ``python benchmarks/probe_dense_family.py``: the root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.runs import (  # noqa: E402
    Clock,
    check_run,
    file_meta,
    normalise,
    save_runs,
    taken_over,
    write_table,
)

SCORE = {"segment": "test_miou", "classify": "test_acc", "regress": "test_psnr"}


def sep_conv(c_in: int, c_out: int, k: int, stride: int = 1) -> nn.Sequential:
    """(B, c_in, H, W) -> (B, c_out, H / stride, W / stride): KxK depthwise, then 1x1."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, k, stride=stride, padding=k // 2, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_out, 1, bias=False),
    )


class SepBlock(nn.Module):
    """The U-Net's basic residual block with separable convolutions. (B, C_in, *S) -> (B, C_out, *S')."""

    def __init__(self, c_in: int, c_out: int, stride: int, k: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = sep_conv(c_in, c_out, k, stride), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = sep_conv(c_out, c_out, k), nn.BatchNorm2d(c_out)
        self.skip: nn.Module = (
            nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.skip(x))


class SepUNet(nn.Module):
    """``PlainUNet``'s layout (widths w, 2w, 4w at 32, 16, 8 px) with separable convolutions.
    ``grow=False``: width w at every level; ``skips=False``: the decoder gets no encoder features;
    ``decoder=False``: no decoder, DNArch's dense head instead (norm, Fourier zero-padding, 1x1)."""

    def __init__(
        self,
        c_in: int,
        k_out: int,
        width: int,
        k: int,
        grow: bool = True,
        skips: bool = True,
        decoder: bool = True,
    ) -> None:
        super().__init__()
        levels, self.skips, self.decoder = 3, skips, decoder
        widths = [width * (min(2**s, 4) if grow else 1) for s in range(levels)]
        self.stem = nn.Sequential(sep_conv(c_in, width, k), nn.BatchNorm2d(width), nn.ReLU())
        self.down = nn.ModuleList(
            SepBlock(widths[max(s - 1, 0)], c, 1 if s == 0 else 2, k) for s, c in enumerate(widths)
        )
        self.reduce = nn.ModuleList(
            nn.Conv2d(widths[s + 1], widths[s], 1, bias=False) for s in reversed(range(levels - 1))
        )
        self.fuse = nn.ModuleList(
            nn.Sequential(sep_conv(widths[s], widths[s], k), nn.BatchNorm2d(widths[s]), nn.ReLU())
            for s in reversed(range(levels - 1))
        )
        self.norm = nn.Identity() if decoder else nn.BatchNorm2d(widths[-1])
        self.head = nn.Conv2d(widths[0] if decoder else widths[-1], k_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        h, skips = self.stem(x), []
        for block in self.down:
            h = block(h)
            skips.append(h)
        if not self.decoder:
            return self.head(fourier.fourier_upsample(self.norm(h), x.shape[2:]))
        for reduce, fuse, skip in zip(self.reduce, self.fuse, reversed(skips[:-1]), strict=True):
            h = F.interpolate(h, size=skip.shape[2:], mode="nearest")
            h = fuse(reduce(h) + (skip if self.skips else 0))
        return self.head(h)


class IsoNet(nn.Module):
    """DNArch's block at full resolution, ordinary weights. (B, c_in, *S) -> (B, k_out, *S)."""

    def __init__(self, c_in: int, k_out: int, width: int, k: int, blocks: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(c_in, width, 1)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.BatchNorm2d(width),
                nn.Conv2d(width, width, k, padding=k // 2, groups=width),
                nn.GELU(),
                nn.Conv2d(width, 2 * width, 1),
                nn.GELU(),
                nn.Conv2d(2 * width, width, 1),
                nn.Dropout(0.1),
            )
            for _ in range(blocks)
        )
        self.norm, self.head = nn.BatchNorm2d(width), nn.Conv2d(width, k_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        h0 = h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(self.norm(h) + h0)


def make_variant(
    name: str, c_in: int, k_out: int, shape: tuple[int, ...], macs: float
) -> nn.Module:
    """The widest network of variant ``name`` within ``macs`` MACs per sample."""
    if name == "unet":
        make = lambda w: PlainUNet(c_in, k_out, shape, w)  # noqa: E731
    elif m := re.fullmatch(r"unet-sep(\d+)(-flat)?(-noskip)?(-head)?", name):
        make = lambda w: SepUNet(c_in, k_out, w, int(m[1]), not m[2], not m[3], not m[4])  # noqa: E731
    elif m := re.fullmatch(r"iso(\d+)", name):
        make = lambda w: IsoNet(c_in, k_out, w, int(m[1]))  # noqa: E731
    else:
        raise SystemExit(f"probe_dense_family.py: unknown variant {name!r}")
    return make(widest_under(make, c_in, shape, macs))


def legacy_runs(
    saved: dict[str, Any], path: Path, settings: dict[str, Any], n_train: int
) -> list[dict[str, Any]]:
    """The runs of a file written before ``benchmarks.runs``' schema (``{"command", "runs"}``, each
    run a ``variant`` with its ``score``), in the schema. Such files record neither their setting
    nor the wall time: the runs take ``settings`` (the dataset, task, budget and epochs of the
    command that tabulates them) and ``n_train`` samples, and no wall time (NaN)."""
    runs = [
        normalise(
            {
                **settings, "wall_seconds": math.nan,  # not recorded
                "train_macs": 3 * n_train * settings["epochs"] * r["macs"], **r,
                "method": r["variant"],
                "commands": [saved["command"]], "source": path.stem,
            }
        )
        for r in saved["runs"]
    ]  # fmt: skip
    for r in runs:
        check_run(r)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-scenes")
    ap.add_argument("--variants", nargs="+", default=["unet", "unet-sep3", "unet-sep7", "iso13"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--macs", type=float, default=0.25 * 143_130_624, help="MACs per sample")
    ap.add_argument("--limit-train", type=int, default=1000)
    ap.add_argument("--limit-test", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--merge", nargs="*", default=[], help="JSON files of earlier runs to tabulate too"
    )
    ap.add_argument("--table-only", action="store_true", help="train nothing: tabulate --merge")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--name", default="probe-dense-family")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = dnarch.load_data(args.data).limited(args.limit_train, args.limit_test)
    if data.task == "classify" or len(data.input_shape) != 2:
        raise SystemExit("probe_dense_family.py: needs a 2D per-position task")
    score = SCORE[data.task]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/probe_dense_family.py " + " ".join(sys.argv[1:])
    settings = {
        "dataset": args.data, "task": data.task, "budget": args.macs, "epochs": args.epochs,
    }  # fmt: skip
    rows: list[dict[str, Any]] = []
    current: list[Path] = []  # files in the schema: one taken_over keeps each run once
    for file in map(Path, args.merge):
        saved = json.loads(file.read_text())
        if "meta" in saved:
            current.append(file)
        else:
            rows += legacy_runs(saved, file, settings, len(data.x_train))
    rows = taken_over(current) + rows
    commit = git_commit()
    samples = {args.data: (len(data.x_train), len(data.x_test))}
    runs: list[dict[str, Any]] = []
    for name in [] if args.table_only else args.variants:
        for seed in args.seeds:
            torch.manual_seed(seed)
            net = make_variant(
                name, data.in_channels, data.num_classes, data.input_shape, args.macs
            )
            with Clock() as clock:
                hist = train_fixed(
                    net, data, args.epochs, seed=seed, warmup_epochs=2, progress=False
                )
            net.cpu()
            macs = counted_macs(net, data.in_channels, data.input_shape)
            row = {
                **settings, "method": name, "seed": seed, "score": hist[-1][score],
                "score_name": score.removeprefix("test_"), "macs": macs,
                "params": sum(p.numel() for p in net.parameters()),
                "cpu_seconds": clock.cpu, "wall_seconds": clock.wall,
                "train_macs": 3 * len(data.x_train) * args.epochs * macs,
                "curve": [h[score] for h in hist], "commands": [command], "source": args.name,
                "commit": commit,
            }  # fmt: skip
            runs.append(row)
            print(
                f"{name:10s} seed {seed}: {100 * row['score']:.2f} at {row['macs']:,} MACs, "
                f"{row['params']:,} params, {row['cpu_seconds']:.0f} s CPU",
                flush=True,
            )
            save_runs(
                out / f"{args.name}.json", file_meta(command, runs, samples, args.threads), runs
            )
    rows += runs
    write_table(out / f"{args.name}.md", rows, file_meta(command, rows, samples, args.threads), {})
    print((out / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()

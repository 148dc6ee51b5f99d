"""Which block family can a search space for small-data classification be built from?

Fixed networks only (nothing learned about the architecture): each family laid out on the plain CNN's
stages (``models.plain_cnn``: a 3x3 stem, then per stage a stride-2 halving and a width that doubles
up to 4x), made as wide as the MACs allow (counted by ``torch.utils.flop_counter``), and trained with
the plain CNN's recipe (``train.fixed.train_fixed``: AdamW, warm-up + cosine, 2 warm-up epochs).
So the families differ in their blocks alone; DNArch's search can at best find the best of its family.

Families (``NAME:K:E:N``: kernel K taps per axis, hidden width E x the stage's width, N blocks a stage;
``NAME:K:E:N:sS`` gives the stem S taps per axis instead of 3, ``s1`` being DNArch's pointwise stem;
``sSl`` a stem without its norm and ReLU, a plain convolution as DNArch's is; for dnf and dns,
``:hA.B.C`` halves the stream by a learned 3-tap-per-axis filter at stride 2 started at [A, B, C] /
(A + B + C) per axis, as ``net.downsample=strided`` does (``h1.6.1`` is its start; ``h0.1.0`` plain
subsampling, ``h1.2.1`` the binomial anti-aliasing filter), instead of the Fourier crop):
- plain       the plain CNN itself (two full 3x3 convolutions a block, post-norm, ReLU);
- sep         DNArch's block on the plain CNN's strides: BN, depthwise K conv (strided where the stage
              halves), 1x1 to E x width, GELU, 1x1 back, plus the (projected) skip;
- fused       one full K conv to E x width (strided), BN, ReLU, 1x1 back, BN, plus the skip, ReLU
              (EfficientNetV2's fused block);
- dnf         DNArch's block with a full K conv in place of the depthwise conv and the first 1x1, as
              DNArch runs it: where the stage halves, the stream is band-limited halved by a Fourier
              crop and zero-padded to the new width (no projection), then BN, full K conv to E x
              width, GELU, 1x1 back, dropout 0.1, added to the stream;
- dns         the same with DNArch's own depthwise-separable mixing (BN, depthwise K conv, GELU,
              1x1 to E x width, GELU, 1x1 back): DNArch's network with a fixed pyramid and kernel.
The Fourier crop of dnf/dns is not counted by the FLOP counter (DNArch's exported network resamples
with a small counted matrix instead; at these widths about 1% of the MACs).

    python benchmarks/blocks.py --data fashion-mnist --macs 21.5e6 --seeds 0 1 2 \\
        --families plain sep:3:2:1 fused:3:1:1 dnf:3:1:1 --out benchmarks/results --name blocks-fashion

Results are saved after every run (``<out>/<name>.json``, ``benchmarks.runs``' schema, the family as
the method and the MACs as the budget); ``--resume`` skips the runs already there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import dnarch
from dnarch.flops import counted_macs
from dnarch.functional import fourier
from dnarch.functional.conv import CONV, NORM, halve, halving_filter
from dnarch.models.plain_cnn import plain_cnn_for_budget, stage_count, widest_under
from dnarch.provenance import git_commit
from dnarch.train.fixed import train_fixed

if __package__ in (None, ""):  # run as ``python benchmarks/blocks.py``: the repository's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.runs import (  # noqa: E402
    Clock,
    Method,
    check_run,
    file_meta,
    normalise,
    save_runs,
    taken_over,
    write_table,
)


def _skip(c_in: int, c_out: int, stride: int, nd: int) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(CONV[nd](c_in, c_out, 1, stride=stride, bias=False), NORM[nd](c_out))


class Sep(nn.Module):
    """DNArch's mixing on strided stages. (B, c_in, *S) -> (B, c_out, *S / stride)."""

    def __init__(self, c_in: int, c_out: int, stride: int, nd: int, k: int, e: int) -> None:
        super().__init__()
        self.norm = NORM[nd](c_in)
        self.dw = CONV[nd](c_in, c_in, k, stride=stride, padding=k // 2, groups=c_in)
        self.pw1, self.act = CONV[nd](c_in, e * c_out, 1), nn.GELU()
        self.pw2 = CONV[nd](e * c_out, c_out, 1)
        self.skip = _skip(c_in, c_out, stride, nd)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.pw2(self.act(self.pw1(self.dw(self.norm(x)))))


class Fused(nn.Module):
    """Full K conv, then 1x1, post-norm. (B, c_in, *S) -> (B, c_out, *S / stride)."""

    def __init__(self, c_in: int, c_out: int, stride: int, nd: int, k: int, e: int) -> None:
        super().__init__()
        self.c1 = CONV[nd](c_in, e * c_out, k, stride=stride, padding=k // 2, bias=False)
        self.b1, self.act = NORM[nd](e * c_out), nn.ReLU()
        self.c2, self.b2 = CONV[nd](e * c_out, c_out, 1, bias=False), NORM[nd](c_out)
        self.skip = _skip(c_in, c_out, stride, nd)

    def forward(self, x: Tensor) -> Tensor:
        h = self.b2(self.c2(self.act(self.b1(self.c1(x)))))
        return self.act(self.skip(x) + h)


class DNArchStyle(nn.Module):
    """DNArch's pre-norm block with Fourier halving and zero-padded widening; ``full``: a full K conv
    to E x width, else depthwise K then 1x1. (B, c_in, *S) -> (B, c_out, *S')."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        nd: int,
        k: int,
        e: int,
        full: bool,
        halving: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__()
        self.c_in, self.c_out, self.stride, self.full = c_in, c_out, stride, full
        self.halving: nn.Parameter | None = None
        if halving is not None and stride == 2:
            self.halving = nn.Parameter(halving_filter(nd, c_in, halving))
        self.norm = NORM[nd](c_out)
        self.dw = None if full else CONV[nd](c_out, c_out, k, padding=k // 2, groups=c_out)
        self.c1 = CONV[nd](c_out, e * c_out, k if full else 1, padding=k // 2 if full else 0)
        self.act, self.pw = nn.GELU(), CONV[nd](e * c_out, c_out, 1)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: Tensor) -> Tensor:
        if self.halving is not None:  # a learned strided filter: ceil(n / 2) samples per axis
            x = halve(x, self.halving)
        elif self.stride == 2:  # keep bins -n/4..n/4: about half the samples per axis
            x = fourier.lowpass_crop(x, tuple(n // 4 for n in x.shape[2:]))
        if self.c_out > self.c_in:
            x = nn.functional.pad(x, [0] * (2 * (x.ndim - 2)) + [0, self.c_out - self.c_in])
        h = self.norm(x)
        h = self.c1(h) if self.dw is None else self.c1(self.act(self.dw(h)))
        return x + self.drop(self.pw(self.act(h)))


class StagedNet(nn.Module):
    """The plain CNN's stem and stages with ``per_stage`` blocks of ``family`` each.
    x: (B, in_channels, *input_shape) -> logits (B, classes)."""

    def __init__(
        self,
        in_channels: int,
        classes: int,
        shape: tuple[int, ...],
        width: int,
        family: str,
        k: int,
        e: int,
        per_stage: int,
        stem: int = 3,
        stem_linear: bool = False,
        halving: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__()
        nd = len(shape)
        self.width = width
        conv = CONV[nd](in_channels, width, stem, padding=stem // 2, bias=stem_linear)
        self.stem = conv if stem_linear else nn.Sequential(conv, NORM[nd](width), nn.ReLU())
        blocks: list[nn.Module] = []
        c = width
        for stage in range(stage_count(shape)):
            c_out = width * min(2**stage, 4)
            for j in range(per_stage):
                stride = 2 if stage > 0 and j == 0 else 1
                if family in ("dnf", "dns"):
                    full = family == "dnf"
                    blocks.append(DNArchStyle(c, c_out, stride, nd, k, e, full, halving))
                elif family == "sep":
                    blocks.append(Sep(c, c_out, stride, nd, k, e))
                else:
                    blocks.append(Fused(c, c_out, stride, nd, k, e))
                c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.norm, self.head = NORM[nd](c), nn.Linear(c, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(self.blocks(self.stem(x)))
        return self.head(h.flatten(2).mean(-1))


FAMILIES = ("plain", "sep", "fused", "dnf", "dns")


def build(spec: str, in_channels: int, classes: int, shape: tuple[int, ...], macs: float) -> Any:
    """The widest network of family ``spec`` ('plain' or 'NAME:K:E:N') within ``macs``."""
    if spec == "plain":
        return plain_cnn_for_budget(in_channels, classes, shape, macs)
    family, k, e, n, *rest = spec.split(":")
    if family not in FAMILIES:
        raise SystemExit(f"blocks.py: error: unknown family {family!r}; choose from {FAMILIES}")
    stems = [r for r in rest if r.startswith("s")]
    stem = int(stems[0].removeprefix("s").removesuffix("l")) if stems else 3
    linear = bool(stems) and stems[0].endswith("l")
    halves = [r for r in rest if r.startswith("h")]
    halving = tuple(float(t) for t in halves[0][1:].split(".")) if halves else None

    def make(w: int) -> StagedNet:
        return StagedNet(
            in_channels, classes, shape, w, family, int(k), int(e), int(n), stem, linear, halving
        )

    return make(widest_under(make, in_channels, shape, macs))


# the families, as the tables name them (a family's spec, e.g. sep:3:2:1, shows as it is)
FAMILY_LABELS: dict[str, Method] = {"plain": Method("plain", "-s")}


def legacy_runs(saved: list[dict[str, Any]], macs: float, n_train: int) -> list[dict[str, Any]]:
    """Runs of a file written before ``benchmarks.runs``' schema (a list of rows with ``family``,
    ``data``, ``accuracy``), in the schema. Such files record neither the budget nor the command:
    the runs are taken as made for ``macs`` on ``n_train`` samples (the settings of the command that
    resumes the file), with no command of their own."""
    out = []
    for r in saved:
        r = dict(r)
        r["method"], r["dataset"] = r.pop("family"), r.pop("data")
        r.setdefault("budget", macs)
        r.setdefault("train_macs", 3 * n_train * r["epochs"] * r["macs"])
        r.setdefault("commands", [])  # the file recorded none per run
        r = normalise(r)
        check_run(r)
        out.append(r)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--limit-train", type=int, default=1000)
    p.add_argument("--limit-test", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--macs", type=float, required=True, help="MACs per sample of every network")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--families", nargs="+", required=True, help="plain, or NAME:K:E:N")
    p.add_argument("--out", default="benchmarks/scratch")
    p.add_argument("--name", default="blocks")
    p.add_argument("--resume", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    data = dnarch.load_data(a.data).limited(a.limit_train, a.limit_test)
    shape = tuple(data.input_shape)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / f"{a.name}.json"
    command = "python benchmarks/blocks.py " + " ".join(sys.argv[1:])
    rows: list[dict[str, Any]] = []
    if a.resume and saved.exists():
        held = json.loads(saved.read_text())
        rows = (
            legacy_runs(held, a.macs, len(data.x_train))
            if isinstance(held, list)
            else taken_over([saved])
        )
    commit = git_commit()
    samples = {a.data: (len(data.x_train), len(data.x_test))}

    def save() -> None:
        meta = file_meta(command, rows, samples, threads=1)
        save_runs(saved, meta, rows)
        write_table(out / f"{a.name}.md", rows, meta, FAMILY_LABELS)

    for seed in a.seeds:
        for spec in a.families:
            if any(
                (r["dataset"], r["method"], r["budget"], r["seed"]) == (a.data, spec, a.macs, seed)
                for r in rows
            ):
                continue
            torch.manual_seed(seed)
            net = build(spec, data.in_channels, data.num_classes, shape, a.macs)
            macs = counted_macs(net, data.in_channels, shape)
            with Clock() as clock:
                history = train_fixed(
                    net, data, a.epochs, seed=seed, warmup_epochs=2, progress=False
                )
            row = {
                "dataset": a.data, "method": spec, "budget": a.macs, "seed": seed,
                "epochs": a.epochs, "task": "classify", "score": history[-1]["test_acc"],
                "score_name": "acc", "macs": macs,
                "params": sum(q.numel() for q in net.parameters()), "width": net.width,
                "cpu_seconds": clock.cpu, "wall_seconds": clock.wall,
                "train_macs": 3 * len(data.x_train) * a.epochs * macs,
                "limit_train": a.limit_train, "commands": [command], "source": a.name,
                "commit": commit,
            }  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
            save()
    save()  # also when --resume found every run done


if __name__ == "__main__":
    main()

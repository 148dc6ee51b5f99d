"""The report's figures (matplotlib, no display needed). Each function takes plain data read from a run
folder and returns a Figure; ``dnarch.report.write_report`` saves them."""

from __future__ import annotations

import math
import re
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from dnarch.export.spec import ArchSpec  # noqa: E402


def _sizes(text: str) -> list[int]:
    """'13' or '13x11' (a CSV cell) -> [13] or [13, 11]."""
    return [int(v) for v in str(text).split("x")]


def _blocks(rows: list[dict[str, str]]) -> list[int]:
    """Block indices from the CSV's ``b{l}_kept`` columns."""
    found = (re.fullmatch(r"b(\d+)_kept", k) for k in rows[0])
    return sorted(int(m.group(1)) for m in found if m)


def architecture_over_training(
    rows: list[dict[str, str]], ndim: int, maximal: dict[str, list[float]] | None = None
) -> Figure:
    """Per block, kernel size per axis, hidden width, resolution per axis, depth mask value and (when
    learned) the pointwise layers' group counts against epoch: the hard (exported) value as a solid
    line, the soft (learned) one dashed. ``maximal``: the maximal network's size per panel key
    ("kernel", "res_out": per axis; "hidden", "depth": one value), drawn as a grey dotted line; a soft
    size is the masks' smooth extent and can pass it when a mask is fully open, so it is drawn
    clipped there."""
    maximal = maximal or {}
    epochs = [int(r["epoch"]) for r in rows]
    blocks = _blocks(rows)
    panels: list[tuple[str, str, int | None]] = [
        (f"kernel taps, axis {a}", "kernel", a) for a in range(ndim)
    ]
    panels += [("hidden width", "hidden", None)]
    panels += [(f"resolution (samples), axis {a}", "res_out", a) for a in range(ndim)]
    panels += [("depth mask value", "depth", None)]
    if blocks and f"b{blocks[0]}_groups" in rows[0]:
        panels += [(f"groups of pw{a + 1}", "groups", a) for a in range(2)]
    cols = min(3, len(panels))
    fig, axes = plt.subplots(math.ceil(len(panels) / cols), cols, figsize=(5 * cols, 3.4 * math.ceil(len(panels) / cols)), squeeze=False)  # fmt: skip
    colours = plt.get_cmap("viridis")
    for ax, (title, key, axis) in zip(axes.flat, panels, strict=False):
        for j, b in enumerate(blocks):
            c = colours(j / max(1, len(blocks) - 1))
            soft_key = {
                "kernel": f"soft_block{b}_kernel_axis{axis}",
                "hidden": f"soft_block{b}_hidden",
                "res_out": f"soft_block{b}_resolution_axis{axis}",
                "depth": f"soft_block{b}_depth",
                "groups": f"soft_block{b}_groups_pw{(axis or 0) + 1}",
            }[key]
            if key == "groups":
                hard = [float(r[f"b{b}_groups"].split("/")[axis or 0]) for r in rows]
            elif key == "depth":
                hard = [float(r[f"b{b}_kept"]) for r in rows]
            elif axis is None:
                hard = [float(r[f"b{b}_{key}"]) for r in rows]
            else:
                hard = [float(_sizes(r[f"b{b}_{key}"])[axis]) for r in rows]
            ax.plot(epochs, hard, "-", color=c, label=f"block {b}")
            if soft_key in rows[0]:
                top = maximal[key][axis or 0] if key in maximal else math.inf
                soft = [min(float(r[soft_key]), top) for r in rows]
                ax.plot(epochs, soft, "--", color=c, alpha=0.6)
        if key in maximal:
            ax.axhline(maximal[key][axis or 0], color="grey", ls=":", lw=1, label="maximal")
        if key == "groups":
            ax.set_yscale("log", base=2)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("epoch", fontsize=10)
        ax.tick_params(labelsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=9, title="solid: exported; dashed: soft", title_fontsize=9)
    fig.tight_layout()
    return fig


def training_curves(
    rows: list[dict[str, str]], budget: float | None, metric: str, task: str = "classify"
) -> Figure:
    """The task's score (train and test accuracy; test mean IoU; or test PSNR), and the cost with its
    annealed target and the budget, against epoch."""
    epochs = [int(r["epoch"]) for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    if task == "regress":
        left.plot(epochs, [float(r["test_psnr"]) for r in rows], label="test PSNR")
        left.set_ylabel("PSNR (dB)")
    else:
        left.plot(epochs, [100 * float(r["train_acc"]) for r in rows], label="train accuracy")
        left.plot(epochs, [100 * float(r["test_acc"]) for r in rows], label="test accuracy")
        if task == "segment":
            left.plot(epochs, [100 * float(r["test_miou"]) for r in rows], label="test mean IoU")
        left.set_ylabel("%")
    unit = "MACs per sample" if metric == "macs" else "parameters"
    right.plot(epochs, [float(r["cost"]) for r in rows], label=f"cost ({unit})")
    targets = [float(r["target"]) for r in rows]
    if not all(math.isnan(t) for t in targets):
        right.plot(epochs, targets, "--", label="annealed target")
    if budget is not None:
        right.axhline(budget, color="red", lw=1, label="budget")
    frozen = [int(r["epoch"]) for r in rows if str(r.get("arch_frozen")) == "True"]
    for ax in (left, right):
        if frozen:
            ax.axvspan(
                min(frozen) - 0.5,
                max(frozen) + 0.5,
                color="grey",
                alpha=0.12,
                label="architecture frozen",
            )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    right.set_ylabel(unit)
    fig.tight_layout()
    return fig


def final_architecture(spec: ArchSpec) -> Figure:
    """The exported network as boxes: width by hidden channels, height by resolution (samples, all
    axes), removed blocks greyed; a bar inside each box shows the kernel's extent against the input."""
    from dnarch.functional.masks import max_kernel_size

    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(spec.blocks) + 2), 3.8))
    full = math.prod(spec.input_shape)
    max_kernel = [max_kernel_size(n) for n in spec.input_shape]
    widest = max(
        [spec.max_hidden] + [b.hidden for b in spec.kept_blocks]
    )  # net.widen may exceed it
    for i, b in enumerate(spec.blocks):
        x = 1.6 * i
        if not b.kept:
            ax.add_patch(Rectangle((x, 0), 1.2, 1.0, fc="#eeeeee", ec="#bbbbbb", ls="--"))
            ax.text(
                x + 0.6,
                0.5,
                f"block {b.index}\nremoved",
                ha="center",
                va="center",
                color="#999999",
                fontsize=8,
            )
            continue
        w = 0.3 + 0.9 * b.hidden / widest
        h = 0.15 + 0.85 * math.prod(b.resolution_out) / full
        ax.add_patch(Rectangle((x + (1.2 - w) / 2, 0), w, h, fc="#9ecae1", ec="#3182bd"))
        extent = sum(k / m for k, m in zip(b.kernel, max_kernel, strict=True)) / len(b.kernel)
        ax.add_patch(Rectangle((x + 0.1, -0.22), 1.0 * extent, 0.08, fc="#e6550d"))
        res = "x".join(map(str, b.resolution_out))
        kern = "x".join(map(str, b.kernel))
        ax.text(
            x + 0.6,
            h + 0.04,
            f"block {b.index}\nhidden {b.hidden}\nres {res}\nkernel {kern}"
            + (f"\nwidth {spec.block_width(b)}" if spec.widens else "")
            + (f"\ngroups {b.groups[0]}/{b.groups[1]}" if spec.group_bits else ""),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.text(-0.2, -0.18, "kernel\nextent", ha="right", va="center", fontsize=7, color="#e6550d")
    ax.set_xlim(-0.8, 1.6 * len(spec.blocks))
    ax.set_ylim(-0.35, 1.75)
    ax.axis("off")
    ax.set_title(
        f"exported network: residual width {spec.widths_text()} of {spec.max_width}, "
        f"{len(spec.kept_blocks)} of {len(spec.blocks)} blocks; box width ~ hidden, height ~ resolution",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def kernels(items: list[dict[str, Any]], ndim: int, channels: int = 4) -> Figure:
    """The learned kernels of the first ``channels`` channels per kept block, with their masks.

    ``items``: per block ``{"index", "kernel": (c, *K) array, "mask": (*K) array}``."""
    n = max(1, len(items))
    if ndim == 1:
        fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.8), squeeze=False)
        for ax, it in zip(axes[0], items, strict=False):
            k, m = it["kernel"], it["mask"]
            taps = range(-(len(m) // 2), len(m) // 2 + 1)
            scale = max(1e-12, float(abs(k[:channels]).max()))
            for c in range(min(channels, len(k))):
                ax.plot(list(taps), k[c] / scale, lw=1)
            ax.plot(list(taps), m, "k--", lw=1, label="mask")
            ax.set_title(f"block {it['index']}: {len(m)} taps", fontsize=11)
            ax.set_xlabel("tap")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=9)
    else:
        cols = min(channels, max(len(it["kernel"]) for it in items) if items else 1) + 1
        fig, axes = plt.subplots(n, cols, figsize=(2.2 * cols, 2.3 * n), squeeze=False)
        for row, it in zip(axes, items, strict=False):
            k, m = it["kernel"], it["mask"]
            for c, ax in enumerate(row[:-1]):
                if c < len(k):
                    lim = max(1e-12, float(abs(k[c]).max()))
                    ax.imshow(k[c], cmap="RdBu_r", vmin=-lim, vmax=lim)
                ax.set_xticks([])
                ax.set_yticks([])
            row[0].set_ylabel(f"block {it['index']}\n{'x'.join(map(str, m.shape))}", fontsize=11)
            row[-1].imshow(m, cmap="Greys_r", vmin=0, vmax=1)
            row[-1].set_title("mask", fontsize=11)
            row[-1].set_xticks([])
            row[-1].set_yticks([])
    fig.suptitle("learned kernels (first channels) and their masks", fontsize=12)
    fig.tight_layout()
    return fig


def examples(x: Any, y: Any, pred: Any, task: str, num_classes: int) -> Figure:
    """Test samples of a per-position task, one per row: the input, the truth and the exported
    network's prediction. x: (n, C, *S) inputs; y, pred: (n, *S) labels (segment) or (n, K, *S)
    values (regress); 1D samples are curves (labels as colour strips), 2D samples images."""
    n, ndim = len(x), x.ndim - 2
    if ndim == 2:
        fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
        label = task == "segment"
        for i in range(n):
            shown = [
                (x[i, 0], "input", "gray", None),
                (y[i] if label else y[i, 0], "truth", "tab20" if label else "gray", label),
                (
                    pred[i] if label else pred[i, 0],
                    "prediction",
                    "tab20" if label else "gray",
                    label,
                ),
            ]
            for ax, (img, title, cmap, labels) in zip(axes[i], shown, strict=True):
                limits = {"vmin": 0, "vmax": max(num_classes - 1, 1)} if labels else {}
                ax.imshow(img, cmap=cmap, interpolation="nearest", **limits)
                ax.set_title(title, fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])
    else:
        fig, axes = plt.subplots(n, 1, figsize=(9, 2.2 * n), squeeze=False)
        for i in range(n):
            ax = axes[i, 0]
            ax.plot(x[i, 0], color="0.5", lw=1, label="input")
            if task == "segment":
                strips = [[*y[i]], [*pred[i]]]
                top = float(x[i, 0].max())
                span = float(x[i, 0].max() - x[i, 0].min()) or 1.0
                ax.imshow(strips, cmap="tab20", vmin=0, vmax=max(num_classes - 1, 1),
                          aspect="auto", interpolation="nearest",
                          extent=(-0.5, len(y[i]) - 0.5, top + 0.6 * span, top + 0.1 * span))  # fmt: skip
                ax.set_ylim(float(x[i, 0].min()) - 0.1 * span, top + 0.7 * span)
                ax.set_title("input; strips: truth (upper), prediction (lower)", fontsize=9)
            else:
                ax.plot(y[i, 0], color="black", lw=1, label="truth")
                ax.plot(pred[i, 0], color="tab:red", lw=1, ls="--", label="prediction")
                ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig

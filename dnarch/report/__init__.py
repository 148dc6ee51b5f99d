"""The run report: ``write_report(run_dir)`` writes ``report/index.html`` (one self-contained page, its
figures embedded) and the same figures as PNG files next to it."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dnarch.config import describe_gates
from dnarch.export.spec import ArchSpec
from dnarch.files import atomic_write_text
from dnarch.functional import masks as fm
from dnarch.train.metrics import score_lines

FIGURES = {
    "training": "Score and cost over training",
    "architecture_over_training": "The architecture over training",
    "final_architecture": "The learned architecture",
    "kernels": "The learned kernels",
    "examples": "Example predictions",
}
CAPTIONS = {
    "training": "Left: the task's score after each epoch: accuracy on the training batches and on the "
    "test set (per position for segmentation, with the test mean IoU; for regression, the test PSNR). "
    "Right: the "
    "network's cost (MACs per sample, or parameters) as the masks cut it down, the target the "
    "complexity loss holds it to (it falls from the maximal network's cost to the budget over the first "
    "half of training), and the budget. In the grey epochs the architecture is frozen and only the "
    "weights train.",
    "architecture_over_training": "Each line is one block. Solid: the size the exported network would "
    "have after that epoch (what cropping keeps). Dashed: the smooth size the masks describe, which is "
    "what the gradient sees; it is drawn clipped at the maximal network (grey dotted), which a fully "
    "open mask's smooth size can pass. Kernel taps and resolution are per spatial axis; the depth mask value is "
    "1 for a block that is fully used and falls towards 0 for a block being removed.",
    "final_architecture": "The exported network, block by block, left to right. A box is wider when the "
    "block keeps more hidden channels and taller when it runs at a higher resolution; the orange bar "
    "under it is its kernel's extent relative to the whole input. Removed blocks are grey.",
    "kernels": "The depthwise kernels of the first channels of each kept block, as the exported network "
    "uses them (1D: curves, scaled; 2D: images, red positive, blue negative), next to the Gaussian mask "
    "that sets their extent.",
    "examples": "The first test samples with the exported network's output (per-position tasks): "
    "segmentation labels as colours, regression values as images or curves.",
}


EXAMPLES = "examples.npz"  # per-position runs: a few test inputs, targets and predictions
PER_POSITION = {"examples"}  # figures that only per-position (dense) runs have


class ReportError(ValueError):
    """A folder that is not a finished run. One line meant for the user."""


def _read(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, str]], dict[str, Any], ArchSpec]:
    from dnarch.config import upgrade_saved

    try:
        config = upgrade_saved(json.loads((run_dir / "config.json").read_text()))
        with (run_dir / "metrics.csv").open() as f:
            rows = list(csv.DictReader(f))
        summary = json.loads((run_dir / "summary.json").read_text())
        spec = ArchSpec.from_json((run_dir / "architecture.json").read_text())
    except FileNotFoundError as err:
        raise ReportError(
            f"{run_dir} lacks {Path(str(err.filename)).name}; is it a finished dnarch run folder?"
        ) from err
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError) as err:
        raise ReportError(f"cannot read the run in {run_dir}: {err}") from err
    if not rows:
        raise ReportError(f"{run_dir / 'metrics.csv'} holds no epoch")
    return config, rows, summary, spec


def _kernel_items(run_dir: Path, config: dict[str, Any], spec: ArchSpec) -> list[dict[str, Any]]:
    """Per kept block, its masked kernel (c, *K) and mask (*K), from the checkpoint's model."""
    from dnarch.config import NetConfig, from_dict
    from dnarch.models import build_model
    from dnarch.train.callbacks import load_checkpoint

    r = config["resolved"]
    net = from_dict(NetConfig, config["net"])
    model = build_model(
        net, r["in_channels"], r["num_classes"], r["input_shape"], r.get("task", "classify")
    )
    model.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt")["trainer"]["model"])
    items = []
    with torch.no_grad():
        for b in spec.kept_blocks:
            conv = model.block_list()[b.index].conv
            sizes = conv.mask.hard_sizes(b.resolution_out)
            items.append({
                "index": b.index,
                "kernel": conv.kernel(b.resolution_out, spec.block_width(b)).numpy(),
                "mask": conv.mask.values(sizes, b.resolution_out).numpy(),
            })  # fmt: skip
    return items


def maximal_sizes(spec: ArchSpec) -> dict[str, list[float]]:
    """The largest size any block of the network ``spec`` describes reaches, per panel of
    ``plots.architecture_over_training`` ("kernel", "res_out": per axis; "hidden", "depth"): made
    from the maximal network's spec (``DNArchNet.ceiling_copy``), it is the panels' ceiling."""
    kept = spec.kept_blocks or list(spec.blocks)
    return {
        "kernel": [float(max(b.kernel[a] for b in kept)) for a in range(spec.ndim)],
        "res_out": [float(max(b.resolution_out[a] for b in kept)) for a in range(spec.ndim)],
        "hidden": [float(max(b.hidden for b in kept))],
        "depth": [1.0],
    }


def _old_maximal_sizes(spec: ArchSpec) -> dict[str, list[float]]:
    """For a run folder written before summaries held ``maximal_sizes``: the full-resolution maximal
    network (what they called maximal)."""
    return {
        "kernel": [float(fm.max_kernel_size(n)) for n in spec.input_shape],
        "res_out": [float(n) for n in spec.input_shape],
        "hidden": [float(spec.max_hidden)],
        "depth": [1.0],
    }


def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report/index.html`` and its PNGs; returns the page's path."""
    from dnarch.report import plots

    folder = Path(run_dir)
    config, rows, summary, spec = _read(folder)
    out = folder / "report"
    out.mkdir(exist_ok=True)
    figures = {
        "training": plots.training_curves(
            rows,
            summary.get("budget"),
            summary.get("budget_metric", "macs"),
            summary.get("task", "classify"),
        ),  # fmt: skip
        "architecture_over_training": plots.architecture_over_training(
            rows, spec.ndim, summary.get("maximal_sizes") or _old_maximal_sizes(spec)
        ),
        "final_architecture": plots.final_architecture(spec),
    }
    try:
        figures["kernels"] = plots.kernels(_kernel_items(folder, config, spec), spec.ndim)
    except (
        Exception
    ) as err:  # the checkpoint is optional for a report; say why the figure is missing
        kernels_note = f"(no kernel figure: {str(err).splitlines()[0]})"
    else:
        kernels_note = ""
    examples = folder / EXAMPLES
    if examples.is_file() and summary.get("task", "classify") != "classify":
        with np.load(examples) as ex:
            figures["examples"] = plots.examples(
                ex["x"], ex["y"], ex["pred"], summary["task"], config["resolved"]["num_classes"]
            )
    images = {}
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plots.plt.close(fig)
        (out / f"{name}.png").write_bytes(buf.getvalue())
        images[name] = base64.b64encode(buf.getvalue()).decode()

    s = summary
    cost_rows = [
        ["MACs per sample", f"{s['max_macs']:,}", f"{s['macs']:,}", f"{100 * s['macs'] / s['max_macs']:.1f}%"],
        ["parameters", f"{s['max_params']:,}", f"{s['params']:,}", f"{100 * s['params'] / s['max_params']:.1f}%"],
    ]  # fmt: skip
    block_rows = [
        [str(b.index), "kept" if b.kept else "removed",
         "x".join(map(str, b.kernel)) if b.kept else "-", str(b.hidden) if b.kept else "-",
         *([f"{b.groups[0]}/{b.groups[1]}" if b.kept else "-"] if spec.group_bits else []),
         f"{'x'.join(map(str, b.resolution_in))} -> {'x'.join(map(str, b.resolution_out))}" if b.kept else "-"]
        for b in spec.blocks
    ]  # fmt: skip
    budget = (
        f"budget {s['budget']:,.0f} {s.get('budget_metric', 'macs')}"
        if s.get("budget")
        else "no budget"
    )
    sections = "".join(
        f"<h2>{html.escape(title)}</h2><p>{html.escape(CAPTIONS[name])}</p>"
        + (
            f'<img alt="{name}" src="data:image/png;base64,{images[name]}">'
            if name in images
            else ""
        )
        + (f"<p>{html.escape(kernels_note)}</p>" if name == "kernels" and kernels_note else "")
        for name, title in FIGURES.items()
        if name in images or name not in PER_POSITION
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dnarch run: {html.escape(folder.name)}</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}
img{{max-width:100%;border:1px solid #eee}}</style></head>
<body>
<h1>dnarch run: {html.escape(folder.name)}</h1>
<p>Data <b>{html.escape(config["resolved"]["dataset"])}</b>, input {html.escape("x".join(map(str, spec.input_shape)))},
{html.escape(budget)}, {s["epochs"]} epochs, task {html.escape(s.get("task", "classify"))}.</p>
<p>{html.escape(describe_gates(config.get("train", {})))}.</p>
<p>{"<br>".join(html.escape(line) for line in score_lines(s))}</p>
<h2>Maximal vs learned</h2>
{_table(cost_rows, ["", "maximal", "learned", "learned / maximal"])}
{_table(block_rows, ["block", "status", "kernel", "hidden", *(["groups (pw1/pw2)"] if spec.group_bits else []), "resolution in -> out"])}
{sections}
<script>
window.addEventListener("load", () => {{
  const imgs = [...document.images];
  const ok = imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
  const filled = [...document.querySelectorAll("table")].every(t => t.querySelectorAll("tbody tr").length > 0);
  document.body.dataset.check = `images=${{imgs.length}} loaded=${{ok}} tables_filled=${{filled}}`;
}});
</script>
</body></html>
"""
    path = out / "index.html"
    atomic_write_text(path, page)
    return path

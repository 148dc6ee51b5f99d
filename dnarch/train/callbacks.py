"""Callbacks that write a run's files: per-epoch CSV metrics (with the architecture) and checkpoints.

Every file is written through ``dnarch.files.atomic_path``, so a crash mid-write leaves the previous one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch

from dnarch.cost import model_cost
from dnarch.files import atomic_write_bytes
from dnarch.models import DNArchNet
from dnarch.train.trainer import TrainState


def arch_columns(model: DNArchNet) -> dict[str, Any]:
    """The learned (hard) architecture as flat CSV columns."""
    plan = model.hard_plan()
    hard = model_cost(model, "hard", plan)
    row: dict[str, Any] = {
        "macs": int(hard.macs),
        "params": int(hard.params),
        "residual_width": model.residual_mask.hard_count(),
        "blocks_kept": sum(p.kept for p in plan),
    }
    for p in plan:
        i = p.index
        row[f"b{i}_kept"] = int(p.kept)
        row[f"b{i}_kernel"] = "x".join(map(str, p.kernel))
        row[f"b{i}_hidden"] = p.hidden
        if model.widths_vary:
            row[f"b{i}_width"] = p.width
        row[f"b{i}_res_out"] = "x".join(map(str, p.resolution_out))
        if model.learn_groups:
            row[f"b{i}_groups"] = "/".join(map(str, p.groups))
    return row


@torch.no_grad()
def soft_sizes(model: Any) -> dict[str, float]:
    """The differentiable architecture as flat scalars: ``residual_width`` and, per block ``l``,
    ``block{l}/depth`` (the mask value), ``block{l}/kernel_axis{a}``, ``block{l}/hidden`` and
    ``block{l}/resolution_axis{a}`` (sizes in taps, channels and samples); with learned grouping
    ``block{l}/groups_pw1`` and ``block{l}/groups_pw2``; with ``net.widen`` > 1 or
    ``net.stage_widths`` ``block{l}/width``
    (the block's residual width)."""
    sizes = model.arch_sizes(hard=False)
    out = {"residual_width": float(sizes.residual)}
    for i, (d, k, h, r) in enumerate(
        zip(sizes.depth, sizes.kernel, sizes.hidden, sizes.resolution, strict=True)
    ):
        out[f"block{i}/depth"] = float(d)
        out[f"block{i}/hidden"] = float(h)
        if model.widths_vary:
            out[f"block{i}/width"] = float(sizes.width[i])
        for a, v in enumerate(k.reshape(-1).tolist()):
            out[f"block{i}/kernel_axis{a}"] = v
        for a, v in enumerate(r.reshape(-1).tolist()):
            out[f"block{i}/resolution_axis{a}"] = v
        if model.learn_groups:
            out[f"block{i}/groups_pw1"], out[f"block{i}/groups_pw2"] = sizes.groups[i].tolist()
    return out


class CSVLogger:
    """metrics.csv: one row per epoch, the trainer's metrics plus the architecture columns. The columns
    are added to the epoch's row in the trainer state, so a checkpoint carries them and a resumed run
    rewrites the whole file from its history."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_epoch_end(self, state: TrainState) -> None:
        if isinstance(state.model, DNArchNet):  # a fixed network has no architecture columns
            state.row.update(arch_columns(state.model))  # the same dict as state.history[-1]
            soft = soft_sizes(state.model)
            state.row.update({"soft_" + k.replace("/", "_"): round(v, 4) for k, v in soft.items()})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(state.history[0]))
        writer.writeheader()
        writer.writerows(state.history)
        atomic_write_bytes(self.path, buf.getvalue().encode())


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (corrupted, truncated, or from another config). One line."""


_FOOTER = b"\nDNARCH-CHECKPOINT-SHA256:"


def save_checkpoint(path: Path, trainer_state: dict[str, Any], config: dict[str, Any]) -> None:
    """Write ``checkpoint.pt`` atomically: a ``torch.save`` payload (tensors and plain data only),
    followed by a footer with its SHA-256, so a truncated or altered file is detected on load."""
    buf = io.BytesIO()
    torch.save({"format": 1, "config": config, "trainer": trainer_state}, buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    atomic_write_bytes(path, payload + _FOOTER + digest)


def load_checkpoint(path: Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The trainer state saved by ``save_checkpoint``, after checking its checksum and, if given,
    that it belongs to ``config``. Loaded with ``weights_only=True``: no code can run."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise CheckpointError(f"{path} does not exist: nothing to resume") from err
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror or err}") from err
    payload, sep, digest = raw.rpartition(_FOOTER)
    if not sep:
        raise CheckpointError(f"{path} is not a dnarch checkpoint (no checksum footer)")
    if hashlib.sha256(payload).hexdigest().encode() != digest.strip():
        raise CheckpointError(f"{path} is corrupted (checksum mismatch); it cannot be resumed")
    try:
        blob = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} cannot be loaded: {str(err).splitlines()[0]}") from err
    if not isinstance(blob, dict) or blob.get("format") != 1 or "trainer" not in blob:
        raise CheckpointError(f"{path} is not a dnarch checkpoint of a known format")
    if config is not None and not same_config(comparable(blob.get("config")), comparable(config)):
        raise CheckpointError(
            f"{path} belongs to a different config than its run folder's config.json"
        )
    return blob


def same_config(saved: Any, current: Any) -> bool:
    """Whether a checkpoint's config is ``current``, on every key the checkpoint has: a key a newer
    dnarch added (at its default, as config.json of the same run reads) is not a difference."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return all(k in current and same_config(v, current[k]) for k, v in saved.items())
    return bool(saved == current)


def comparable(config: Any) -> Any:
    """The config as JSON sees it (tuples become lists), for comparing a saved one with a read one."""
    return json.loads(json.dumps(config))


class Checkpointer:
    """checkpoint.pt after every epoch, and when the user stops the run: the trainer's whole state
    (weights, masks, optimiser, scheduler, data order, RNGs) and the resolved config."""

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path, self.config = path, config

    def on_epoch_end(self, state: TrainState) -> None:
        save_checkpoint(self.path, state.snapshot(), self.config)

    def on_interrupt(self, state: TrainState) -> None:
        save_checkpoint(self.path, state.snapshot(), self.config)

"""Callbacks that write a run's files: per-epoch CSV metrics (with the architecture) and checkpoints.

Every file is written to a temporary name and renamed, so a crash mid-write leaves the previous one.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import torch

from dnarch.cost import model_cost
from dnarch.models import DNArchNet
from dnarch.train.trainer import TrainState


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def to_cpu(obj: Any) -> Any:
    """A copy of nested dicts/lists with every tensor on the CPU (checkpoints load anywhere)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def arch_columns(model: DNArchNet) -> dict[str, Any]:
    """The learned (hard) architecture as flat CSV columns."""
    hard = model_cost(model, "hard")
    row: dict[str, Any] = {
        "macs": int(hard.macs),
        "params": int(hard.params),
        "residual_width": model.residual_mask.hard_count(),
        "blocks_kept": model.depth_mask.hard_count(),
    }
    for p in model.hard_plan():
        i = p["index"]
        row[f"b{i}_kept"] = int(p["kept"])
        row[f"b{i}_kernel"] = "x".join(map(str, p["kernel"]))
        row[f"b{i}_hidden"] = p["hidden"]
        row[f"b{i}_res_out"] = "x".join(map(str, p["resolution_out"]))
    return row


class CSVLogger:
    """metrics.csv: one row per epoch, the trainer's metrics plus the architecture columns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []

    def on_epoch_end(self, state: TrainState) -> None:
        self.rows.append({**state.row, **arch_columns(state.model)})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(self.rows[0]))
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_bytes(self.path, buf.getvalue().encode())


class Checkpointer:
    """checkpoint.pt after every epoch: model, optimiser, scheduler, epoch and the resolved config."""

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path, self.config = path, config

    def on_epoch_end(self, state: TrainState) -> None:
        blob = {
            "model": to_cpu(state.model.state_dict()),
            "optimizer": to_cpu(state.optimizer.state_dict()),
            "scheduler": state.scheduler.state_dict(),
            "epoch": state.epoch,
            "config": self.config,
        }
        buf = io.BytesIO()
        torch.save(blob, buf)
        atomic_write_bytes(self.path, buf.getvalue())

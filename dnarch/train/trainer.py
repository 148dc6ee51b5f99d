"""A small trainer: AdamW with separate groups, warm-up + cosine, evaluation, events to callbacks.

It knows nothing of the model beyond ``arch_parameters()``, ``weight_parameters()`` and
``project_arch_()``, and nothing of files: checkpoints and metrics are callbacks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from dnarch.config import TrainConfig
from dnarch.data import DataBundle
from dnarch.models import DNArchNet
from dnarch.train.objective import Objective


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when present (for 'auto'), else CPU; or the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and (
        not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
    ):
        raise ValueError(
            f"train.device={name!r} but no such CUDA device is available; use auto or cpu"
        )
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainState:
    """What callbacks see. ``row`` holds the last epoch's metrics."""

    model: DNArchNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    epoch: int = 0
    row: dict[str, Any] = field(default_factory=dict)


class Callback(Protocol):
    def on_epoch_end(self, state: TrainState) -> None: ...


def param_groups(model: DNArchNet, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Weights with decay (matrices), weights without (biases, norms), and mask parameters at arch_lr
    without decay. Groups are found through the model's API, never by names."""
    weights = model.weight_parameters()
    arch = model.arch_parameters()
    decay = [p for p in weights if p.ndim >= 2]
    no_decay = [p for p in weights if p.ndim < 2]
    groups: list[dict[str, Any]] = [
        {"params": decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "name": "weights"},
        {"params": no_decay, "lr": cfg.lr, "weight_decay": 0.0, "name": "weights_no_decay"},
    ]
    if arch:
        groups.append({"params": arch, "lr": cfg.arch_lr, "weight_decay": 0.0, "name": "arch"})
    return groups


def warmup_cosine(total: int, warmup: int) -> Any:
    """LR multiplier: linear warm-up for ``warmup`` steps, then cosine to zero at ``total``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return f


@torch.no_grad()
def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, device: torch.device, batch: int = 512
) -> float:
    """Accuracy of ``model`` on (x, y)."""
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        logits = model(x[i : i + batch].to(device))
        correct += int((logits.argmax(-1).cpu() == y[i : i + batch]).sum())
    model.train(was)
    return correct / len(x)


class Trainer:
    """Trains ``model`` on ``data`` under ``objective``; raises ``on_epoch_end`` to callbacks."""

    def __init__(
        self,
        model: DNArchNet,
        objective: Objective,
        data: DataBundle,
        cfg: TrainConfig,
        callbacks: Sequence[Callback] = (),
        progress: bool = True,
    ) -> None:
        self.model, self.objective, self.data, self.cfg = model, objective, data, cfg
        self.callbacks, self.progress = list(callbacks), progress
        self.device = pick_device(cfg.device)
        self.model.to(self.device)
        g = torch.Generator().manual_seed(cfg.seed)
        self.loader = DataLoader(
            TensorDataset(data.x_train, data.y_train), batch_size=cfg.batch_size, shuffle=True,
            generator=g, drop_last=len(data.x_train) > cfg.batch_size,
        )  # fmt: skip
        self.steps_per_epoch = len(self.loader)
        total = cfg.epochs * self.steps_per_epoch
        self.optimizer = torch.optim.AdamW(param_groups(model, cfg))
        self.arch_group = list(model.arch_parameters())
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(total, cfg.warmup_epochs * self.steps_per_epoch)
        )
        self.freeze_epoch = cfg.epochs - int(round(cfg.freeze_arch_fraction * cfg.epochs))
        self.state = TrainState(model, self.optimizer, self.scheduler)

    def fit(self) -> list[dict[str, Any]]:
        """Run every epoch; returns the per-epoch metric rows."""
        history = []
        total = self.cfg.epochs * self.steps_per_epoch
        bar = tqdm(total=total, desc="train", disable=not self.progress, unit="step", leave=True)
        for epoch in range(self.state.epoch, self.cfg.epochs):
            row = self._epoch(epoch, bar)
            self.state.epoch, self.state.row = epoch + 1, row
            history.append(row)
            for cb in self.callbacks:
                cb.on_epoch_end(self.state)
        bar.close()
        for p in self.arch_group:  # frozen for the last epochs only; the model stays learnable
            p.requires_grad_(True)
        return history

    def _epoch(self, epoch: int, bar: Any) -> dict[str, Any]:
        model, dev = self.model, self.device
        model.train()
        frozen = epoch >= self.freeze_epoch
        if frozen:
            # the architecture is final: masks stop learning and skip their gradient-only work
            for p in self.arch_group:
                p.requires_grad_(False)
        sums = {"task": 0.0, "penalty": 0.0, "correct": 0.0, "n": 0.0}
        out: dict[str, Any] = {}
        for step, (xb, yb) in enumerate(self.loader):
            xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            progress = (epoch * self.steps_per_epoch + step) / (
                self.cfg.epochs * self.steps_per_epoch
            )
            logits = model(xb)
            out = self.objective(model, logits, yb, progress)
            self.optimizer.zero_grad(set_to_none=True)
            out["total"].backward()  # type: ignore[union-attr]
            self.optimizer.step()
            self.scheduler.step()
            model.project_arch_()
            n = len(yb)
            task, cost = (
                float(torch.as_tensor(out["task"]).detach()),
                float(torch.as_tensor(out["cost"]).detach()),
            )
            sums["task"] += task * n
            sums["penalty"] += float(torch.as_tensor(out["penalty"]).detach()) * n
            sums["correct"] += float((logits.argmax(-1) == yb).sum())
            sums["n"] += n
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{task:.3f}", macs=f"{cost:.3g}")
        test_acc = evaluate(model, self.data.x_test, self.data.y_test, dev)
        return {
            "epoch": epoch + 1,
            "train_loss": sums["task"] / sums["n"],
            "train_penalty": sums["penalty"] / sums["n"],
            "train_acc": sums["correct"] / sums["n"],
            "test_acc": test_acc,
            "cost": float(torch.as_tensor(out["cost"]).detach()),
            "target": float(out["target"]),
            "arch_frozen": frozen,
        }

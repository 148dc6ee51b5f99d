"""The optimiser and its schedule: parameter groups, fused AdamW, warm-up + cosine, the epoch the
architecture freezes at and the resolution cut-offs' learning-rate scale."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from dnarch.config import TrainConfig

if TYPE_CHECKING:
    from dnarch.models import DNArchNet
    from dnarch.train.objective import FixedNet


def param_groups(
    model: DNArchNet | FixedNet, cfg: TrainConfig, resolution_scale: float
) -> list[dict[str, Any]]:
    """Weights with decay (matrices), weights without (biases, norms, and a model's stacked
    per-block biases, ``DNArchNet.vector_parameters``), and mask parameters at arch_lr
    without decay; the resolution cut-offs at ``arch_lr * resolution_scale`` (see
    ``resolution_scale``). Groups are found through the model's API, never by names."""
    weights = model.weight_parameters()
    resolution = model.resolution_parameters()
    ids = {id(p) for p in resolution}
    arch = [p for p in model.arch_parameters() if id(p) not in ids]
    # stacked per-block vectors (``DNArchNet.vector_parameters``) are biases, not matrices
    vectors = {id(p) for p in getattr(model, "vector_parameters", list)()}
    decay = [p for p in weights if p.ndim >= 2 and id(p) not in vectors]
    no_decay = [p for p in weights if p.ndim < 2 or id(p) in vectors]
    groups: list[dict[str, Any]] = [
        {"params": decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "name": "weights"},
        {"params": no_decay, "lr": cfg.lr, "weight_decay": 0.0, "name": "weights_no_decay"},
    ]
    if arch:
        groups.append({"params": arch, "lr": cfg.arch_lr, "weight_decay": 0.0, "name": "arch"})
    if resolution:
        lr = cfg.arch_lr * resolution_scale
        groups.append({"params": resolution, "lr": lr, "weight_decay": 0.0, "name": "resolution"})
    return groups


def adamw(groups: list[dict[str, Any]], device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``groups``, fused into one kernel where PyTorch has it (CPU and CUDA): a DNArch
    network has about a hundred small parameter tensors, and the per-tensor loop of the default
    implementation takes 5x as long on them (``benchmarks/speed.py``). Same update, same
    determinism."""
    return torch.optim.AdamW(groups, fused=device.type in ("cpu", "cuda"))


def freeze_epoch(cfg: TrainConfig) -> int:
    """The first epoch with the architecture frozen (``cfg.epochs``: never frozen). A run of two
    epochs or more with a freeze fraction freezes at least its last epoch."""
    frozen = int(round(cfg.freeze_arch_fraction * cfg.epochs))
    if cfg.freeze_arch_fraction > 0 and cfg.epochs >= 2:
        frozen = max(1, frozen)
    return cfg.epochs - frozen


def resolution_scale(cfg: TrainConfig, steps_per_epoch: int) -> float:
    """The resolution cut-offs' learning rate as a fraction of ``arch_lr``: ``resolution_lr_scale``
    if set; else the one whose learning rate, summed over the architecture-learning steps of this
    schedule (warm-up and cosine included), is ``resolution_travel``, at most 1. MNIST-1D's default
    run (62 steps per epoch, 20 epochs) gets 0.1; a run with 8x fewer steps gets 8x the rate."""
    if cfg.resolution_lr_scale is not None:
        return cfg.resolution_lr_scale
    total = cfg.epochs * steps_per_epoch
    f = warmup_cosine(total, cfg.warmup_epochs * steps_per_epoch)
    arch_steps = freeze_epoch(cfg) * steps_per_epoch
    reach = cfg.arch_lr * sum(f(step) for step in range(arch_steps))
    return min(1.0, cfg.resolution_travel / reach) if reach > 0 else 1.0


def warmup_cosine(total: int, warmup: int) -> Any:
    """LR multiplier: linear warm-up for ``warmup`` steps, then cosine to zero at ``total``."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return f

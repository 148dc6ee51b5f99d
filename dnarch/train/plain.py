"""Training a plain classifier (no masks, no budget): the loop behind fine-tuning and the baselines.

Same optimiser recipe as the DNArch trainer (AdamW, decay on matrices only, warm-up + cosine), so that
baselines differ from DNArch in the architecture and not in the recipe.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from dnarch.data import DataBundle
from dnarch.train.trainer import evaluate, pick_device, seed_everything, warmup_cosine


def plain_param_groups(net: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Matrices and kernels (ndim >= 2) with decay; biases and norm parameters without."""
    params = [p for p in net.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "lr": lr, "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "lr": lr, "weight_decay": 0.0},
    ]


def train_classifier(
    net: nn.Module,
    data: DataBundle,
    epochs: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    weight_decay: float = 1e-2,
    warmup_epochs: int = 0,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    desc: str = "train",
) -> list[dict[str, Any]]:
    """Train ``net`` (x: (B, C, *S) -> logits (B, K)) on ``data`` with cross-entropy for ``epochs``.

    Returns one row per epoch (``epoch``, ``train_loss``, ``train_acc``, ``test_acc``), row 0 being the
    untrained accuracy. The network is left in eval mode on the chosen device.
    """
    if epochs < 0 or lr <= 0 or batch_size < 1 or weight_decay < 0 or warmup_epochs < 0:
        raise ValueError(
            f"need epochs >= 0, lr > 0, batch_size >= 1, weight_decay >= 0, warmup_epochs >= 0; "
            f"got {epochs}, {lr}, {batch_size}, {weight_decay}, {warmup_epochs}"
        )
    seed_everything(seed)
    dev = pick_device(device)
    net.to(dev)
    history: list[dict[str, Any]] = [
        {"epoch": 0, "test_acc": evaluate(net, data.x_test, data.y_test, dev)}
    ]
    if epochs == 0:
        net.eval()
        return history
    loader = DataLoader(
        TensorDataset(data.x_train, data.y_train), batch_size=batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(seed), drop_last=len(data.x_train) > batch_size,
    )  # fmt: skip
    opt = torch.optim.AdamW(plain_param_groups(net, lr, weight_decay))
    steps = len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, warmup_cosine(epochs * steps, warmup_epochs * steps)
    )
    bar = tqdm(total=epochs * steps, desc=desc, disable=not progress, unit="step")
    for epoch in range(epochs):
        net.train()
        loss_sum = correct = seen = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(dev), yb.to(dev)
            logits = net(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            value = float(loss.detach())
            loss_sum += value * len(yb)
            correct += float((logits.detach().argmax(-1) == yb).sum())
            seen += len(yb)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{value:.3f}")
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": loss_sum / seen,
                "train_acc": correct / seen,
                "test_acc": evaluate(net, data.x_test, data.y_test, dev),
            }
        )
    bar.close()
    net.eval()
    return history

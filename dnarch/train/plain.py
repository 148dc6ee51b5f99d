"""Training a plain network (no masks, no budget) for any task: the loop behind fine-tuning and the
baselines.

Same optimiser recipe as the DNArch trainer (AdamW, decay on matrices only, warm-up + cosine), so that
baselines differ from DNArch in the architecture and not in the recipe.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from dnarch.data import DataBundle
from dnarch.train.metrics import Tally, evaluate_task, target_peak, task_loss
from dnarch.train.trainer import adamw, pick_device, seed_everything, warmup_cosine


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
    """Train ``net`` on ``data`` for ``epochs`` with the loss of ``data.task`` (``metrics.task_loss``):
    x (B, C, *S) -> logits (B, K), or per position (B, K, *S).

    Returns one row per epoch: ``epoch``, ``train_loss``, ``train_acc`` (not for regression) and the
    test metrics of the task as ``test_<name>`` (``test_acc``; ``test_miou``; ``test_mse`` and
    ``test_psnr``), row 0 being the untrained network's. The network is left in eval mode on the
    chosen device.
    """
    if epochs < 0 or lr <= 0 or batch_size < 1 or weight_decay < 0 or warmup_epochs < 0:
        raise ValueError(
            f"need epochs >= 0, lr > 0, batch_size >= 1, weight_decay >= 0, warmup_epochs >= 0; "
            f"got {epochs}, {lr}, {batch_size}, {weight_decay}, {warmup_epochs}"
        )
    seed_everything(seed)
    dev = pick_device(device)
    net.to(dev)
    task, k = data.task, data.num_classes
    peak = target_peak(data.y_test) if task == "regress" else 1.0

    def test_row() -> dict[str, float]:
        metrics = evaluate_task(net, data.x_test, data.y_test, dev, task, k, peak)
        return {f"test_{name}": value for name, value in metrics.items()}

    history: list[dict[str, Any]] = [{"epoch": 0, **test_row()}]
    if epochs == 0:
        net.eval()
        return history
    loader = DataLoader(
        TensorDataset(data.x_train, data.y_train), batch_size=batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(seed), drop_last=len(data.x_train) > batch_size,
    )  # fmt: skip
    opt = adamw(plain_param_groups(net, lr, weight_decay), dev)
    steps = len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, warmup_cosine(epochs * steps, warmup_epochs * steps)
    )
    bar = tqdm(total=epochs * steps, desc=desc, disable=not progress, unit="step")
    for epoch in range(epochs):
        net.train()
        loss_sum = seen = 0.0
        tally = Tally(task, k, peak)
        for xb, yb in loader:
            xb, yb = xb.to(dev), yb.to(dev)
            logits = net(xb)
            loss = task_loss(task, logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            value = float(loss.detach())
            loss_sum += value * len(yb)
            if task != "regress":
                tally.add(logits.detach(), yb)
            seen += len(yb)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{value:.3f}")
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": loss_sum / seen,
                **({} if task == "regress" else {"train_acc": tally.result()["acc"]}),
                **test_row(),
            }
        )
    bar.close()
    net.eval()
    return history

"""Training a fixed network (no masks, no budget) through the one ``Trainer``: the baselines, the
fine-tuning after pruning and ``dnarch finetune``. The same loop, optimiser recipe (AdamW, decay on
matrices only, warm-up + cosine), data order and fault handling as a DNArch run, by construction:
baselines differ from DNArch in the architecture and not in the recipe.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from dnarch.config import TrainConfig
from dnarch.data import DataBundle
from dnarch.train.metrics import evaluate_task, target_peak
from dnarch.train.objective import FixedNet, TaskObjective
from dnarch.train.runtime import pick_device, seed_everything
from dnarch.train.trainer import Trainer

# the per-epoch columns a fixed network's history keeps (with its test metrics)
_COLUMNS = ("epoch", "train_loss", "train_acc")

__all__ = ["FixedNet", "TaskObjective", "train_fixed"]


def train_fixed(
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
    x (B, C, *S) -> logits (B, K), or per position (B, K, *S). Seeds every generator with ``seed``.

    Returns one row per epoch: ``epoch``, ``train_loss``, ``train_acc`` (not for regression) and the
    test metrics of the task as ``test_<name>`` (``test_acc``; ``test_miou``; ``test_mse`` and
    ``test_psnr``), row 0 being the untrained network's. The network is left in eval mode on the
    chosen device. Bad settings raise ``ValueError`` (``ConfigError``).
    """
    if epochs < 0:
        raise ValueError(f"need epochs >= 0, got {epochs}")
    seed_everything(seed)
    dev = pick_device(device)
    net.to(dev)
    task, k = data.task, data.num_classes
    peak = target_peak(data.y_test) if task == "regress" else 1.0
    first = evaluate_task(net, data.x_test, data.y_test, dev, task, k, peak)
    history: list[dict[str, Any]] = [{"epoch": 0, **{f"test_{n}": v for n, v in first.items()}}]
    if epochs > 0:
        cfg = TrainConfig(
            epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
            warmup_epochs=warmup_epochs, seed=seed, device=str(dev), tensorboard=False,
            freeze_arch_fraction=0.0,
        )  # fmt: skip
        model = FixedNet(net, task, k)
        trainer = Trainer(model, TaskObjective(), data, cfg, progress=progress, desc=desc)
        for row in trainer.fit():
            history.append({c: row[c] for c in row if c in _COLUMNS or c.startswith("test_")})
    net.eval()
    return history

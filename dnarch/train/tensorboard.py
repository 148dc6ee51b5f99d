"""TensorBoard logging of a run: losses, accuracies, cost against its target, and every soft size of
the architecture per block, one point per epoch. The CSV stays the plain record; this is for looking."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dnarch.train.trainer import TrainState


class TensorBoardLogger:
    """Writes event files into ``log_dir`` (view with ``tensorboard --logdir RUN_DIR``)."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    def on_epoch_end(self, state: TrainState) -> None:
        row, epoch, w = state.row, state.epoch, self.writer
        for key in ("train_loss", "train_penalty", "train_acc", "test_acc"):
            if key in row:
                w.add_scalar(f"{'accuracy' if key.endswith('acc') else 'loss'}/{key}", row[key], epoch)
        w.add_scalar("cost/cost", row["cost"], epoch)
        if row["target"] == row["target"]:  # not NaN: a budget is set
            w.add_scalar("cost/target", row["target"], epoch)
        for key, value in soft_sizes(state.model).items():
            w.add_scalar(key, value, epoch)
        w.flush()

    def close(self) -> None:
        self.writer.close()


@torch.no_grad()
def soft_sizes(model: Any) -> dict[str, float]:
    """The differentiable architecture as flat scalars: ``arch/residual_width`` and, per block ``l``,
    ``arch/block{l}/depth``, ``kernel_axis{a}``, ``hidden`` and ``resolution_axis{a}``."""
    sizes = model.arch_sizes(hard=False)
    out = {"arch/residual_width": float(sizes.residual)}
    for i, (d, k, h, r) in enumerate(
        zip(sizes.depth, sizes.kernel, sizes.hidden, sizes.resolution, strict=True)
    ):
        out[f"arch/block{i}/depth"] = float(d)
        out[f"arch/block{i}/hidden"] = float(h)
        for a, v in enumerate(k.reshape(-1).tolist()):
            out[f"arch/block{i}/kernel_axis{a}"] = v
        for a, v in enumerate(r.reshape(-1).tolist()):
            out[f"arch/block{i}/resolution_axis{a}"] = v
    return out

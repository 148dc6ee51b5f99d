"""TensorBoard logging of a run: losses, accuracies, cost against its target, and every soft size of
the architecture per block, one point per epoch. The CSV stays the plain record; this is for looking."""

from __future__ import annotations

import threading
from pathlib import Path

from dnarch.train.callbacks import soft_sizes
from dnarch.train.trainer import TrainState


def _quiet_writer_threads(previous: object) -> None:
    """TensorBoard writes from a thread; when that fails (a full disk), the thread's traceback would
    be printed beside the run's one-line error. The writer raises the same error again in the run's
    thread at its next write or flush, so the thread's own report is dropped."""

    def hook(args: threading.ExceptHookArgs) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread":
            return
        previous(args)  # type: ignore[operator]

    hook.dnarch_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class TensorBoardLogger:
    """Writes event files into ``log_dir`` (view with ``tensorboard --logdir RUN_DIR``)."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if not getattr(threading.excepthook, "dnarch_quiet", False):
            _quiet_writer_threads(threading.excepthook)
        self.writer = SummaryWriter(str(log_dir))

    def on_epoch_end(self, state: TrainState) -> None:
        row, epoch, w = state.row, state.epoch, self.writer
        for key, value in row.items():  # losses, and the task's metrics (accuracy, IoU, PSNR)
            if key.startswith(("train_", "test_")):
                group = "loss" if key in ("train_loss", "train_penalty") else "score"
                w.add_scalar(f"{group}/{key}", value, epoch)
        w.add_scalar("cost/cost", row["cost"], epoch)
        if row["target"] == row["target"]:  # not NaN: a budget is set
            w.add_scalar("cost/target", row["target"], epoch)
        for key, value in soft_sizes(state.model).items():
            w.add_scalar(f"arch/{key}", value, epoch)
        w.flush()

    def close(self) -> None:
        self.writer.close()

"""What each task minimises and how it is scored, for every trainer and evaluation in dnarch.

- ``classify``: cross-entropy on logits (B, K) against labels (B,); scored by accuracy.
- ``segment``: cross-entropy on per-position logits (B, K, *S) against labels (B, *S); scored by mean
  IoU over the classes that occur (in the labels or the predictions), with per-position accuracy too.
- ``regress``: mean squared error on per-position values (B, C, *S) against targets of the same shape;
  scored by PSNR, ``10 log10(peak^2 / MSE)`` with ``peak`` the range of the test targets.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnarch.train.distributed import World, all_reduce_sum

# the score that sums up each task: (row key, words for people); higher is better for every one
SCORES: dict[str, tuple[str, str]] = {
    "classify": ("acc", "accuracy"),
    "segment": ("miou", "mean IoU"),
    "regress": ("psnr", "PSNR"),
}


def task_loss(task: str, out: Tensor, y: Tensor) -> Tensor:
    """Scalar training loss. out: (B, K) or (B, K, *S); y: labels (B,) / (B, *S), or (B, K, *S) values."""
    if task == "regress":
        return F.mse_loss(out, y)
    if task in ("classify", "segment"):
        return F.cross_entropy(out, y)
    raise ValueError(f"unknown task {task!r}; choose classify, segment or regress")


def format_score(task: str, value: float) -> str:
    """A task's score as people read it: '96.50%' or '24.31 dB'."""
    return f"{value:.2f} dB" if task == "regress" else f"{100 * value:.2f}%"


class Tally:
    """Running sums over batches, turned into the task's metrics by ``result()``.

    Args:
        task: 'classify', 'segment' or 'regress'; num_classes: K (for mean IoU);
        peak: the targets' range, for PSNR (regression only).
    """

    def __init__(self, task: str, num_classes: int, peak: float = 1.0) -> None:
        if task not in SCORES:
            raise ValueError(f"unknown task {task!r}; choose classify, segment or regress")
        self.task, self.k, self.peak = task, num_classes, peak
        self.correct = self.count = self.squared = 0.0
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)

    @torch.no_grad()
    def add(self, out: Tensor, y: Tensor) -> None:
        """out: the model's output for a batch; y: its targets (shapes as ``task_loss``)."""
        if self.task == "regress":
            self.squared += float((out.float() - y).square().sum())
            self.count += y.numel()
            return
        pred = out.argmax(1)  # (B,) or (B, *S)
        self.correct += float((pred == y).sum())
        self.count += y.numel()
        if self.task == "segment":
            pairs = (y.reshape(-1) * self.k + pred.reshape(-1)).cpu()
            counts = torch.bincount(pairs, minlength=self.k * self.k)
            self.confusion += counts.reshape(
                self.k, self.k
            ).double()  # rows: truth, cols: prediction

    def merge(self, world: World) -> None:
        """Sum this tally with the other data-parallel ranks' (each then holds the total)."""
        if not world.active:
            return
        packed = torch.cat(
            [torch.tensor([self.correct, self.count, self.squared]), self.confusion.reshape(-1)]
        ).double()
        packed = all_reduce_sum(packed, world)
        self.correct, self.count, self.squared = packed[:3].tolist()
        self.confusion = packed[3:].reshape(self.k, self.k)

    def result(self) -> dict[str, float]:
        """classify: acc; segment: acc, miou; regress: mse, psnr (NaN before any batch)."""
        n = max(self.count, 1.0)
        if self.task == "regress":
            mse = self.squared / n if self.count else math.nan
            psnr = 10 * math.log10(self.peak**2 / mse) if mse > 0 else math.inf
            return {"mse": mse, "psnr": psnr if self.count else math.nan}
        out = {"acc": self.correct / n if self.count else math.nan}
        if self.task == "segment":
            out["miou"] = mean_iou(self.confusion)
        return out


def mean_iou(confusion: Tensor) -> float:
    """Mean over classes of TP / (TP + FP + FN), over the classes that occur in the truth or the
    predictions. confusion: (K, K), rows truth, columns prediction."""
    tp = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    if not present.any():
        return math.nan
    return float((tp[present] / union[present]).mean())


def target_peak(y: Tensor) -> float:
    """The range of regression targets (PSNR's peak); 1 for a constant target."""
    span = float(y.max() - y.min()) if y.numel() else 0.0
    return span if span > 0 else 1.0


EVAL_BYTES = 16 * 2**20
"""How many bytes the widest activation of one evaluation batch may take (``eval_batch``). Past the
CPU's caches a larger batch runs slower per sample. Measured (1,000 test samples, 1 thread, two other
jobs on a 2-core machine, CPU ms in batches of 16 / 32 / 64 / 128): a learned Fashion-MNIST 2D
network, 64 channels at 28x28 (200 KB a sample), 1,440 / 1,441 / 1,376 / 1,834; on sequences of 784,
24 channels (75 KB), 786 / 592 / 541 / 494 (and 651 at 256); the plain CNN for them, 9 channels,
471 / 385 / 354 / 333, 392 at 256 and 540 at 512 (METHOD-NOTES, Speed)."""

EVAL_BATCHES = (16, 128)
"""The smallest and largest batch ``eval_batch`` picks: MNIST-1D's tiny samples would run a little
faster in larger batches still (its masked network 54 ms at 128, 39 at 256 or 512), and other
networks slower."""


def eval_batch(model: nn.Module, x: Tensor, device: torch.device) -> int:
    """The evaluation batch for ``model`` on samples like x (N, C, *S): the largest power of two
    within ``EVAL_BATCHES`` whose widest activation (the largest output of any of the model's
    modules, found by one sample's forward pass in eval mode, without gradients; the model's mode
    is restored) fits ``EVAL_BYTES``."""
    widest = 0

    def hook(_module: nn.Module, _inputs: Any, out: Any) -> None:
        nonlocal widest
        if isinstance(out, Tensor) and out.dim() > 0:
            widest = max(widest, out[0].numel() * out.element_size())

    was = model.training
    model.eval()
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x[:1].to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    lo, hi = EVAL_BATCHES
    fits = EVAL_BYTES // max(widest, 1)
    return int(min(hi, max(lo, 2 ** math.floor(math.log2(max(fits, 1))))))


@torch.no_grad()
def evaluate_task(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    device: torch.device,
    task: str,
    num_classes: int,
    peak: float = 1.0,
    batch: int | None = None,
    world: World | None = None,
) -> dict[str, float]:
    """The task's metrics of ``model`` on x (N, C, *S) and y (N,), (N, *S) or (N, K, *S) as the task
    wants (``task_loss``), in eval mode (its mode is restored after); see ``Tally.result``.
    batch: samples per forward pass (default: ``eval_batch``'s choice for the model).
    world: data-parallel ranks, if any; each evaluates its contiguous share of x and the tallies are
    summed (every rank must call this together)."""
    was = model.training
    model.eval()
    tally = Tally(task, num_classes, peak)
    rank, size = (world.rank, world.size) if world is not None else (0, 1)
    lo, hi = rank * len(x) // size, (rank + 1) * len(x) // size
    if batch is None:
        batch = eval_batch(model, x, device) if hi > lo else 1
    for i in range(lo, hi, batch):
        j = min(i + batch, hi)
        tally.add(model(x[i:j].to(device)).cpu(), y[i:j])
    if world is not None:
        tally.merge(world)
    model.train(was)
    return tally.result()


def score_lines(s: dict[str, Any]) -> list[str]:
    """The test score lines of a run summary (``summary.json``): accuracy; or mean IoU and
    per-position accuracy; or PSNR and MSE; each for the masked and the exported network."""
    task = s.get("task", "classify")
    if task == "classify":
        return [
            f"test accuracy: {100 * s['test_accuracy']:.2f}% (exported network: "
            f"{100 * s['static_test_accuracy']:.2f}%)"
        ]
    out = [
        f"test {SCORES[task][1]}: {format_score(task, s['test_score'])} (exported network: "
        f"{format_score(task, s['static_test_score'])})"
    ]
    if task == "segment":
        out.append(
            f"per-position accuracy: {100 * s['test_accuracy']:.2f}% (exported network: "
            f"{100 * s['static_test_accuracy']:.2f}%)"
        )
    else:
        out.append(
            f"test MSE: {s['test_metrics']['mse']:.4g} (exported network: "
            f"{s['static_test_metrics']['mse']:.4g})"
        )
    return out

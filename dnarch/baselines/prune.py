"""Baseline: prune-then-finetune with Torch-Pruning (Fang et al., CVPR 2023, pip ``torch-pruning``).

The pipeline a user would run instead of DNArch: train the maximal network (architecture frozen), export
it as a plain network, remove whole channels by L2 magnitude over Torch-Pruning's dependency groups (the
residual stream's channels are pruned together through every block) until the counted MACs reach the
target, then fine-tune. Its compute is all three steps; the benchmark adds them up.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dnarch.data import DataBundle
from dnarch.export.finetune import recompute_bn_stats
from dnarch.export.summary import counted_macs
from dnarch.functional.conv import depthwise_conv
from dnarch.train.metrics import evaluate_task
from dnarch.train.plain import train_classifier
from dnarch.train.trainer import pick_device


@dataclass
class PruneResult:
    """The pruned and fine-tuned network, its counted cost, and the seconds each step took."""

    net: nn.Module
    macs: int
    params: int
    test_accuracy: float
    accuracy_after_prune: float
    prune_seconds: float
    finetune_seconds: float
    history: list[dict[str, Any]]


def prune_to_macs(
    net: nn.Module,
    in_channels: int,
    input_shape: tuple[int, ...],
    target_macs: float,
    steps: int = 100,
    ignored: list[nn.Module] | None = None,
) -> nn.Module:
    """A pruned copy of ``net`` whose counted MACs per sample are at most ``target_macs``.

    Channels are removed in up to ``steps`` equal rounds (uniform ratio per layer, L2 magnitude
    importance per dependency group); the loop stops at the first round at or under the target, so the
    result lands within one round's step of it. ``ignored``: layers whose outputs must stay (the head).
    """
    try:
        import torch_pruning as tp
    except ImportError as err:  # pragma: no cover - the bench extra
        raise ImportError(
            "the prune baseline needs Torch-Pruning: pip install 'dnarch[bench]'"
        ) from err
    pruned = copy.deepcopy(net).cpu().eval()
    example = torch.zeros(1, in_channels, *input_shape)
    keep: list[nn.Module]
    if ignored is None:
        keep = [m for m in pruned.modules() if isinstance(m, nn.Linear)]
        keep = keep[-1:]
    else:  # the caller named layers of ``net``; find their copies by name
        names = {id(m): n for n, m in net.named_modules()}
        wanted = {names[id(m)] for m in ignored}
        keep = [m for n, m in pruned.named_modules() if n in wanted]
    pruner = tp.pruner.MetaPruner(
        pruned,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=0.98,
        iterative_steps=steps,
        ignored_layers=keep,
    )
    for _ in range(steps):
        if counted_macs(pruned, in_channels, input_shape) <= target_macs:
            break
        pruner.step()
    return pruned


class _AutoDepthwise(nn.Module):
    """A depthwise 'same' conv run by dnarch's measured backend choice (FFT for long kernels), with
    the wrapped conv's own parameters: training it trains the conv."""

    def __init__(self, conv: nn.modules.conv._ConvNd) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv(x, self.conv.weight.squeeze(1), self.conv.bias, "auto")


@contextmanager
def fast_depthwise(net: nn.Module) -> Iterator[None]:
    """Within the block, every depthwise 'same' convolution of ``net`` with more than 3 taps per axis
    runs through ``depthwise_conv(..., "auto")``: PyTorch's direct CPU kernel takes seconds per batch
    for a 783-tap kernel, an FFT milliseconds. Same function, same parameters; restored on exit."""
    swapped = []
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if (
                isinstance(child, nn.Conv1d | nn.Conv2d | nn.Conv3d)
                and child.groups == child.in_channels == child.out_channels
                and all(k % 2 == 1 and k > 3 for k in child.kernel_size)
                and child.padding == tuple(k // 2 for k in child.kernel_size)
                and all(s == 1 for s in child.stride)
                and all(d == 1 for d in child.dilation)
                and child.padding_mode == "zeros"
            ):
                setattr(parent, name, _AutoDepthwise(child))
                swapped.append((parent, name, child))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def prune_then_finetune(
    net: nn.Module,
    data: DataBundle,
    target_macs: float,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> PruneResult:
    """Prune a trained plain ``net`` (x: (B, C, *S) -> logits) to ``target_macs``, recompute its BN
    statistics, and fine-tune it for ``epochs``. ``net`` itself is left untouched. Classification
    only (a pruned dense head is not supported)."""
    if data.dense:
        raise ValueError(f"prune-then-finetune supports classification only, not {data.task!r}")
    shape = data.input_shape
    start = time.perf_counter()
    pruned = prune_to_macs(net, data.in_channels, shape, target_macs)
    dev = pick_device(device)
    pruned.to(dev)
    with fast_depthwise(pruned):
        recompute_bn_stats(pruned, data.x_train)
        args = (data.x_test, data.y_test, dev, data.task, data.num_classes)
        after_prune = evaluate_task(pruned, *args)["acc"]
    prune_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with fast_depthwise(pruned):
        history = train_classifier(
            pruned, data, epochs, lr, batch_size=batch_size, seed=seed, device=device,
            progress=progress, desc="finetune pruned",
        )  # fmt: skip
    finetune_seconds = time.perf_counter() - start
    pruned.cpu().eval()
    return PruneResult(
        net=pruned,
        macs=counted_macs(pruned, data.in_channels, shape),
        params=sum(p.numel() for p in pruned.parameters()),
        test_accuracy=float(history[-1]["test_acc"]),
        accuracy_after_prune=after_prune,
        prune_seconds=prune_seconds,
        finetune_seconds=finetune_seconds,
        history=history,
    )

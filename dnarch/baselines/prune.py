"""Baseline: prune-then-finetune with Torch-Pruning (Fang et al., CVPR 2023, pip ``torch-pruning``).

The pipeline a user would run instead of DNArch: train the maximal network (architecture frozen), export
it as a plain network, remove whole channels by L2 magnitude over Torch-Pruning's dependency groups (the
residual stream's channels are pruned together through every block) until the counted MACs reach the
target, then fine-tune. Its compute is all three steps; the benchmark adds them up.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dnarch.data import DataBundle
from dnarch.export.static import Resample, ZeroChannels, conv_backend
from dnarch.flops import counted_macs
from dnarch.train.finetune import recompute_bn_stats
from dnarch.train.fixed import train_fixed
from dnarch.train.metrics import evaluate_task
from dnarch.train.runtime import pick_device


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
    with conv_backend(pruned, "direct"):  # Torch-Pruning traces real convolutions
        pruner = tp.pruner.MetaPruner(
            pruned,
            example,
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=0.98,
            iterative_steps=steps,
            ignored_layers=keep,
            customized_pruners={
                ZeroChannels: _zero_channels_pruner(tp),
                Resample: _resample_pruner(tp),
            },
        )
        for _ in range(steps):
            if counted_macs(pruned, in_channels, input_shape) <= target_macs:
                break
            pruner.step()
    return pruned


def _zero_channels_pruner(tp: Any) -> Any:
    """Torch-Pruning's pruner for ``ZeroChannels``: pruning its output channels lowers their count;
    it has no input channels of its own (it reads only its input's shape)."""

    class Pruner(tp.pruner.function.BasePruningFunc):  # type: ignore[misc, name-defined]
        def prune_out_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
            assert isinstance(layer, ZeroChannels)
            layer.n -= len(set(idxs))
            return layer

        def prune_in_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
            return layer

        def get_out_channels(self, layer: nn.Module) -> int:
            assert isinstance(layer, ZeroChannels)
            return layer.n

        def get_in_channels(self, layer: nn.Module) -> None:
            return None

    return Pruner()


def _resample_pruner(tp: Any) -> Any:
    """Torch-Pruning's pruner for ``Resample``: it maps each channel on its own, so its input and
    output channels are pruned as one (as a norm's are) and only its count changes. Without it,
    Torch-Pruning traced the einsums inside and lost the channels' order."""

    class Pruner(tp.pruner.function.BasePruningFunc):  # type: ignore[misc, name-defined]
        def prune_out_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
            assert isinstance(layer, Resample) and layer.channels is not None
            layer.channels -= len(set(idxs))
            return layer

        prune_in_channels = prune_out_channels  # one set of channels (Torch-Pruning's convention)

        def get_out_channels(self, layer: nn.Module) -> int | None:
            assert isinstance(layer, Resample)
            return layer.channels

        get_in_channels = get_out_channels

    return Pruner()


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
    recompute_bn_stats(pruned, data.x_train)
    args = (data.x_test, data.y_test, dev, data.task, data.num_classes)
    after_prune = evaluate_task(pruned, *args)["acc"]
    prune_seconds = time.perf_counter() - start
    start = time.perf_counter()
    history = train_fixed(
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

"""MACs of a module as PyTorch's FLOP counter counts them: the one count every table, baseline and
test compares against (a leaf module, so that models and baselines can size themselves by it)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def counted_macs(net: nn.Module, in_channels: int, input_shape: tuple[int, ...]) -> int:
    """MACs per sample of ``net``, counted by ``torch.utils.flop_counter`` (FLOPs / 2) in eval mode
    on one zero input (1, in_channels, *input_shape)."""
    was = net.training
    net.eval()
    device = next(net.parameters()).device
    # exported depthwise convs run direct under a dispatch mode: the counter sees convolutions
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, in_channels, *input_shape, device=device))
    net.train(was)
    return int(counter.get_total_flops() // 2)

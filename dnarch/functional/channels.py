"""Channel-axis helpers shared by the masked network and the exported one (plain PyTorch)."""

from __future__ import annotations

import torch
from torch import Tensor


def pad_channels(x: Tensor, c: int) -> Tensor:
    """x: (B, c', *S) with c' <= c -> (B, c, *S), zero channels appended (a stream that widens)."""
    extra = c - x.shape[1]
    if extra <= 0:
        return x
    return torch.cat([x, x.new_zeros(x.shape[0], extra, *x.shape[2:])], 1)

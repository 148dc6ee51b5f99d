"""Dropout whose mask costs a quarter of the random numbers on a CPU.

PyTorch's CPU dropout draws one Mersenne-Twister number per element (``bernoulli_``): about 7 ns each,
12 ms for one (64, 32, 28, 28) activation, as much as the block's pointwise layers. Here one 64-bit
draw gives four 15-bit uniforms, so the drop probability is ``p`` rounded to a multiple of 2**-15
(0.1 becomes 0.100006). On other devices ``F.dropout`` is used (their generators are fast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 15  # a 16-bit slice of a non-negative int64 draw: the top one has 15 random bits


def passes_through(p: float, training: bool) -> bool:
    """Whether dropout at ``p`` returns its input as it is: in evaluation, or with ``p`` = 0."""
    return not training or p == 0


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """x with each element zeroed with probability ``p`` (to 2**-15) and the rest scaled by
    ``1 / (1 - p)``, in training; x itself otherwise. Any shape; same shape out."""
    if passes_through(p, training):
        return x
    if x.device.type != "cpu" or not 0 < p < 1:
        return F.dropout(x, p, True)
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_()  # uniform on [0, 2**63)
    cut = round(p * _LEVELS)
    keep = (words.view(torch.int16)[:n].reshape(x.shape) & (_LEVELS - 1)) >= cut
    return x * (keep * (_LEVELS / (_LEVELS - cut))).to(x.dtype)  # bool times float: one pass


class Dropout(nn.Module):
    """``nn.Dropout`` through ``dropout``. Input (*) -> (*)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def passes_through(self) -> bool:
        """Whether the module returns its input as it is now (``passes_through``)."""
        return passes_through(self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"

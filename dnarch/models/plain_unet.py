"""Baseline for per-position tasks: a plain U-Net-style CNN of standard 3-tap (1D) or 3x3 (2D)
convolutions, scaled in width to match a MACs budget.

Encoder: a 3x3 stem, then one basic residual block per level; every level after the first halves the
resolution (stride 2) and doubles the width up to 4x the base width, with as many levels as
``plain_cnn.stage_count`` gives. Decoder, from the deepest level up: nearest-neighbour upsampling to the
next level's size, a 1x1 convolution to its width, the encoder's features of that level added (skip),
then conv-BN-ReLU. Head: a 1x1 convolution to the outputs at every position.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from dnarch.functional.conv import CONV, NORM
from dnarch.models.plain_cnn import BasicBlock, plain_stem, stage_count, widest_under


class UpBlock(nn.Module):
    """(B, C_deep, *S_deep) and the skip (B, C, *S) -> (B, C, *S)."""

    def __init__(self, c_deep: int, c: int, ndim: int) -> None:
        super().__init__()
        conv, norm = CONV[ndim], NORM[ndim]
        self.reduce = conv(c_deep, c, 1, bias=False)
        self.conv = conv(c, c, 3, padding=1, bias=False)
        self.bn = norm(c)
        self.act = nn.ReLU()

    def forward(self, h: Tensor, skip: Tensor) -> Tensor:
        h = F.interpolate(h, size=skip.shape[2:], mode="nearest")  # (B, C_deep, *S)
        return self.act(self.bn(self.conv(self.reduce(h) + skip)))


class PlainUNet(nn.Module):
    """x: (B, in_channels, *input_shape) -> (B, outputs, *input_shape). 1D or 2D."""

    def __init__(
        self, in_channels: int, outputs: int, input_shape: tuple[int, ...], width: int
    ) -> None:
        super().__init__()
        ndim = len(input_shape)
        self.input_shape, self.width = tuple(input_shape), width
        self.stem = plain_stem(in_channels, input_shape, width, "PlainUNet")
        widths = [width * min(2**s, 4) for s in range(stage_count(self.input_shape))]
        self.down = nn.ModuleList(
            BasicBlock(widths[max(s - 1, 0)], c, 1 if s == 0 else 2, ndim)
            for s, c in enumerate(widths)
        )
        self.up = nn.ModuleList(
            UpBlock(widths[s + 1], widths[s], ndim) for s in reversed(range(len(widths) - 1))
        )
        self.head = CONV[ndim](widths[0], outputs, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        skips = []
        for block in self.down:
            h = block(h)
            skips.append(h)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            h = block(h, skip)
        return self.head(h)  # (B, outputs, *input_shape)


def plain_unet_for_budget(
    in_channels: int, outputs: int, input_shape: tuple[int, ...], macs: float
) -> PlainUNet:
    """The widest ``PlainUNet`` whose counted MACs per sample do not exceed ``macs`` (width >= 1)."""

    def make(w: int) -> PlainUNet:
        return PlainUNet(in_channels, outputs, input_shape, w)

    return make(widest_under(make, in_channels, input_shape, macs))

"""Baseline: a plain ResNet-style CNN of standard 3-tap (1D) or 3x3 (2D) convolutions with fixed
stride-2 downsampling, scaled in width to match a MACs budget.

Stages: a 3x3 stem, then one basic residual block (conv-BN-ReLU-conv-BN + skip) per stage; every stage
after the first halves the resolution (stride 2, with a strided 1x1 projection on the skip) and doubles the
width up to 4x the base width. Stages continue until the smallest spatial size would fall below 5, so
long sequences get a receptive field that spans them (784 -> 7 in 8 stages). The base width may be
fractional: each stage's width is the nearest whole number, so a budget is met to within about a
channel of the widest stage rather than a channel of the base width (up to 18% of the MACs).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from dnarch.flops import counted_macs
from dnarch.functional.conv import CONV, NORM


def stage_count(input_shape: tuple[int, ...]) -> int:
    """Stages such that the smallest spatial size stays >= 5 after halving (at least 1); 32x32 gets
    ResNet-CIFAR's three (32, 16, 8)."""
    n, stages = min(input_shape), 1
    while (n + 1) // 2 >= 5:
        n, stages = (n + 1) // 2, stages + 1
    return stages


class BasicBlock(nn.Module):
    """x: (B, C_in, *S) -> (B, C_out, *S / stride)."""

    def __init__(self, c_in: int, c_out: int, stride: int, ndim: int) -> None:
        super().__init__()
        conv, norm = CONV[ndim], NORM[ndim]
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(c_out)
        self.conv2 = conv(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = norm(c_out)
        self.act = nn.ReLU()
        self.skip: nn.Module = (
            nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False), norm(c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(h)) + self.skip(x))


def plain_stem(
    in_channels: int, input_shape: tuple[int, ...], width: int, who: str
) -> nn.Sequential:
    """The 3x3 conv-BN-ReLU stem of the plain baselines, after checking their arguments (``who``
    names the network in the error). (B, in_channels, *S) -> (B, width, *S)."""
    ndim = len(input_shape)
    if ndim not in (1, 2):
        raise ValueError(f"{who} supports 1D and 2D inputs, got {ndim}D")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    return nn.Sequential(
        CONV[ndim](in_channels, width, 3, padding=1, bias=False), NORM[ndim](width), nn.ReLU()
    )


class PlainCNN(nn.Module):
    """x: (B, in_channels, *input_shape) -> logits (B, num_classes). 1D or 2D."""

    def __init__(
        self, in_channels: int, num_classes: int, input_shape: tuple[int, ...], width: float
    ) -> None:
        super().__init__()
        ndim = len(input_shape)
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        self.input_shape, self.width = tuple(input_shape), width
        # stage s has round(width * min(2^s, 4)) channels (at least 1); the stem the first's
        self.widths = [
            max(1, round(width * min(2**s, 4))) for s in range(stage_count(self.input_shape))
        ]
        c = self.widths[0]
        self.stem = plain_stem(in_channels, input_shape, c, "PlainCNN")
        blocks = []
        for s, c_out in enumerate(self.widths):
            blocks.append(BasicBlock(c, c_out, 1 if s == 0 else 2, ndim))
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(self.stem(x))  # (B, C, *S')
        return self.head(h.flatten(2).mean(-1))


def widest_under(
    make: Callable[[int], nn.Module], in_channels: int, input_shape: tuple[int, ...], macs: float
) -> int:
    """The largest width ``w`` (>= 1) whose network ``make(w)`` counts at most ``macs`` MACs per sample.

    MACs grow monotonically with the width, so a bisection over the width finds it.
    """

    def cost(w: int) -> int:
        return counted_macs(make(w), in_channels, input_shape)

    lo, hi = 1, 2
    while cost(hi) <= macs and hi < 4096:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if cost(mid) <= macs else (lo, mid)
    return lo


def plain_cnn_for_budget(
    in_channels: int, num_classes: int, input_shape: tuple[int, ...], macs: float
) -> PlainCNN:
    """The widest ``PlainCNN`` whose counted MACs per sample do not exceed ``macs``: its base width
    searched in steps of a quarter channel (width >= 1)."""

    def make(quarters: int) -> PlainCNN:
        return PlainCNN(in_channels, num_classes, input_shape, quarters / 4)

    return make(max(4, widest_under(make, in_channels, input_shape, macs)))

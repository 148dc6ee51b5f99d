"""Learned grouping of a channel-mixing (pointwise) layer: DGConv's Kronecker-factor gating.

DGConv (Zhang et al., ICCV 2019) multiplies a layer's weight by a relationship matrix that is a
Kronecker product of 2x2 factors, each ``g * ones + (1 - g) * identity``. Written on the binary digits
of the channel indices, entry (o, i) of that product is

    U(o, i) = prod over bits j of  (1 if bit j of o equals bit j of i, else g_j),

which is defined for any number of rows and columns, so it crops with the layer's widths (the top-left
corner of the maximal U is the cropped layer's U). A factor with ``g_j = 0`` separates the channels
that differ in bit j; with the lowest ``k`` factors at 0 and the rest at 1 the layer is a grouped
convolution with ``2**k`` groups, channel ``i`` in group ``i mod 2**k`` (strided groups).

dnarch orders the factors (the lowest bits close first, ``GroupMask``), so that the groups of every
layer are residue classes modulo a power of two. One channel order, the bit-reversed one
(``bit_reversed_order``), then makes every such class contiguous for every group count at once, and
the exported network holds each pointwise layer as a real grouped ``ConvNd`` on that order. When a
group count does not divide the channel count the classes differ in size by one; the export pads each
to the largest (``group_slots``) with a zero channel, and the cost counts the padding.

During training a cropped grouped layer runs grouped (``grouped_pointwise``) where that was measured
faster than the dense masked product on this device and shape (``choose_mixing``), dense elsewhere.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from dnarch.functional import conv as fconv


def relation(rows: int, cols: int, factors: Tensor) -> Tensor:
    """DGConv's relationship matrix on channel indices. factors: (K,) gate per bit, bit 0 first.

    Returns (rows, cols): ``prod_j (1 if bit j of o == bit j of i else factors[j])``.
    """
    o = torch.arange(rows, device=factors.device)[:, None]
    i = torch.arange(cols, device=factors.device)[None, :]
    out = torch.ones(rows, cols, dtype=factors.dtype, device=factors.device)
    for j in range(factors.numel()):
        differ = (((o >> j) ^ (i >> j)) & 1).to(factors.dtype)  # (rows, cols) 0/1
        out = out * (1 + differ * (factors[j] - 1))
    return out


def bit_reverse(value: int, bits: int) -> int:
    """``value``'s lowest ``bits`` binary digits in reverse order."""
    return int(format(value, f"0{bits}b")[::-1], 2) if bits else 0


def bit_reversed_order(n: int, bits: int) -> list[int]:
    """Channels 0..n-1 sorted by (bit-reversed lowest ``bits`` digits, the rest). For every
    ``g = 2**k <= 2**bits`` the residue classes modulo ``g`` are contiguous in this order, in the
    order ``group_slots`` lays them out. Returns the original channel at each position."""
    return sorted(range(n), key=lambda i: (bit_reverse(i % (1 << bits), bits), i >> bits))


def group_slots(channels: list[int], groups: int) -> list[int]:
    """The input (or output) slots of a grouped layer with ``groups`` groups (a power of two).

    channels: the original channel index at each position of the layer's input. Group ``s`` holds the
    positions whose channel is ``bit_reverse(s) mod groups``, in position order, padded with -1 to
    ``ceil(len(channels) / groups)`` slots. Returns the position in each slot (-1: a zero channel).
    """
    k = int(math.log2(groups))
    if 1 << k != groups:
        raise ValueError(f"group count must be a power of two, got {groups}")
    size = -(-len(channels) // groups)
    slots: list[int] = []
    for s in range(groups):
        r = bit_reverse(s, k)
        members = [p for p, ch in enumerate(channels) if ch % groups == r]
        slots += members + [-1] * (size - len(members))
    return slots


def pack_grouped(
    dense: Tensor, row_slots: list[int], col_slots: list[int], groups: int, check: bool = True
) -> Tensor:
    """A grouped layer's weight from its dense (masked) matrix (differentiable).

    dense: (rows, cols), zero between channels of different groups (``check`` raises otherwise).
    Slots from ``group_slots`` (-1: a zero row or column). Returns (len(row_slots),
    len(col_slots) // groups): the diagonal blocks, the weight layout of ``ConvNd(..., groups=groups)``
    without its kernel axes.
    """
    padded = F.pad(dense, (0, 1, 0, 1))  # index -1 reads the zero row / column
    nr, nc = len(row_slots) // groups, len(col_slots) // groups
    rows = _index(tuple(row_slots), dense.device).view(groups, nr, 1)
    cols = _index(tuple(col_slots), dense.device).view(groups, 1, nc)
    blocks = padded[rows, cols]  # (groups, nr, nc)
    if check:  # nothing outside the diagonal blocks (exactly: closed factors are exact zeros)
        inside = torch.zeros_like(padded, dtype=torch.bool)
        inside[rows, cols] = True
        if bool((padded[~inside] != 0).any()):
            raise ValueError("the weight connects channels of different groups")
    return blocks.reshape(groups * nr, nc)


def take_slots(values: Tensor, slots: list[int]) -> Tensor:
    """values: (n,) -> (len(slots),), zero where a slot is -1 (a padded channel's bias)."""
    return F.pad(values, (0, 1))[_index(tuple(slots), values.device)]


@functools.lru_cache(maxsize=1024)
def _index(values: tuple[int, ...], device: torch.device) -> Tensor:
    """An index tensor on ``device``, made once (no host-to-device copy per forward)."""
    return torch.tensor(values, device=device)


@functools.lru_cache(maxsize=256)
def _layout(rows: int, cols: int, groups: int) -> tuple[list[int], list[int], list[int]]:
    """Row slots, column slots, and each row's slot, for channels in their natural order."""
    row_slots = group_slots(list(range(rows)), groups)
    return (
        row_slots,
        group_slots(list(range(cols)), groups),
        [row_slots.index(r) for r in range(rows)],
    )


def grouped_pointwise(x: Tensor, weight: Tensor, bias: Tensor, groups: int) -> Tensor:
    """The 1x1 layer ``weight`` (rows, cols; zero between groups), bias (rows,), run as a grouped
    convolution on padded groups. x: (B, cols, *S) -> (B, rows, *S), equal to the dense product."""
    rows, cols = weight.shape
    row_slots, col_slots, back = _layout(rows, cols, groups)
    w = pack_grouped(weight, row_slots, col_slots, groups, check=False)
    idx = _index(tuple(c if c >= 0 else cols for c in col_slots), x.device)
    xin = torch.cat([x, torch.zeros_like(x[:, :1])], 1).index_select(1, idx)
    b = take_slots(bias, row_slots)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[x.ndim - 2]
    out = conv(xin, w.reshape(*w.shape, *([1] * (x.ndim - 2))), b, groups=groups)
    return out.index_select(1, _index(tuple(back), x.device))


def choose_mixing(x: Tensor, weight: Tensor, groups: int, verdicts: fconv.Verdicts) -> str:
    """'grouped' or 'dense': the faster way to run a grouped 1x1 layer for these shapes on this
    device, forward and backward, timed once on 4 samples and kept in ``verdicts`` beside the conv backend's
    (``functional.conv.Verdicts``). Widths are bucketed by quarter octaves (one verdict covers widths
    within ~19%, as the widths move all through training). Under deterministic algorithms: 'dense',
    untimed."""
    rows, cols = weight.shape
    buckets = ("groups", groups, round(4 * math.log2(cols)), round(4 * math.log2(rows)))
    key = (x.device.type, x.dtype, tuple(x.shape[2:]), buckets)

    def decide() -> str:
        if torch.are_deterministic_algorithms_enabled():
            return "dense"
        xs = x[:4].detach()
        w = weight.detach().requires_grad_(True)
        b = torch.zeros(rows, device=x.device, dtype=x.dtype, requires_grad=True)
        ones = [1] * (x.ndim - 2)
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[x.ndim - 2]

        def dense() -> None:
            conv(xs, w.reshape(rows, cols, *ones), b).sum().backward()

        def grouped() -> None:
            grouped_pointwise(xs, w, b, groups).sum().backward()

        with torch.enable_grad():  # the layer may first be met under no_grad (evaluation)
            t_dense = fconv._time(dense, x.device)
            t_grouped = fconv._time(grouped, x.device)
        return "grouped" if t_grouped < t_dense else "dense"

    return verdicts.remember(key, decide)

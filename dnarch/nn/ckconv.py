"""Depthwise continuous-kernel convolution with a learnable Gaussian kernel extent (FlexConv-style)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import torch
from torch import Tensor, nn

from dnarch.functional import conv as fconv
from dnarch.functional import masks as fm
from dnarch.functional.channels import leading
from dnarch.functional.memo import made_once
from dnarch.nn.kernelnet import KernelNet, KernelNets, SharedKernelNet
from dnarch.nn.masks import GaussianKernelMask


def centred(small: Tensor, grid: Sequence[int]) -> Tensor:
    """``small`` (c, *k) cropped or zero-padded, symmetrically per axis, to (c, *grid); odd sizes."""
    if tuple(small.shape[1:]) == tuple(grid):
        return small
    pad: list[int] = []
    for k, g in zip(reversed(small.shape[1:]), reversed(grid), strict=True):
        pad += [(g - k) // 2, (g - k) // 2]  # negative entries crop
    return torch.nn.functional.pad(small, pad)


class DepthwiseCKConv(nn.Module):
    """Depthwise conv whose kernel is a KernelNet sampled on the layer's current grid, times a mask.

    The kernel is sampled at relative positions ``2 j / N`` (N = current length per axis), so a block after
    downsampling samples a coarser grid over the same relative extent. It is scaled by ``sqrt(P0) / P``
    (P = samples in the current map, P0 in the input): a Riemann sum of one continuous kernel, which
    starts near unit gain at the input resolution.

    With ``direct`` = k > 0, a k x ... x k per-channel weight, learned directly as an ordinary depthwise
    conv's, is added to the kernel's central taps (cropped to the kernel where the kernel is smaller).
    It is neither masked nor scaled: a kernel cut to its floor of 3 taps is then as expressive as a
    plain 3x3 depthwise conv, which a smooth kernel net sampled over 3 neighbouring positions is not.
    The kernel stays one tensor of the masked kernel's size, so cost, cropping and export are unchanged.

    Args:
        ndim: spatial axes; channels: maximal channels; base: input size per axis.
        kernel_hidden, kernel_layers, omega0: KernelNet settings.
        init_cutoff, threshold: kernel mask settings; backend: 'auto' | 'direct' | 'fft'.
        direct: size of the directly learned central term (0: none; else odd).
        gain: the kernel net's initial output scale (``KernelNet``; 0: the kernel starts as its
            direct term).
        ceiling: the largest relative extent the kernel may reach (1: the whole map).
    """

    def __init__(
        self,
        ndim: int,
        channels: int,
        base: Sequence[int],
        kernel_hidden: int,
        kernel_layers: int,
        omega0: float,
        init_cutoff: float,
        threshold: float,
        backend: str,
        direct: int = 0,
        gain: float = 1.0,
        ceiling: float = 1.0,
    ) -> None:
        super().__init__()
        if backend not in fconv.BACKENDS:
            raise ValueError(f"unknown conv backend {backend!r}; choose one of {fconv.BACKENDS}")
        if direct < 0 or (direct and direct % 2 == 0):
            raise ValueError(f"direct kernel size must be 0 or odd, got {direct}")
        self.ndim, self.base, self.backend = ndim, tuple(base), backend
        # its own kernel net, until a model stacks its blocks' (``share``)
        self.kernel_net: KernelNet | None = KernelNet(
            ndim, channels, kernel_hidden, kernel_layers, omega0, gain
        )
        self.shared: SharedKernelNet | None = None
        # the floor (one sample of the longest axis) may lie above a short starting cut-off on
        # small inputs: the kernel then starts at the floor (3 taps either way); a ceiling below the
        # floor is the floor, and no kernel starts above its ceiling
        floor = 1.0 / max(self.base)
        top = max(ceiling, floor)
        self.mask = GaussianKernelMask(
            ndim, min(max(init_cutoff, floor), top), floor, threshold, top
        )
        self.bias = nn.Parameter(torch.zeros(channels))
        self._grids: dict[Hashable, Tensor] = {}  # kernel positions per grid (``positions``)
        self._gains: dict[Hashable, Tensor] = {}  # per ``gain``
        # the backend verdicts: its own until the model hands every layer the model's one
        self.verdicts = fconv.Verdicts()
        self.direct: nn.Parameter | None = None
        if direct:
            bound = 1.0 / math.sqrt(direct**ndim)  # nn.Conv default for a depthwise kernel
            self.direct = nn.Parameter(
                torch.empty(channels, *[direct] * ndim).uniform_(-bound, bound)
            )

    def kernel(
        self,
        lengths: Sequence[int],
        channels: int,
        full: bool = False,
        sizes: Sequence[int] | None = None,
        values: Tensor | None = None,
    ) -> Tensor:
        """Masked kernel for a map of ``lengths``: (channels, *K). ``full`` samples the maximal grid
        with zeros beyond the hard size (the uncropped reference). ``sizes``: the hard size per axis
        as the step's plan gives it (``BlockSpec.kernel``); None: the mask's own. ``values``: the
        kernel net's output on this grid's ``positions``, (P, channels), if the caller computed it
        (``DNArchNet.kernel_values``)."""
        lengths = tuple(int(n) for n in lengths)
        sizes = self.mask.hard_sizes(lengths) if sizes is None else tuple(sizes)
        grid = tuple(fm.max_kernel_size(n) for n in lengths) if full else sizes
        if values is None:
            net = self.kernel_net if self.kernel_net is not None else self.shared
            assert net is not None
            values = net(self.positions(grid, lengths), channels)  # (P, c)
        # (*K): the gain on the small one
        mask = self.mask.values(sizes, lengths, full=full) * self.gain(lengths)
        w = values.T.reshape(channels, *grid) * mask
        if self.direct is not None:
            # cropped to the hard size first: the full grid is zero beyond it
            w = w + centred(centred(leading(self.direct, channels), sizes), grid)
        return w

    def share(self, nets: KernelNets, index: int) -> None:
        """Run entry ``index`` of a model's stacked kernel nets from now on, in place of its own
        ``kernel_net`` (which it drops: ``nets`` holds a copy of its values)."""
        self.kernel_net = None
        self.shared = SharedKernelNet(nets, index)

    def gain(self, lengths: tuple[int, ...]) -> Tensor:
        """The kernel's scale ``sqrt(P0) / P`` on a map of ``lengths``, a 0-d tensor made once per
        lengths, device and dtype (a Python number is converted at every call, forward and back)."""
        key = (lengths, self.bias.device, self.bias.dtype)
        value = math.sqrt(math.prod(self.base)) / math.prod(lengths)
        return made_once(self._gains, key, lambda: self.bias.new_tensor(value))

    def positions(self, grid: tuple[int, ...], lengths: tuple[int, ...]) -> Tensor:
        """The kernel grid's relative positions (P, ndim), made once per grid, lengths, device."""
        key = (grid, lengths, self.bias.device, self.bias.dtype)
        return made_once(self._grids, key, lambda: self._make_positions(grid, lengths))

    def _make_positions(self, grid: tuple[int, ...], lengths: tuple[int, ...]) -> Tensor:
        axes = [fm.kernel_positions(k, n) for k, n in zip(grid, lengths, strict=True)]
        pos = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, self.ndim)
        return pos.to(self.bias.device, self.bias.dtype)

    def forward(
        self,
        x: Tensor,
        full: bool = False,
        sizes: Sequence[int] | None = None,
        values: Tensor | None = None,
    ) -> Tensor:
        """x: (B, c, *S) with c <= channels. Returns (B, c, *S). ``sizes``, ``values``: as in
        ``kernel``."""
        c, lengths = x.shape[1], tuple(x.shape[2:])
        w = self.kernel(lengths, c, full, sizes, values)
        return fconv.depthwise_conv(x, w, leading(self.bias, c), self.backend, self.verdicts)

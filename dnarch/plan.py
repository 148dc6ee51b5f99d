"""The discrete plan of one block: what the masks decide for it at a step, as the cropped forward
runs it, the cost counts it and the export builds it. A leaf module: loading an exported network
(``export.spec``) needs nothing else."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BlockSpec:
    """One block of the maximal network: kept or removed, resolution in/out per axis, kernel taps per
    axis, hidden width, the highest Fourier bin kept per axis, the group counts of its two
    pointwise layers, its residual width (0: the network's one residual width, as in files
    written before ``NetConfig.widen``) and whether it halves its input by a strided filter
    (``NetConfig.downsample``; keep_bins then unused), and whether that halving also adds a full
    strided convolution across channels ('strided-mix')."""

    index: int
    kept: bool
    resolution_in: tuple[int, ...]
    resolution_out: tuple[int, ...]
    kernel: tuple[int, ...]
    hidden: int
    keep_bins: tuple[int, ...]
    groups: tuple[int, int] = (1, 1)
    width: int = 0
    strided: bool = False  # halves by a strided 3-tap-per-axis filter, not a Fourier crop
    mixed: bool = False  # and adds a full strided convolution to it (``DNArchBlock.mix``)

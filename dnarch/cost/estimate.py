"""Analytic, differentiable inference cost: multiply-accumulates (MACs) and parameters per sample.

Counted as ``torch.utils.flop_counter.FlopCounterMode`` counts the exported network, divided by 2
(it reports FLOPs = 2 x MACs for convolutions and matrix products): convolutions and linear layers only.
Not counted, by it or here: biases, norms, activations and the FFT resampling (``O(C N log N)`` per
block). Per sample, with P_l the number of positions block l runs at and K_l its kernel taps:

    stem   P_0 * C_in * C
    block  D_l * (P_l * C * K_l  +  P_l * C * W_l  +  P_l * W_l * C)     depthwise, pointwise x2
    head   C * classes

Parameters of the exported network: stem C_in*C + C; per block D_l * (2C norm + C*K_l + C depthwise
+ C*W_l + W_l + W_l*C + C); head 2C + C*classes + classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dnarch.models.dnarchnet import ArchSizes, DNArchNet


@dataclass
class Cost:
    """macs: multiply-accumulates per sample; params: parameter count. Scalars (tensors)."""

    macs: Tensor
    params: Tensor

    def get(self, metric: str) -> Tensor:
        if metric not in ("macs", "params"):
            raise ValueError(f"unknown cost metric {metric!r}; choose macs or params")
        return self.macs if metric == "macs" else self.params


def estimate_cost(
    sizes: ArchSizes, in_channels: int, num_classes: int, input_shape: tuple[int, ...]
) -> Cost:
    """Cost of the network with these sizes (soft sizes give a differentiable cost)."""
    c = sizes.residual
    p0 = float(math.prod(input_shape))
    macs = p0 * in_channels * c + c * num_classes
    params = in_channels * c + c + 2 * c + c * num_classes + num_classes
    for d, k, w, r in zip(sizes.depth, sizes.kernel, sizes.hidden, sizes.resolution, strict=True):
        p = torch.prod(r)
        taps = torch.prod(k)
        macs = macs + d * (p * c * taps + 2 * p * c * w)
        params = params + d * (2 * c + c * taps + c + 2 * c * w + w + c)
    return Cost(macs=torch.as_tensor(macs), params=torch.as_tensor(params))


def model_cost(model: DNArchNet, kind: str = "straight_through") -> Cost:
    """Cost of ``model``'s current architecture.

    kind: 'soft' (differentiable), 'hard' (the cropped network, exact), 'max' (the maximal network), or
    'straight_through': the hard value with the soft gradient, so the penalty sees the real network.
    """
    args = (model.in_channels, model.num_classes, model.input_shape)
    if kind == "max":
        return estimate_cost(model.max_sizes(), *args)
    if kind == "hard":
        return estimate_cost(model.arch_sizes(hard=True), *args)
    if kind == "soft":
        return estimate_cost(model.arch_sizes(hard=False), *args)
    if kind != "straight_through":
        raise ValueError(f"unknown cost kind {kind!r}")
    return estimate_cost(straight_through(model.arch_sizes(False), model.arch_sizes(True)), *args)


def straight_through(soft: ArchSizes, hard: ArchSizes) -> ArchSizes:
    """Each size takes its hard value with its soft gradient. The cost of these sizes is the real
    network's cost, and its gradient is the marginal cost at the real architecture (the soft sums and
    cut-offs differ from the hard counts by a channel or so, which would bias the other factors)."""

    def st(s: Tensor, h: Tensor) -> Tensor:
        return s + (h.to(s) - s).detach()

    def each(a: list[Tensor], b: list[Tensor]) -> list[Tensor]:
        return [st(x, y) for x, y in zip(a, b, strict=True)]

    return ArchSizes(
        residual=st(soft.residual, hard.residual),
        depth=each(soft.depth, hard.depth),
        kernel=each(soft.kernel, hard.kernel),
        hidden=each(soft.hidden, hard.hidden),
        resolution=each(soft.resolution, hard.resolution),
    )

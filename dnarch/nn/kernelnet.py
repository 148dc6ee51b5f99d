"""Kernel network: a small SIREN mapping relative positions in [-1, 1]^d to one kernel value per channel.

Sitzmann et al. (2020) initialisation; FlexConv/CCNN use such networks to parameterise continuous kernels.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnarch.functional.channels import leading


class KernelNet(nn.Module):
    """SIREN ``pos (P, d) -> values (P, C)``.

    Args:
        ndim: input dimension d.
        channels: output channels C (the maximal residual width).
        hidden: hidden units.
        layers: number of linear layers (>= 2).
        omega0: SIREN frequency of the sine activations.
        gain: scale of the last layer's initial weights (1: unit-variance outputs, SIREN's; 0: the
            network starts at zero, and its last layer learns from there).
    """

    omega0_value: Tensor  # ``omega0`` as a 0-d buffer

    def __init__(
        self, ndim: int, channels: int, hidden: int, layers: int, omega0: float, gain: float = 1.0
    ) -> None:
        super().__init__()
        if layers < 2 or hidden < 1:
            raise ValueError(
                f"kernel net needs layers >= 2 and hidden >= 1, got {layers}, {hidden}"
            )
        self.omega0 = omega0
        # as a tensor: a Python number in a product is converted at every call, forward and back
        self.register_buffer("omega0_value", torch.tensor(omega0), persistent=False)
        dims = [ndim] + [hidden] * (layers - 1)
        self.hidden = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.out = nn.Linear(hidden, channels)
        with torch.no_grad():
            for i, (fan_in, lin) in enumerate(zip(dims[:-1], self.hidden, strict=True)):
                bound = 1.0 / fan_in if i == 0 else math.sqrt(6 / fan_in) / omega0
                assert isinstance(lin, nn.Linear)
                lin.weight.uniform_(-bound, bound)
            bound = math.sqrt(6 / hidden)  # sin(.) has variance 1/2: unit-variance outputs
            self.out.weight.uniform_(-bound, bound).mul_(gain)
            self.out.bias.zero_()

    def forward(self, pos: Tensor, channels: int | None = None) -> Tensor:
        """pos: (P, d). Returns (P, channels) -- only the first ``channels`` outputs are computed."""
        h = pos
        for lin in self.hidden:
            h = torch.sin(self.omega0_value * lin(h))
        c = self.out.out_features if channels is None else channels
        return F.linear(h, leading(self.out.weight, c), leading(self.out.bias, c))


def batched(nets: list[KernelNet], pos: Tensor) -> Tensor:
    """Several kernel networks of one shape, each on its own positions, as one batched product per
    layer: ``nets[i](pos[i])`` for every i, stacked. A network of L blocks then runs 3
    products instead of 3 L small ones, and as many backward nodes: on MNIST-1D's small maps the
    blocks' kernels were some 7% of a training step, mostly per-operation overhead.
    pos: (L, P, d) -> (L, P, C), every one of the C output channels."""
    first = nets[0]
    h = pos
    for i in range(len(first.hidden)):
        lins = [cast(nn.Linear, n.hidden[i]) for n in nets]
        w = torch.stack([lin.weight for lin in lins])  # (L, out, in)
        b = torch.stack([lin.bias for lin in lins])  # (L, out)
        h = torch.sin(first.omega0_value * torch.baddbmm(b[:, None], h, w.transpose(1, 2)))
    # every output channel: the caller slices its blocks' widths out of the product (slicing each
    # weight instead costs a zero-filled gradient per weight in the backward pass)
    w = torch.stack([n.out.weight for n in nets])  # (L, C, hidden)
    b = torch.stack([n.out.bias for n in nets])
    return torch.baddbmm(b[:, None], h, w.transpose(1, 2))

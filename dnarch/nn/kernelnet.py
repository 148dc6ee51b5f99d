"""Kernel network: a small SIREN mapping relative positions in [-1, 1]^d to one kernel value per channel.

Sitzmann et al. (2020) initialisation; FlexConv/CCNN use such networks to parameterise continuous kernels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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


class StackedLinear(nn.Module):
    """L linear layers of one shape, stored stacked: weight (L, out, in), bias (L, out)."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)


class KernelNets(nn.Module):
    """The kernel networks of a model's L blocks, one ``KernelNet`` shape, their parameters stored
    stacked, one (L, ...) tensor per parameter of a ``KernelNet``: ``hidden[j].weight`` (L, out, in),
    ``hidden[j].bias`` (L, out), ``out.weight`` (L, C, hidden), ``out.bias`` (L, C).

    A training step then runs every block's kernel net as 3 batched products over the stacked
    weights, with no stacking of L blocks' tensors forward and backward, and the optimiser updates 4
    tensors per layer instead of 4 L (a fused AdamW's cost grows with its tensor count;
    METHOD-NOTES, Speed). Block ``i``'s network alone: ``one(i, ...)``, the same arithmetic as its
    ``KernelNet``.
    """

    omega0_value: Tensor  # ``omega0`` as a 0-d buffer

    def __init__(self, nets: Sequence[KernelNet]) -> None:
        """Stacks copies of the values of ``nets`` (one shape, the same omega0); they are not
        shared with ``nets``."""
        super().__init__()
        first = nets[0]
        self.omega0 = first.omega0
        self.register_buffer("omega0_value", torch.tensor(first.omega0), persistent=False)

        def stacked(layers: list[nn.Linear]) -> StackedLinear:
            return StackedLinear(
                torch.stack([lin.weight.detach() for lin in layers]).clone(),
                torch.stack([lin.bias.detach() for lin in layers]).clone(),
            )

        self.hidden = nn.ModuleList(
            stacked([cast(nn.Linear, n.hidden[j]) for n in nets]) for j in range(len(first.hidden))
        )
        self.out = stacked([n.out for n in nets])

    def __len__(self) -> int:
        return int(self.out.weight.shape[0])

    def layers(self) -> list[StackedLinear]:
        """The stacked layers, first to last (the output layer last)."""
        return [*(cast(StackedLinear, h) for h in self.hidden), self.out]

    def forward(self, pos: Tensor, index: Sequence[int] | None = None) -> Tensor:
        """Blocks ``index`` (None: all L, in order), each on its own positions, as one batched
        product per layer. pos: (L', P, d) -> (L', P, C), every output channel (a caller that
        slices its blocks' widths out of the product costs no zero-filled weight gradient)."""
        h = pos
        for lin in self.layers():
            w: Tensor = lin.weight
            b: Tensor = lin.bias
            if index is not None:
                w, b = w[list(index)], b[list(index)]
            h = torch.baddbmm(b[:, None], h, w.transpose(1, 2))
            if lin is not self.out:
                h = torch.sin(self.omega0_value * h)
        return h

    def one(self, i: int, pos: Tensor, channels: int | None = None) -> Tensor:
        """Block ``i``'s kernel net alone, as its ``KernelNet`` computes it. pos: (P, d) ->
        (P, channels), only the first ``channels`` outputs computed."""
        h = pos
        for lin in self.layers()[:-1]:
            h = torch.sin(self.omega0_value * F.linear(h, lin.weight[i], lin.bias[i]))
        c = self.out.weight.shape[1] if channels is None else channels
        return F.linear(h, leading(self.out.weight[i], c), leading(self.out.bias[i], c))

    def vectors(self) -> list[nn.Parameter]:
        """The stacked biases: one vector per block, (L, n), not matrices (no weight decay)."""
        return [lin.bias for lin in self.layers()]


class SharedKernelNet:
    """Block ``index``'s kernel net inside a model's ``KernelNets``: what a ``DepthwiseCKConv``
    calls in place of its own ``KernelNet``. Not a module, so the stacked parameters are the
    model's alone (one state-dict entry each, not one per block)."""

    def __init__(self, nets: KernelNets, index: int) -> None:
        self.nets, self.index = nets, index

    def __call__(self, pos: Tensor, channels: int | None = None) -> Tensor:
        """pos: (P, d) -> (P, channels)."""
        return self.nets.one(self.index, pos, channels)

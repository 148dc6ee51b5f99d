"""Closed forms of the four DNArch masks, their cut-offs and their hard (cropped) sizes.

Every mask returns values in [0, 1]. A part of a tensor whose mask value falls below the threshold ``T``
is cropped. The hard size is always computed from the same closed form as the values, so that the
cropped network and the masked network with the threshold applied are the same function.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
from torch import Tensor

_M = TypeVar("_M", Tensor, float)  # a mask position: a tensor, or a plain number


def gaussian(pos: Tensor, sigma: Tensor) -> Tensor:
    """Gaussian kernel-extent mask ``exp(-pos^2 / (2 sigma^2))``.

    pos: (..., K) relative positions in [-1, 1]; sigma: scalar or broadcastable. Returns pos's shape.
    """
    return gaussian_of_square(-(pos**2), sigma)


def gaussian_of_square(neg_square: Tensor, sigma: Tensor) -> Tensor:
    """``gaussian`` from ``-pos^2`` (a grid's, made once by the caller). Returns its shape."""
    square = sigma * sigma  # 2 sigma^2 as a sum: no Python number enters the graph (each one is
    return torch.exp(neg_square / (square + square))  # converted at every call, forward and back)


def gaussian_cutoff(sigma: Tensor, threshold: float) -> Tensor:
    """Relative position |x| at which the Gaussian mask equals ``threshold``: ``sigma*sqrt(-2 ln T)``."""
    _check_threshold(threshold)
    return sigma * math.sqrt(-2.0 * math.log(threshold))


def sigmoid_step(u: Tensor, mu: Tensor, tau: float | Tensor) -> Tensor:
    """Sigmoid step ``sigmoid(tau * (mu - u))`` over a normalised index or frequency ``u``.

    u: (..., N) in [0, 1]; mu: scalar (the learnable position of the step); tau: scalar sharpness.
    Returns u's shape.
    """
    return torch.sigmoid(tau * (mu - u))


def annealed_step(u: Tensor, mu: Tensor, tau: float | Tensor, sharpness: Tensor) -> Tensor:
    """``sigmoid_step`` at temperature ``tau * sharpness`` in value, with the gradient of the plain
    step at ``tau`` (straight-through). A sharp gate's own gradient vanishes away from its centre,
    which leaves the budget penalty nothing to push on; the plain one keeps it. At sharpness 1 this is
    ``sigmoid_step`` exactly, in value and gradient. u: (..., N); mu, sharpness: scalars."""
    plain = sigmoid_step(u, mu, tau)
    return plain + (sigmoid_step(u, mu, tau * sharpness) - plain).detach()


def sigmoid_step_cutoff(mu: _M, tau: float | Tensor, threshold: float) -> _M:
    """The ``u`` at which the sigmoid step equals ``threshold``: ``mu + ln((1 - T) / T) / tau``."""
    _check_threshold(threshold)
    return mu + math.log((1.0 - threshold) / threshold) / tau  # type: ignore[return-value]


def kernel_positions(size: int, full_size: int) -> Tensor:
    """Relative positions of an odd kernel of ``size`` taps on a grid of ``full_size`` samples.

    One sample spans ``2 / full_size`` of the relative extent [-1, 1], whatever the resolution, so that
    the continuous kernel describes the same function before and after downsampling. Returns (size,).
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be odd and >= 1, got {size}")
    half = size // 2
    return torch.arange(-half, half + 1, dtype=torch.float32) * (2.0 / full_size)


def max_kernel_size(length: int) -> int:
    """Largest odd kernel that fits in ``length`` samples (the maximal network's kernel). Length >= 1."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    return length if length % 2 == 1 else length - 1


def hard_kernel_size(cutoff: float, length: int, floor: int = 3) -> int:
    """Odd number of taps whose relative position lies within ``cutoff``, on a grid of ``length``.

    Clipped to [min(floor, max), max_kernel_size(length)]. The floor of 3 keeps the two taps next to
    the centre, whose mask values depend on sigma: a 1-tap kernel has mask value 1 whatever sigma is, so
    its gradient would be zero and the kernel could never grow back.
    """
    k_max = max_kernel_size(length)
    half = math.floor(cutoff * length / 2.0 + 1e-6)
    size = 2 * max(half, 0) + 1
    return max(min(size, k_max), min(floor, k_max))


def hard_count(values: Tensor, threshold: float, floor: int = 1) -> int:
    """Number of leading entries of a non-increasing mask that are >= threshold, at least ``floor``.

    values: (N,). Used for widths (floor 1 channel) and depth (floor 1 block).
    """
    _check_threshold(threshold)
    kept = int((values.detach() >= threshold).sum().item())
    return max(min(kept, values.numel()), min(floor, values.numel()))


def step_count(cutoff: float, n: int, step: float, floor: int = 1) -> int:
    """``hard_count`` of a sigmoid step in closed form: the entries ``i`` of ``0..n-1`` at ``u = i *
    step`` with ``u <= cutoff`` (``sigmoid_step_cutoff``), at least ``min(floor, n)``. Plain Python,
    no tensor operation: the training step asks for every mask's count. A NaN cut-off keeps the
    floor."""
    if math.isnan(cutoff):
        return min(floor, n)
    k = math.floor(cutoff / step) if math.isfinite(cutoff) else n
    k = min(max(k, -1), n)  # the last kept index, -1 for none
    while k + 1 < n and (k + 1) * step <= cutoff:  # exact at the boundary, as i * step <= cutoff
        k += 1
    while k >= 0 and (k >= n or k * step > cutoff):
        k -= 1
    return max(k + 1, min(floor, n))


def step_tau(span: float, n: int, threshold: float = 0.1) -> float:
    """Steepness ``tau`` of a sigmoid step over ``n`` entries whose T..1-T rise spans ``span`` entries.

    The step rises from T to 1-T over ``2 ln((1-T)/T) / tau`` in normalised units, i.e. over
    ``n * 2 ln((1-T)/T) / tau`` entries.
    """
    if span <= 0 or n < 1:
        raise ValueError(f"span and n must be positive, got span={span}, n={n}")
    return n * 2.0 * math.log((1.0 - threshold) / threshold) / span


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold < 0.5:
        raise ValueError(f"threshold must lie in (0, 0.5), got {threshold}")

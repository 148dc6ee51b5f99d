"""Depthwise 'same' convolution (cross-correlation, zero padding) with a direct and an FFT backend.

``auto`` picks the faster backend per (device, shape class) by measurement, cached (see
``choose_backend``); both compute the same function to float precision.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dnarch.functional.fourier import fft_input

BACKENDS = ("auto", "direct", "fft")
# Verdicts of the timed choices between two computations of one function, per (device, dtype, shape,
# buckets): the depthwise backend here, and whether a grouped 1x1 layer runs grouped or dense
# (``functional.groups.choose_mixing``, buckets ("groups", G)). Checkpoints carry them.
_CHOICE: dict[tuple, str] = {}


def remember(key: tuple, decide: Callable[[], str]) -> str:
    """The cached verdict for ``key``, made by ``decide()`` the first time."""
    if key not in _CHOICE:
        _CHOICE[key] = decide()
    return _CHOICE[key]


def depthwise_direct(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Depthwise cross-correlation with zero 'same' padding.

    x: (B, C, *S); weight: (C, *K) with odd K_i <= S_i; bias: (C,) or None. Returns (B, C, *S).
    """
    _check(x, weight)
    conv: Callable[..., Tensor] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[x.ndim - 2]
    padding = [k // 2 for k in weight.shape[1:]]
    return conv(x, weight.unsqueeze(1), bias, padding=padding, groups=x.shape[1])


def fast_length(n: int) -> int:
    """The smallest integer >= n whose only prime factors are 2, 3 and 5 (FFT libraries are fastest
    on those)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def depthwise_fft(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Same function as ``depthwise_direct``, computed as an FFT convolution.

    x: (B, C, *S); weight: (C, *K). Returns (B, C, *S).

    A circular convolution of length N equals the linear one on the outputs we keep (the 'same'
    window at offset K//2) as long as N >= S + K//2: the wrapped-around tail lands only on discarded
    positions. That is up to 1/3 shorter than the full S + K - 1, rounded up to a fast length.
    """
    _check(x, weight)
    nd = x.ndim - 2
    spatial = tuple(range(2, x.ndim))
    sizes = [fast_length(s + k // 2) for s, k in zip(x.shape[2:], weight.shape[1:], strict=True)]
    # correlation = convolution with the kernel flipped
    flipped = torch.flip(weight, dims=tuple(range(1, nd + 1)))
    spec = torch.fft.rfftn(fft_input(x), s=sizes, dim=spatial) * torch.fft.rfftn(
        fft_input(flipped), s=sizes, dim=tuple(range(1, nd + 1))
    )
    full = torch.fft.irfftn(spec, s=sizes, dim=spatial)  # (B, C, *N), circular
    for axis, (s, k) in enumerate(zip(x.shape[2:], weight.shape[1:], strict=True)):
        full = full.narrow(2 + axis, k // 2, s)
    if bias is not None:
        full = full + bias.reshape(1, -1, *([1] * nd))
    return full


def depthwise_conv(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, backend: str = "auto"
) -> Tensor:
    """Depthwise 'same' convolution by the named backend. Shapes as ``depthwise_direct``."""
    if backend == "auto":
        backend = choose_backend(x, weight)
    if backend == "direct":
        return depthwise_direct(x, weight, bias)
    if backend == "fft":
        return depthwise_fft(x, weight, bias)
    raise ValueError(f"unknown conv backend {backend!r}; choose one of {BACKENDS}")


def choose_backend(x: Tensor, weight: Tensor) -> str:
    """The faster backend for these shapes on this device, measured once per shape class and cached.

    Kernel sizes change all through training, so a measurement per exact size would be paid over and
    over (a direct 773-tap conv costs a second per call on a CPU). Instead: kernel sizes are bucketed
    by quarter octaves (one verdict covers sizes within ~19%); a shape where one backend does 16x fewer
    operations by the textbook count is decided without timing; and the rest are timed on a slice of
    at most 4 samples of the batch. Under ``torch.use_deterministic_algorithms(True)`` the count
    alone decides, so that runs repeat exactly.
    """
    # the batch size is left out of the key: it scales both backends alike
    buckets = tuple(round(4 * math.log2(k)) for k in weight.shape[1:])
    key = (x.device.type, x.dtype, tuple(x.shape[1:]), buckets)
    if key not in _CHOICE:
        direct_ops = math.prod(x.shape[2:]) * math.prod(weight.shape[1:])
        n = math.prod(
            fast_length(s + k // 2) for s, k in zip(x.shape[2:], weight.shape[1:], strict=True)
        )
        fft_ops = 3 * n * max(1.0, math.log2(n))  # forward, product, inverse
        if torch.are_deterministic_algorithms_enabled():  # no timing: the same verdict every run
            _CHOICE[key] = "fft" if fft_ops < direct_ops else "direct"
        elif weight[0].numel() <= 9 or direct_ops * 16 < fft_ops:
            _CHOICE[key] = "direct"  # short kernels: nothing for an FFT to win
        elif fft_ops * 16 < direct_ops:
            _CHOICE[key] = "fft"
        else:
            with torch.no_grad():
                xd, wd = x[:4].detach(), weight.detach()
                t_direct = _time(lambda: depthwise_direct(xd, wd), x.device)
                t_fft = _time(lambda: depthwise_fft(xd, wd), x.device)
            _CHOICE[key] = "fft" if t_fft < t_direct else "direct"
    return _CHOICE[key]


def conv_choices() -> list[list[Any]]:
    """The cached backend verdicts as plain lists (for a checkpoint: a resumed run must compute with
    the same backends to continue bit for bit)."""
    return [[k[0], str(k[1]), list(k[2]), list(k[3]), v] for k, v in _CHOICE.items()]


def set_conv_choices(choices: list[list[Any]]) -> None:
    """Restore verdicts saved by ``conv_choices`` (they take precedence over new measurements)."""
    for device, dtype, shape, buckets, choice in choices:
        key = (
            device,
            getattr(torch, str(dtype).removeprefix("torch.")),
            tuple(shape),
            tuple(buckets),
        )
        _CHOICE[key] = choice


def _time(fn: Callable[[], Any], device: torch.device, repeats: int = 3) -> float:
    fn()  # warm-up: first calls pay for allocation and kernel selection
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def _check(x: Tensor, weight: Tensor) -> None:
    if x.ndim - 2 != weight.ndim - 1 or x.shape[1] != weight.shape[0]:
        raise ValueError(
            f"depthwise conv needs x (B, C, *S) and weight (C, *K); got {tuple(x.shape)} and "
            f"{tuple(weight.shape)}"
        )
    for s, k in zip(x.shape[2:], weight.shape[1:], strict=True):
        if k % 2 == 0 or k > s:
            raise ValueError(f"kernel sizes must be odd and <= the input's; got {k} for length {s}")

"""Depthwise 'same' convolution (cross-correlation, zero padding) with a direct and an FFT backend.

``auto`` picks the faster backend per (device, shape class) by measurement, cached (see
``choose_backend``); both compute the same function to float precision.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnarch.functional.fourier import fft_input

BACKENDS = ("auto", "direct", "fft")


class Verdicts:
    """The verdicts of timed choices between two computations of one function, per (device, dtype,
    shape, buckets): the depthwise backend (``choose_backend``), and whether a grouped 1x1 layer runs
    grouped or dense (``functional.groups.choose_mixing``, buckets ("groups", G)). A model owns one
    and hands it to its layers; a run's checkpoint carries it (``state`` / ``load``), so that a
    resumed run computes with the same backends. Nothing is shared between models."""

    def __init__(self) -> None:
        self.cache: dict[tuple, str] = {}

    def remember(self, key: tuple, decide: Callable[[], str]) -> str:
        """The verdict for ``key``, made by ``decide()`` the first time."""
        if key not in self.cache:
            self.cache[key] = decide()
        return self.cache[key]

    def state(self) -> list[list[Any]]:
        """The verdicts as plain lists (for a checkpoint)."""
        return [[k[0], str(k[1]), list(k[2]), list(k[3]), v] for k, v in self.cache.items()]

    def load(self, choices: list[list[Any]]) -> None:
        """Restore verdicts saved by ``state`` (they take precedence over new measurements)."""
        for device, dtype, shape, buckets, choice in choices:
            key = (
                device,
                getattr(torch, str(dtype).removeprefix("torch.")),
                tuple(shape),
                tuple(buckets),
            )
            self.cache[key] = choice


# the convolution and batch-norm modules of each spatial rank (1D, 2D, 3D)
CONV: dict[int, type[nn.Conv1d | nn.Conv2d | nn.Conv3d]] = {
    1: nn.Conv1d,
    2: nn.Conv2d,
    3: nn.Conv3d,
}
NORM: dict[int, type[nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d]] = {
    1: nn.BatchNorm1d,
    2: nn.BatchNorm2d,
    3: nn.BatchNorm3d,
}


def conv_nd(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, groups: int = 1, stride: int = 1
) -> Tensor:
    """Cross-correlation with zero 'same' padding over x's spatial axes, 1D to 3D, sampled every
    ``stride``-th position.

    x: (B, C_in, *S); weight: (C_out, C_in / groups, *K), odd K; bias: (C_out,) or None.
    Returns (B, C_out, *ceil(S / stride))."""
    conv: Callable[..., Tensor] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[x.ndim - 2]
    padding = [k // 2 for k in weight.shape[2:]]
    return conv(x, weight, bias, stride=stride, padding=padding, groups=groups)


def depthwise_direct(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Depthwise cross-correlation with zero 'same' padding.

    x: (B, C, *S); weight: (C, *K) with odd K_i <= S_i; bias: (C,) or None. Returns (B, C, *S).
    """
    _check(x, weight)
    return conv_nd(x, weight.unsqueeze(1), bias, groups=x.shape[1])


def fast_length(n: int) -> int:
    """The smallest integer >= n whose only prime factors are 2 and 3. PocketFFT (PyTorch's CPU
    FFT) runs those lengths about twice as fast as ones with a factor of 5 (45 against 48 points
    per axis on 28x28 maps; ``benchmarks/speed.py``)."""
    best = 1 << max(0, (n - 1).bit_length())
    p3 = 3
    while p3 < best:
        m = p3
        while m < n:
            m *= 2
        best = min(best, m)
        p3 *= 3
    return best


def depthwise_fft(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Same function as ``depthwise_direct``, computed as an FFT convolution.

    x: (B, C, *S); weight: (C, *K). Returns (B, C, *S).

    The kernel is laid out circularly (tap ``d`` of ``-K//2..K//2`` at index ``d mod N``), so the
    correlation's outputs are the first S of a circular correlation of length N. That equals the
    linear one as long as N >= S + K//2: the wrapped-around taps land only on zero padding. N is
    rounded up to a fast length. Forward and backward are written out (``_FFTCorrelate``): four
    transforms of the batch per step, where autograd through ``rfftn``/``irfftn`` takes five, one
    of them a complex-to-complex transform, plus padding copies.
    """
    _check(x, weight)
    sizes = fft_sizes(x.shape[2:], weight.shape[1:])
    out = _FFTCorrelate.apply(fft_input(x), fft_input(weight), sizes)
    if bias is not None:
        out = out + bias.reshape(1, -1, *([1] * (x.ndim - 2)))
    return out


def fft_sizes(lengths: Sequence[int], kernel: Sequence[int]) -> tuple[int, ...]:
    """The FFT convolution's circular length per axis: N >= S + K//2, rounded up to a fast length."""
    return tuple(fast_length(s + k // 2) for s, k in zip(lengths, kernel, strict=True))


def circular_kernel(weight: Tensor, sizes: Sequence[int]) -> Tensor:
    """weight (C, *K), odd K, laid out on a circular grid (C, *sizes): tap ``d`` (of ``-K//2..K//2``
    per axis) at index ``d mod N``."""
    nd = weight.ndim - 1
    pad: list[int] = []
    for k, n in zip(reversed(weight.shape[1:]), reversed(sizes), strict=True):
        pad += [0, n - k]
    grid = F.pad(weight, pad)
    return torch.roll(grid, [-(k // 2) for k in weight.shape[1:]], list(range(1, nd + 1)))


def uncircular_kernel(grid: Tensor, kernel: Sequence[int]) -> Tensor:
    """The inverse of ``circular_kernel``: (C, *N) -> (C, *K)."""
    nd = grid.ndim - 1
    out = torch.roll(grid, [k // 2 for k in kernel], list(range(1, nd + 1)))
    for axis, k in enumerate(kernel):
        out = out.narrow(1 + axis, 0, k)
    return out


def spectrum(x: Tensor, sizes: Sequence[int]) -> Tensor:
    """``rfftn`` of x (..., *S) zero-padded to ``sizes`` (its last len(sizes) axes), one axis at a
    time, last axis first: that first real transform runs only over the input's S rows, not the
    padded grid's (a 28x28 map on a 48x48 grid skips 20 of 48 rows). (..., *bins)."""
    nd = len(sizes)
    out = torch.fft.rfft(x, n=sizes[-1], dim=-1)
    for axis in reversed(range(nd - 1)):
        out = torch.fft.fft(out, n=sizes[axis], dim=axis - nd)
    return out


def inverse(spec: Tensor, sizes: Sequence[int], lengths: Sequence[int] | None = None) -> Tensor:
    """``irfftn`` of spec (..., *bins) at ``sizes``, keeping only the first ``lengths`` samples per
    axis (all if None): rows that are not kept skip the last, real transform. (..., *lengths)."""
    nd = len(sizes)
    for axis in range(nd - 1):
        spec = torch.fft.ifft(spec, dim=axis - nd)
        if lengths is not None:
            spec = spec.narrow(axis - nd, 0, lengths[axis])
    out = torch.fft.irfft(spec, n=sizes[-1], dim=-1)
    return out if lengths is None else out.narrow(-1, 0, lengths[-1])


class _FFTCorrelate(torch.autograd.Function):
    """y = the first S outputs of the circular correlation of x with the circular kernel, length N.

    Y = X conj(H) in the Fourier domain; the backward pass reuses the forward's spectra: the input's
    gradient is the first S of irfft(G H), the kernel's is irfft of sum over the batch of X conj(G).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, sizes: tuple[int, ...]) -> Tensor:
        lengths = tuple(x.shape[2:])
        spec_x = spectrum(x, sizes)
        conj_h = spectrum(circular_kernel(weight, sizes), sizes).conj()
        ctx.save_for_backward(spec_x, conj_h)
        ctx.shapes = (lengths, tuple(weight.shape[1:]), sizes)
        return inverse(spec_x * conj_h, sizes, lengths)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        spec_x, conj_h = ctx.saved_tensors
        lengths, kernel, sizes = ctx.shapes
        spec_g = spectrum(grad, sizes)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = inverse(spec_g * conj_h.conj(), sizes, lengths)
        if ctx.needs_input_grad[1]:
            # summed over the batch before the inverse: sum_b conj(G) X, (C, *bins)
            cross = torch.linalg.vecdot(spec_g, spec_x, dim=0)
            grad_w = uncircular_kernel(inverse(cross, sizes), kernel)
        return grad_x, grad_w, None


def depthwise_conv(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    backend: str = "auto",
    verdicts: Verdicts | None = None,
) -> Tensor:
    """Depthwise 'same' convolution by the named backend; "auto" asks ``choose_backend``, whose
    verdicts are kept in ``verdicts`` (the calling model's; None: measured afresh, kept nowhere).
    Shapes as ``depthwise_direct``."""
    if backend == "auto":
        backend = choose_backend(x, weight, verdicts if verdicts is not None else Verdicts())
    if backend == "direct":
        return depthwise_direct(x, weight, bias)
    if backend == "fft":
        return depthwise_fft(x, weight, bias)
    raise ValueError(f"unknown conv backend {backend!r}; choose one of {BACKENDS}")


def choose_backend(x: Tensor, weight: Tensor, verdicts: Verdicts) -> str:
    """The faster backend for these shapes on this device, measured once per shape class and kept
    in ``verdicts``.

    Kernel sizes and (with cropping) lengths change all through training, so a measurement per exact
    shape would be paid over and over. Instead: kernel sizes and lengths are bucketed by quarter
    octaves (one verdict covers sizes within ~19%) and the channel count is left out (both backends
    scale with it); a shape where one backend does 16x fewer operations by the textbook count is
    decided without timing (in training, 4x fewer for the FFT: a direct depthwise convolution's
    backward pass costs several times its forward on a CPU); and the rest are timed on a slice of at
    most 8 samples of the batch. In training (a gradient is wanted) the forward and backward passes
    are timed together, and 3-tap kernels alone are decided without timing (9 taps in 1D, 5x5 and 9x9
    in 2D run faster as FFTs there, though their forward passes alone do not). Timing a direct
    backward pass of a long kernel costs seconds: on sequences of 784 the per-shape measurements once
    took half of a 25% run's CPU time. Under ``torch.use_deterministic_algorithms(True)`` the count
    alone decides, so that runs repeat exactly.
    """
    train = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    buckets = tuple(round(4 * math.log2(k)) for k in weight.shape[1:]) + (
        ("train",) if train else ()
    )
    lengths = tuple(round(4 * math.log2(n)) for n in x.shape[2:])
    key = (x.device.type, x.dtype, lengths, buckets)

    def decide() -> str:
        direct_ops = math.prod(x.shape[2:]) * math.prod(weight.shape[1:])
        n = math.prod(fft_sizes(x.shape[2:], weight.shape[1:]))
        fft_ops = 3 * n * max(1.0, math.log2(n))  # forward, product, inverse
        short = max(weight.shape[1:]) <= 3 if train else weight[0].numel() <= 9
        if torch.are_deterministic_algorithms_enabled():  # no timing: the same verdict every run
            return "fft" if fft_ops < direct_ops else "direct"
        elif short or direct_ops * 16 < fft_ops:
            return "direct"  # short kernels: nothing for an FFT to win
        elif fft_ops * (4 if train else 16) < direct_ops:
            return "fft"
        else:
            xd, wd = x[:8].detach(), weight.detach()
            if train:
                xd, wd = xd.requires_grad_(), wd.requires_grad_()
                grad = torch.ones_like(xd)

                def direct() -> Any:
                    return torch.autograd.grad(depthwise_direct(xd, wd), (xd, wd), grad)

                def fft() -> Any:
                    return torch.autograd.grad(depthwise_fft(xd, wd), (xd, wd), grad)

                t_direct, t_fft = _time(direct, x.device), _time(fft, x.device)
            else:
                with torch.no_grad():
                    t_direct = _time(lambda: depthwise_direct(xd, wd), x.device)
                    t_fft = _time(lambda: depthwise_fft(xd, wd), x.device)
            return "fft" if t_fft < t_direct else "direct"

    return verdicts.remember(key, decide)


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


def halving_filter(ndim: int, channels: int, taps: Sequence[float] = (1.0, 6.0, 1.0)) -> Tensor:
    """``taps`` / sum(taps) per axis (their outer product), one per channel: (channels, *3^ndim).
    The default [1, 6, 1] / 8 lies halfway between the binomial [1, 2, 1] / 4 anti-aliasing filter,
    which images read as sequences of pixels lose 4 points by, and plain subsampling [0, 1, 0],
    which MNIST-1D loses 1.3 points by (METHOD-NOTES)."""
    k = torch.tensor([float(t) for t in taps]) / sum(taps)
    out = k
    for _ in range(ndim - 1):
        out = out[..., None] * k
    return out.expand(channels, *out.shape).clone()


def halve(x: Tensor, weight: Tensor) -> Tensor:
    """Each channel filtered by its 3-tap-per-axis ``weight`` (c, *3^ndim) at stride 2, zero padding
    1: x (B, c, *S) -> (B, c, *ceil(S / 2)), samples 0, 2, 4, ... of the filtered map (a strided
    convolution's grid)."""
    c = x.shape[1]
    return conv_nd(x, weight[:c].unsqueeze(1), groups=c, stride=2)

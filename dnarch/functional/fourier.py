"""Fourier-domain low-pass masking, cropping (real downsampling) and zero-padding (upsampling).

Frequencies are measured in the *input's* units: bin ``k`` of a feature map (``k`` cycles over the whole
signal) has normalised frequency ``|k| / (N0 / 2)``, where ``N0`` is the input length on that axis, so 1 is
the input's Nyquist frequency whatever the feature map's current length is.

Cropping keeps bins ``-k_c..k_c`` on an axis and inverts at the odd length ``2 k_c + 1``: every kept bin then
has its conjugate partner, so the crop is exact (no Nyquist-bin ambiguity) and zero-padding the result
back to the original length gives the masked full-resolution signal again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def bin_indices(length: int, *, last: bool) -> Tensor:
    """Signed integer bin index of each rFFT bin on one axis.

    ``last`` is the axis `rfftn` halves: bins 0..length//2. Other axes: `fftfreq` order. Returns (n_bins,).
    """
    if last:
        return torch.arange(length // 2 + 1)
    return torch.fft.fftfreq(length, d=1.0 / length).round().long()


def normalised_frequencies(length: int, base: int, *, last: bool) -> Tensor:
    """|f| of each rFFT bin of a length-``length`` axis, in units of the input's (length ``base``) Nyquist.

    Returns (n_bins,) float32.
    """
    return bin_indices(length, last=last).abs().float() * (2.0 / base)


def output_length(length: int, keep: int) -> int:
    """Length after keeping bins ``-keep..keep`` of a length-``length`` axis: ``2 keep + 1`` or unchanged."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    return 2 * keep + 1 if 2 * keep + 1 < length else length


def kept_bins(length: int, keep: int, *, last: bool) -> Tensor:
    """Positions (into that axis's rFFT bins) of the bins kept by a crop to ``output_length``. (n_kept,)."""
    if output_length(length, keep) == length:
        return torch.arange(length // 2 + 1 if last else length)
    if last:
        return torch.arange(keep + 1)
    return torch.cat([torch.arange(keep + 1), torch.arange(length - keep, length)])


def fft_input(x: Tensor) -> Tensor:
    """x, in float32 if it is a half type: cuFFT takes half precision only for power-of-two sizes,
    and a spectrum in bfloat16 would lose the precision the crops and masks rely on (mixed precision
    runs the FFTs in float32, as autocast does for other precision-sensitive ops)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def lowpass_crop(
    x: Tensor, keep: Sequence[int], spectral_mask: Sequence[Tensor] | None = None
) -> Tensor:
    """Low-pass filter and downsample ``x`` by cropping its spectrum.

    x: (B, C, *S) real. keep: per spatial axis, the highest bin kept. spectral_mask: optional per-axis
    factors, each (n_kept_axis,) over the kept bins (``kept_bins`` order); their outer product multiplies
    the spectrum. Returns (B, C, *S') with ``S'_i = output_length(S_i, keep_i)``. Amplitude is preserved
    (``norm="forward"``), so a constant signal stays the same constant.
    """
    spatial = tuple(range(2, x.ndim))
    sizes = x.shape[2:]
    if len(keep) != len(sizes):
        raise ValueError(f"keep has {len(keep)} entries for {len(sizes)} spatial axes")
    spec = _kept(torch.fft.rfftn(fft_input(x), dim=spatial, norm="forward"), sizes, keep)
    if spectral_mask is not None:
        for axis, factor in enumerate(spectral_mask):
            shape = [1] * spec.ndim
            shape[2 + axis] = -1
            spec = spec * factor.to(spec.real.dtype).reshape(shape)
    out_sizes = [output_length(n, k) for n, k in zip(sizes, keep, strict=True)]
    return torch.fft.irfftn(spec, s=out_sizes, dim=spatial, norm="forward")


def fourier_upsample(x: Tensor, sizes: Sequence[int]) -> Tensor:
    """Band-limited upsampling of ``x`` (B, C, *S) to ``sizes`` by zero-padding its spectrum.

    Exact inverse of ``lowpass_crop`` when every ``S_i`` is odd (as crops always produce) or unchanged.
    On an even axis that grows, the Nyquist bin is split in half between +-S_i/2, so the result
    passes through the input's samples and the upsampling is one matrix per axis
    (``upsample_matrix``) in any number of dimensions. Returns (B, C, *sizes).
    """
    spatial = tuple(range(2, x.ndim))
    spec = torch.fft.rfftn(fft_input(x), dim=spatial, norm="forward")
    nd = x.ndim - 2
    for axis, (n, m) in enumerate(zip(x.shape[2:], sizes, strict=True)):
        if n % 2 or m <= n:
            continue
        dim = 2 + axis
        if axis == nd - 1:  # one-sided: the implied conjugate partner takes the other half
            scale = torch.ones(spec.shape[dim], dtype=spec.real.dtype, device=spec.device)
            scale[-1] = 0.5
            spec = spec * scale
        else:  # bins 0..n/2-1, then -n/2 (Nyquist)..-1: half of it moves to +n/2
            half = spec.narrow(dim, n // 2, 1) * 0.5
            head, tail = spec.narrow(dim, 0, n // 2), spec.narrow(dim, n // 2 + 1, n // 2 - 1)
            spec = torch.cat([head, half, half, tail], dim=dim)  # n + 1 bins: an odd layout
    return torch.fft.irfftn(pad_spectrum(spec, sizes), s=list(sizes), dim=spatial, norm="forward")


def pad_spectrum(spec: Tensor, sizes: Sequence[int]) -> Tensor:
    """The rFFT spectrum ``spec`` (B, C, *bins) of a signal with odd (or unchanged) lengths, with zero
    bins inserted at the high frequencies so that it is the spectrum at ``sizes``."""
    nd = spec.ndim - 2
    for axis, m in enumerate(sizes):
        dim, bins = 2 + axis, spec.shape[2 + axis]
        want = m // 2 + 1 if axis == nd - 1 else m  # one-sided on the last axis
        if want == bins:
            continue
        if want < bins:
            raise ValueError(f"cannot upsample axis {axis} to smaller {m}")
        pad_shape = list(spec.shape)
        pad_shape[dim] = want - bins
        zeros = spec.new_zeros(pad_shape)
        if axis == nd - 1:
            spec = torch.cat([spec, zeros], dim=dim)
        else:
            pos = (bins + 1) // 2  # non-negative bins 0..(n-1)//2, then the negative ones
            head, tail = spec.narrow(dim, 0, pos), spec.narrow(dim, pos, bins - pos)
            spec = torch.cat([head, zeros, tail], dim=dim)
    return spec


def band_crop(x: Tensor, keep: Sequence[int], factors: Sequence[Tensor]) -> Tensor:
    """``lowpass_crop(x, keep, factors)`` for per-axis factors that are exactly 1 in value and carry
    a gradient (a straight-through spectral mask), with the backward pass written out.

    x: (B, C, *S); factors: per axis (n_kept_axis,) in ``kept_bins`` order. Returns (B, C, *S').
    Where nothing is cropped the forward pass is the identity and no transform runs; the backward
    pass takes two transforms (the input's and the gradient's spectra, for the factors' gradients),
    or none on axes of at most ``DIRECT_POWER`` samples (``marginal_powers``). Autograd through
    ``lowpass_crop`` would take four or more, one of them complex-to-complex, and multiply the whole
    spectrum by each axis's factors.
    """
    return _BandCrop.apply(fft_input(x), tuple(int(k) for k in keep), *factors)  # type: ignore[no-any-return]


class _BandCrop(torch.autograd.Function):
    """Forward: the band-limited crop. Backward, with G the unnormalised spectrum of the gradient g
    at the output size: the input's gradient is the crop's adjoint, ``irfftn(pad(G))`` with the
    ``backward`` norm (the identity where nothing is cropped); factor ``a``'s gradient at kept bin
    ``k`` is the sum over every bin with that index on axis ``a`` of ``w Re(X conj(G))``, X the
    input's kept spectrum (``forward`` norm) and ``w`` 2 for bins whose conjugate partner the
    one-sided last axis leaves out, else 1."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, keep: tuple[int, ...], *factors: Tensor) -> Tensor:
        sizes = tuple(x.shape[2:])
        out_sizes = tuple(output_length(n, k) for n, k in zip(sizes, keep, strict=True))
        ctx.sizes, ctx.out_sizes = sizes, out_sizes
        if out_sizes == sizes:
            ctx.save_for_backward(x)
            return x.view_as(x)
        dims = tuple(range(2, x.ndim))
        spec = _kept(torch.fft.rfftn(x, dim=dims, norm="forward"), sizes, keep)
        ctx.save_for_backward(spec)
        return torch.fft.irfftn(spec, s=out_sizes, dim=dims, norm="forward")

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        (saved,) = ctx.saved_tensors
        sizes, out_sizes = ctx.sizes, ctx.out_sizes
        dims = tuple(range(2, grad.ndim))
        cropped = out_sizes != sizes
        grad_x: Tensor | None = None
        if ctx.needs_input_grad[0]:
            grad_x = grad
        wanted = ctx.needs_input_grad[2:]
        if not any(wanted) and not cropped:
            return (grad_x, None, *([None] * len(wanted)))
        if not cropped and max(sizes) <= DIRECT_POWER:
            return (grad_x, None, *marginal_powers(saved, grad, wanted))
        spec_g = torch.fft.rfftn(grad, dim=dims, norm="backward")  # (B, C, *bins'), unnormalised
        if cropped and grad_x is not None:
            grad_x = torch.fft.irfftn(
                pad_spectrum(spec_g, sizes), s=sizes, dim=dims, norm="backward"
            )
        grads: list[Tensor | None] = [None] * len(wanted)
        if any(wanted):
            spec_x = saved if cropped else torch.fft.rfftn(saved, dim=dims, norm="forward")
            # Re(X conj(G)) summed over batch and channels first: one pass, then small tensors
            both = torch.view_as_real(spec_x) * torch.view_as_real(spec_g)  # (B, C, *bins, 2)
            power = both.sum((0, 1, -1)) * one_sided_weights(out_sizes[-1], both)  # (*bins)
            for axis, need in enumerate(wanted):
                if need:
                    other = [d for d in range(power.ndim) if d != axis]
                    grads[axis] = power.sum(other) if other else power  # sum([]) sums all
        return (grad_x, None, *grads)


DIRECT_POWER = 64  # axes up to this long: the uncropped crop's factor gradients without a transform


def marginal_powers(x: Tensor, grad: Tensor, wanted: Sequence[bool]) -> list[Tensor | None]:
    """The factor gradients of a crop that keeps every bin, without transforming x or grad.

    x, grad: (B, C, *S). For axis a, the cross-power of x and grad summed over every other index is,
    by Parseval over the other axes, ``Re D[k] / N`` with ``D`` the DFT of the circular diagonal
    sums of ``M = sum x[.., n, ..] grad[.., m, ..]``, an (N, N) matrix product. On the last axis this
    is exactly the one-sided spectrum's gradient (times 2 for bins with a left-out partner). On
    another axis it is the gradient summed over each frequency pair +-k and shared equally between
    the two: the mask factors are functions of |k|, so their parameters' gradients are unchanged.
    Costs N MACs per element per axis: for short axes (28, 40) less than the two transforms.
    Returns per axis (n_bins,) in ``kept_bins`` order, or None where not ``wanted``.
    """
    nd = x.ndim - 2
    out: list[Tensor | None] = []
    for axis, need in enumerate(wanted):
        if not need:
            out.append(None)
            continue
        n = x.shape[2 + axis]
        last = axis == nd - 1
        if last:
            a, b = x.reshape(-1, n), grad.reshape(-1, n)  # (R, N)
        else:
            a = x.movedim(2 + axis, -1).reshape(-1, n)
            b = grad.movedim(2 + axis, -1).reshape(-1, n)
        m = a.T @ b  # (N, N): M[n, m]
        lag = torch.arange(n, device=x.device)
        diag = m.gather(1, (lag[:, None] - lag[None, :]) % n).sum(0)  # c[d] = sum_n M[n, n - d]
        power = torch.fft.fft(diag).real / n  # (N,) for bins 0..N-1 (fftfreq order)
        out.append(power[: n // 2 + 1] * one_sided_weights(n, power) if last else power)
    return out


def one_sided_weights(n: int, like: Tensor) -> Tensor:
    """Per bin 0..n//2 of a one-sided (rFFT) axis of length n: 2 where the conjugate partner is left
    out of the spectrum, 1 for bin 0 and, for even n, the Nyquist bin (their own partners). (n//2+1,)."""
    weight = torch.full((n // 2 + 1,), 2.0, dtype=like.real.dtype, device=like.device)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    return weight


def _kept(spec: Tensor, sizes: Sequence[int], keep: Sequence[int]) -> Tensor:
    """The bins of ``spec`` (B, C, *bins) that a crop to ``keep`` keeps, in ``kept_bins`` order."""
    for axis, (n, k) in enumerate(zip(sizes, keep, strict=True)):
        idx = kept_bins(n, k, last=axis == len(sizes) - 1).to(spec.device)
        if idx.numel() != spec.shape[2 + axis]:
            spec = spec.index_select(2 + axis, idx)
    return spec


def resample_matrix(length: int, keep: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The real matrix A (n_out, length) with ``lowpass_crop(x, (keep,)) == x @ A.T`` on one axis.

    Band-limited resampling is linear and separable, so an N-d crop is one such matrix per axis. It is
    how the exported network resamples: a plain matmul that every runtime (and ONNX) supports.
    """
    eye = torch.eye(length, dtype=torch.float64)[:, None, :]  # (length, 1, length): basis signals
    response = lowpass_crop(eye, (keep,))[:, 0, :]  # (length, n_out): row j = response to e_j
    return response.T.contiguous().to(dtype)


def upsample_matrix(length: int, size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The real matrix U (size, length) with ``fourier_upsample(x, (size,)) == x @ U.T`` on one axis:
    band-limited upsampling (spectral zero-padding) as one plain matmul, as ``resample_matrix`` is for
    the crop."""
    eye = torch.eye(length, dtype=torch.float64)[:, None, :]  # (length, 1, length): basis signals
    response = fourier_upsample(eye, (size,))[:, 0, :]  # (length, size): row j = response to e_j
    return response.T.contiguous().to(dtype)


# the crop as matrices pays on axes up to this long (one matmul per axis beats the two transforms
# forward and two backward: 5x at 40 samples, 3x at 28 x 28, 2x at 392; at 784 the FFT wins)
MATRIX_MAX_LENGTH = 512


def apply_matrices(x: Tensor, matrices: Sequence[Tensor | None]) -> Tensor:
    """Resample x (B, C, *S) axis by axis, the last axis first (the order the cost estimate
    counts): ``matrices[i]`` (S'_i, S_i) maps axis i, None leaves it as it is. Each axis is one
    ``einsum`` that contracts it in place, 2-5x faster forward and backward on a 2-D map than
    moving the axis last for a matmul. Returns (B, C, *S')."""
    axes = "uvw"[: len(matrices)]
    with torch.autocast(x.device.type, enabled=False):  # in x's precision, as the transforms are
        return _apply_matrices(x, matrices, axes)


def _apply_matrices(x: Tensor, matrices: Sequence[Tensor | None], axes: str) -> Tensor:
    for i in reversed(range(len(matrices))):
        m = matrices[i]
        if m is None:
            continue
        if m.shape[1] == 1:  # from one sample: a matmul (einsum would broadcast a product)
            x = torch.matmul(x.movedim(2 + i, -1), m.T).movedim(-1, 2 + i)
            continue
        out = axes[:i] + "z" + axes[i + 1 :]
        x = torch.einsum(f"bc{axes},z{axes[i]}->bc{out}", x, m)
    return x

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
    spec = torch.fft.rfftn(fft_input(x), dim=spatial, norm="forward")
    out_sizes = []
    for axis, (n, k) in enumerate(zip(sizes, keep, strict=True)):
        last = axis == len(sizes) - 1
        idx = kept_bins(n, k, last=last).to(x.device)
        if idx.numel() != spec.shape[2 + axis]:
            spec = spec.index_select(2 + axis, idx)
        if spectral_mask is not None:
            shape = [1] * spec.ndim
            shape[2 + axis] = -1
            spec = spec * spectral_mask[axis].to(spec.real.dtype).reshape(shape)
        out_sizes.append(output_length(n, k))
    return torch.fft.irfftn(spec, s=out_sizes, dim=spatial, norm="forward")


def fourier_upsample(x: Tensor, sizes: Sequence[int]) -> Tensor:
    """Band-limited upsampling of ``x`` (B, C, *S) to ``sizes`` by zero-padding its spectrum.

    Exact inverse of ``lowpass_crop`` when every ``S_i`` is odd (as crops always produce) or unchanged.
    Returns (B, C, *sizes).
    """
    spatial = tuple(range(2, x.ndim))
    small = x.shape[2:]
    spec = torch.fft.rfftn(fft_input(x), dim=spatial, norm="forward")
    for axis, (n, m) in enumerate(zip(small, sizes, strict=True)):
        if m == n:
            continue
        if m < n:
            raise ValueError(f"cannot upsample axis {axis} from {n} to smaller {m}")
        last = axis == len(small) - 1
        pad_shape = list(spec.shape)
        if last:
            pad_shape[2 + axis] = m // 2 + 1 - spec.shape[2 + axis]
            spec = torch.cat([spec, spec.new_zeros(pad_shape)], dim=2 + axis)
        else:
            pos = (n + 1) // 2  # non-negative bins 0..(n-1)//2, then the negative ones
            pad_shape[2 + axis] = m - n
            head, tail = spec.narrow(2 + axis, 0, pos), spec.narrow(2 + axis, pos, n - pos)
            spec = torch.cat([head, spec.new_zeros(pad_shape), tail], dim=2 + axis)
    return torch.fft.irfftn(spec, s=list(sizes), dim=spatial, norm="forward")


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

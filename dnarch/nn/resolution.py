"""Learnable resolution: low-pass mask in the Fourier domain, then a crop of the spectrum (DiffStride-like)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import Tensor, nn

from dnarch.functional import fourier
from dnarch.functional.memo import made_once
from dnarch.nn.masks import LowpassMask


class FourierResolution(nn.Module):
    """Masks the spectrum with a learnable low-pass, crops it where the mask is below T and inverts it
    at the smaller size. Its cut-off is capped by the previous block's, so resolution never rises.

    Args:
        base: input size per spatial axis (frequency units); span, threshold: mask settings;
        init_cutoff: the cut-off it starts at (1: full resolution).
    """

    def __init__(
        self, base: Sequence[int], span: float, threshold: float, init_cutoff: float = 1.0
    ) -> None:
        super().__init__()
        self.mask = LowpassMask(base, span, threshold, init_cutoff)
        self._cache: dict[Hashable, list[Tensor | None]] = {}  # per ``_matrices``

    def _matrices(
        self, sizes: tuple[int, ...], keep: tuple[int, ...], like: Tensor
    ) -> list[Tensor | None]:
        """Per axis the crop's matrix (``fourier.resample_matrix``; None where the axis keeps its
        size), made once per sizes, kept bins, device and dtype."""
        return made_once(
            self._cache,
            (sizes, keep, like.device, like.dtype),
            lambda: [
                None
                if fourier.output_length(n, k) == n
                else fourier.resample_matrix(n, k, like.dtype).to(like.device)
                for n, k in zip(sizes, keep, strict=True)
            ],
        )

    def plan(self, lengths: Sequence[int], cap: Tensor | None) -> tuple[Tensor, tuple[int, ...]]:
        """Effective mu (ndim,) and highest kept bin per axis for an input of ``lengths``."""
        mu = self.mask.effective_mu(cap)
        return mu, self.mask.hard_keep(mu, lengths)

    def factors(
        self, lengths: Sequence[int], cap: Tensor | None
    ) -> tuple[Tensor, tuple[int, ...], list[Tensor]]:
        """Effective mu, kept bins per axis, and per-axis mask factors over the kept bins."""
        mu, keep = self.plan(lengths, cap)
        return mu, keep, self._factors(mu, keep, lengths)

    def _factors(self, mu: Tensor, keep: Sequence[int], lengths: Sequence[int]) -> list[Tensor]:
        out = []
        for axis, (n, k) in enumerate(zip(lengths, keep, strict=True)):
            last = axis == len(lengths) - 1
            idx = fourier.kept_bins(n, k, last=last).to(mu.device)
            out.append(self.mask.axis_values(mu, axis, n).index_select(0, idx))
        return out

    def forward(
        self, x: Tensor, cap: Tensor | None, keep: Sequence[int] | None = None
    ) -> tuple[Tensor, Tensor]:
        """x: (B, C, *S). Returns the resampled (B, C, *S') and this block's effective mu (the next cap).
        ``keep``: the highest kept bin per axis as the step's plan gives it (``BlockSpec.keep_bins``);
        None: the mask's own.

        The kept band passes with value exactly 1 and the mask enters straight-through (its gradient
        reaches mu as if it multiplied the spectrum). So the learned downsampling is a pure band-limited
        crop, which the exported network computes with one small fixed matrix per axis, and a block
        that does not downsample exports with no resampling at all.
        """
        sizes = tuple(x.shape[2:])
        if keep is None:
            mu, keep = self.plan(sizes, cap)
        else:
            mu, keep = self.mask.effective_mu(cap), tuple(keep)
        cropped = tuple(fourier.output_length(n, k) for n, k in zip(sizes, keep, strict=True))
        if not (torch.is_grad_enabled() and mu.requires_grad):
            # no gradient wanted for the cut-off (a fixed pyramid, or evaluation): the crop is a
            # fixed linear map, on short axes one small matrix each (``fourier.apply_matrices``)
            if cropped == sizes:
                return x, mu  # nothing to crop: the layer is the identity
            if max(sizes) > fourier.MATRIX_MAX_LENGTH:
                return fourier.lowpass_crop(x, keep), mu
            x = fourier.fft_input(x)  # half types resample in float32, as the transforms do
            return fourier.apply_matrices(x, self._matrices(sizes, keep, x)), mu
        factors = self._factors(mu, keep, sizes)
        ones = [(f - f.detach()) + 1.0 for f in factors]  # exactly 1 in value: (f - f) is 0
        return fourier.band_crop(x, keep, ones), mu

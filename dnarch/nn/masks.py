"""The learnable masks as modules: each holds its parameters and exposes values, soft and hard sizes.

``values`` are the mask with the threshold applied: entries beyond the hard (cropped) size are zero. The
cropped network and the uncropped network that multiplies by these values are therefore one function.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import torch
from torch import Tensor, nn

from dnarch.functional import fourier
from dnarch.functional import masks as fm
from dnarch.functional.memo import made_once

# Annealed gates: the sigmoid's logit at half a step from its centre once the gate is binary. At 20,
# float32 rounds the kept entries to exactly 1 and leaves the others below 3e-9.
BINARY_LOGIT = 20.0


def state_key(*tensors: Tensor) -> tuple[int, ...]:
    """Identifies the values of ``tensors`` (mask parameters and buffers) without reading them: each
    one's storage and its version counter, which every in-place change (an optimiser step,
    ``project_``, ``load_state_dict``, a ``fill_``) advances. A copy has other storage, so a key never
    matches a copy's values. Hard sizes are cached on it: the training step asks for each one many
    times between two optimiser steps, and each answer read through ``.item()`` is a tensor op."""
    return tuple(v for t in tensors for v in (t.data_ptr(), t._version))


class _Sharpness:
    """An annealed-gate temperature: a persistent ``sharpness`` buffer multiplies the sigmoid's tau
    (1: the plain DNArch mask). Run folders saved before it existed load with sharpness 1."""

    sharpness: Tensor
    # whether any sharpness differs from 1, kept in Python: a plain mask (every run without annealed
    # gates) then evaluates one sigmoid instead of two, with no tensor op spent on finding out
    sharp: bool = False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        key = prefix + "sharpness"
        if key not in state_dict:
            state_dict[key] = torch.ones_like(self.sharpness)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[misc]
        self._sharpened()

    def _sharpened(self) -> None:
        """Call after every change of ``sharpness``."""
        self.sharp = bool((self.sharpness != 1).any())

    def binary_sharpness(self) -> Tensor:
        """The sharpness at which, with ``mu`` midway between two grid points, every value is within
        exp(-BINARY_LOGIT) of 0 or 1."""
        raise NotImplementedError

    @torch.no_grad()
    def anneal_(self, fraction: float) -> None:
        """Sharpness ``binary_sharpness ** fraction``: 1 at 0, binary at 1 (geometric in between)."""
        self.sharpness.copy_(self.binary_sharpness() ** fraction)
        self._sharpened()


class GaussianKernelMask(nn.Module):
    """Kernel-extent mask: a Gaussian over relative kernel positions, one learnable width per axis.

    Args:
        ndim: number of spatial axes.
        init_cutoff: initial relative half-extent where the mask equals T (1 = the whole input).
        min_cutoff: lower bound kept by ``project_``; the kernel never falls below 3 taps anyway.
        threshold: T.
        max_cutoff: upper bound kept by ``project_``, and the maximal network's cut-off
            (``to_ceiling_``); 1: the whole map.
    """

    scale_value: Tensor  # ``scale`` as a 0-d buffer

    def __init__(
        self,
        ndim: int,
        init_cutoff: float,
        min_cutoff: float,
        threshold: float,
        max_cutoff: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0 < min_cutoff <= init_cutoff <= max_cutoff <= 1:
            raise ValueError(
                "need 0 < min_cutoff <= init_cutoff <= max_cutoff <= 1, got "
                f"{min_cutoff}, {init_cutoff}, {max_cutoff}"
            )
        self.threshold = threshold
        self.scale = math.sqrt(-2.0 * math.log(threshold))  # cutoff = sigma * scale
        self.register_buffer("scale_value", torch.tensor(self.scale), persistent=False)
        self.min_cutoff, self.max_cutoff = min_cutoff, max_cutoff
        self.sigma = nn.Parameter(torch.full((ndim,), init_cutoff / self.scale))
        self._axes: dict[Hashable, tuple[Tensor, Tensor | None]] = {}  # per ``_axis``
        self._cut: tuple[tuple[int, ...], list[float]] | None = None  # (state_key, cut-offs)

    def cutoff(self) -> Tensor:
        """Relative half-extent per axis where the mask equals T (``fm.gaussian_cutoff``). (ndim,)."""
        return self.sigma * self.scale_value

    def hard_sizes(self, lengths: Sequence[int]) -> tuple[int, ...]:
        """Odd kernel size per axis on a grid of ``lengths`` samples."""
        key = state_key(self.sigma)
        if self._cut is None or self._cut[0] != key:
            self._cut = key, self.cutoff().detach().tolist()
        cut = self._cut[1]
        return tuple(fm.hard_kernel_size(c, n) for c, n in zip(cut, lengths, strict=True))

    def soft_sizes(self, lengths: Tensor) -> Tensor:
        """Differentiable kernel size per axis, ``cutoff * N + 1`` (the hard size is its odd floor),
        at least 3. No upper clip, so the gradient stays alive at the maximal kernel. lengths: (ndim,)."""
        return torch.clamp(self.cutoff() * lengths + 1.0, min=3.0)

    def values(self, sizes: Sequence[int], lengths: Sequence[int], full: bool = False) -> Tensor:
        """Mask over a kernel grid: (*K). With ``full`` the grid is the maximal kernel and taps beyond
        the hard size are zero; otherwise the grid is the hard size itself."""
        out: Tensor | None = None
        for axis, (k, n) in enumerate(zip(sizes, lengths, strict=True)):
            neg_square, window = self._axis(k, n, full)
            # one axis takes sigma (1,) as it is: no select, no select backward
            sigma = self.sigma if self.sigma.numel() == 1 else self.sigma[axis]
            m = fm.gaussian_of_square(neg_square, sigma)
            if window is not None:  # zero beyond the hard size
                m = m * window
            out = m if out is None else out[..., None] * m
        assert out is not None
        return out

    def _axis(self, k: int, n: int, full: bool) -> tuple[Tensor, Tensor | None]:
        """One axis's negated squared tap positions ``-pos^2`` on its grid and, on the full grid,
        the 0/1 window of the hard size ``k`` (by integer tap index); made once per (k, n, full)
        and device."""
        key = (k, n, full, self.sigma.device)
        return made_once(self._axes, key, lambda: self._make_axis(k, n, full))

    def _make_axis(self, k: int, n: int, full: bool) -> tuple[Tensor, Tensor | None]:
        grid = fm.max_kernel_size(n) if full else k
        pos = fm.kernel_positions(grid, n).to(self.sigma.device)
        taps = torch.arange(grid, device=pos.device) - grid // 2
        return -(pos**2), (taps.abs() <= k // 2).to(pos.dtype) if full else None

    @torch.no_grad()
    def project_(self) -> None:
        """Keep the cut-off inside [min_cutoff, max_cutoff] so that no gradient path dies."""
        self.sigma.clamp_(self.min_cutoff / self.scale, self.max_cutoff / self.scale)

    @torch.no_grad()
    def to_floor_(self) -> None:
        """The smallest kernel ``project_`` allows (for the smallest reachable network)."""
        self.sigma.fill_(self.min_cutoff / self.scale)

    @torch.no_grad()
    def to_ceiling_(self) -> None:
        """The largest kernel ``project_`` allows: ``max_cutoff`` (for the maximal network)."""
        self.sigma.fill_(self.max_cutoff / self.scale)

    def extra_repr(self) -> str:
        return f"cutoff={[round(c, 3) for c in self.cutoff().tolist()]}"


class SigmoidStepMask(_Sharpness, nn.Module):
    """Step mask ``sigmoid(tau (mu - i/n))`` over ``n`` ordered entries (channels or blocks).

    Args:
        n: number of entries of the maximal network.
        span: entries over which the step rises from T to 1-T; sets ``tau`` (fixed).
        threshold: T.
        floor: entries always kept (1 channel, 1 block).
    """

    tau_value: Tensor  # ``tau`` as a 0-d buffer

    def __init__(self, n: int, span: float, threshold: float, floor: int = 1) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"mask size must be >= 1, got {n}")
        self.n, self.threshold, self.floor = n, threshold, floor
        self.tau = fm.step_tau(span, n, threshold)
        # start with every entry at >= 0.95, i.e. the maximal network
        init = (n - 1) / n + math.log(0.95 / 0.05) / self.tau
        self.mu = nn.Parameter(torch.tensor(init))
        # room above the last entry for a binary gate (``snap_``) too
        self.mu_max = max(init + math.log(0.95 / 0.05) / self.tau, (n - 0.5) / n)
        self.mu_min = -math.log((1 - threshold) / threshold) / self.tau  # first entry at T
        self.register_buffer("sharpness", torch.ones(()))
        # tau as a tensor: a Python number in a product is converted at every call, forward and
        # backward (the same float32 value either way)
        self.register_buffer("tau_value", torch.tensor(self.tau), persistent=False)
        self._grids: dict[Hashable, Tensor] = {}  # the positions i / n per grid (``raw``)
        self._cut: tuple[tuple[int, ...], float] | None = None  # (state_key, the step's cut-off)

    def raw(self, grid: int | None = None) -> Tensor:
        """Mask values before the threshold. (n,), or (grid,) on a stretched grid of ``grid`` entries
        over the same [0, 1) (a block whose maximal width grows as its resolution falls)."""
        n = self.n if grid is None else grid
        mu = self.mu
        u = made_once(
            self._grids,
            (n, mu.device, mu.dtype),
            lambda: torch.arange(n, device=mu.device, dtype=mu.dtype) / n,
        )
        if not self.sharp:
            return fm.sigmoid_step(u, self.mu, self.tau_value)
        return fm.annealed_step(u, self.mu, self.tau_value, self.sharpness)

    def binary_sharpness(self) -> Tensor:
        # entries lie 1/n apart: half a step is 1/(2n)
        value = 2 * self.n * BINARY_LOGIT / self.tau
        return torch.full_like(self.sharpness, value).clamp(min=1.0)

    @torch.no_grad()
    def snap_(self) -> None:
        """Make the gate binary with the same hard count: ``mu`` midway between the last kept entry and
        the next, sharpness binary."""
        k = self.hard_count()
        self.mu.fill_((k - 0.5) / self.n)
        self.sharpness.copy_(self.binary_sharpness())
        self._sharpened()

    def hard_count(self, grid: int | None = None) -> int:
        """Entries kept (mask >= T), at least ``floor``; of ``grid`` entries when given. In closed
        form (``functional.masks.step_count``): the entries ``i / n`` up to the step's cut-off."""
        n = self.n if grid is None else grid
        key = state_key(self.mu, self.sharpness)
        if self._cut is None or self._cut[0] != key:
            tau = self.tau * float(self.sharpness) if self.sharp else self.tau
            self._cut = key, fm.sigmoid_step_cutoff(self.mu.detach().item(), tau, self.threshold)
        return fm.step_count(self._cut[1], n, 1.0 / n, self.floor)

    def soft_count(self) -> Tensor:
        """Differentiable count: the sum of mask values. Scalar."""
        return self.raw().sum()

    def values(self, grid: int | None = None, size: int | None = None) -> Tensor:
        """Thresholded mask: zero beyond the hard count. (n,); with ``grid``, the values on that
        stretched grid, zero-padded to ``size`` entries (size >= grid). (size,)."""
        return self.values_and_count(grid, size)[0]

    def values_and_count(
        self, grid: int | None = None, size: int | None = None
    ) -> tuple[Tensor, int]:
        """``values(grid, size)`` and ``hard_count(grid)``, from one evaluation of the mask."""
        raw = self.raw(grid)
        kept = self.hard_count(grid)
        total = max(raw.numel(), size or 0)
        if kept >= total:
            return raw, kept
        return torch.nn.functional.pad(raw[:kept], (0, total - kept)), kept

    @torch.no_grad()
    def project_(self) -> None:
        self.mu.clamp_(self.mu_min, self.mu_max)

    @torch.no_grad()
    def to_floor_(self) -> None:
        """The fewest entries ``project_`` allows (for the smallest reachable network)."""
        self.mu.fill_(self.mu_min)

    @torch.no_grad()
    def to_ceiling_(self) -> None:
        """The most entries ``project_`` allows, every one kept (for the maximal network)."""
        self.mu.fill_(self.mu_max)

    def extra_repr(self) -> str:
        return f"n={self.n}, tau={self.tau:.1f}, kept={self.hard_count()}"


class LowpassMask(_Sharpness, nn.Module):
    """Resolution mask: a sigmoid low-pass over normalised frequency, one learnable cut-off per axis.

    Frequencies are in the input's units (``base`` samples per axis). The effective ``mu`` is capped by
    the previous block's, so resolution never rises along the network.

    Args:
        base: input size per spatial axis.
        span: frequency bins over which the step rises from T to 1-T; sets ``tau`` per axis.
        threshold: T.
        init_cutoff: the normalised frequency up to which every bin starts at >= 0.95 (1: the whole
            spectrum, full resolution).
    """

    def __init__(
        self, base: Sequence[int], span: float, threshold: float, init_cutoff: float = 1.0
    ) -> None:
        super().__init__()
        self.base = tuple(int(b) for b in base)
        self.threshold = threshold
        self.tau = [fm.step_tau(span, max(b // 2, 1), threshold) for b in self.base]
        full = [1.0 + math.log(0.95 / 0.05) / t for t in self.tau]  # every bin at >= 0.95
        self.mu_max = [i + math.log(0.95 / 0.05) / t for i, t in zip(full, self.tau, strict=True)]
        init = [init_cutoff + math.log(0.95 / 0.05) / t for t in self.tau]
        self.mu = nn.Parameter(torch.tensor(init))
        self.register_buffer("sharpness", torch.ones(len(self.base)))

    def effective_mu(self, cap: Tensor | None) -> Tensor:
        """mu capped by the previous block's effective mu. (ndim,)."""
        return self.mu if cap is None else torch.minimum(self.mu, cap)

    def axis_values(self, mu: Tensor, axis: int, length: int) -> Tensor:
        """Mask over the rFFT bins of a length-``length`` axis (no threshold). (n_bins,)."""
        last = axis == len(self.base) - 1
        f = fourier.normalised_frequencies(length, self.base[axis], last=last).to(mu)
        if not self.sharp:
            return fm.sigmoid_step(f, mu[axis], self.tau[axis])
        return fm.annealed_step(f, mu[axis], self.tau[axis], self.sharpness[axis])

    def hard_keep(self, mu: Tensor, lengths: Sequence[int]) -> tuple[int, ...]:
        """Highest bin kept per axis (mask >= T), at least bin 1 where the axis has it."""
        keep = []
        mus = mu.detach().tolist()
        sharp = self.sharpness.tolist() if self.sharp else [1.0] * len(self.base)
        for axis, n in enumerate(lengths):
            # bins 0..n//2 at normalised frequency k * 2 / base, kept up to the step's cut-off
            tau = self.tau[axis] * sharp[axis]
            cut = fm.sigmoid_step_cutoff(mus[axis], tau, self.threshold)
            keep.append(fm.step_count(cut, n // 2 + 1, 2.0 / self.base[axis], floor=2) - 1)
        return tuple(keep)

    def soft_sizes(self, mu: Tensor, lengths: Tensor) -> Tensor:
        """Differentiable output size per axis: ``cutoff * base + 1`` (the hard size is ``2 k_c + 1``
        with ``k_c = floor(cutoff * base / 2)``), at least min(3, N). No upper clip, so the gradient
        stays alive at full resolution. (ndim,)."""
        base = torch.tensor(self.base, dtype=mu.dtype, device=mu.device)
        tau = self.tau_tensor(mu) * self.sharpness if self.sharp else self.tau_tensor(mu)
        cutoff = fm.sigmoid_step_cutoff(mu, tau, self.threshold)
        return torch.maximum(cutoff * base + 1.0, torch.clamp(lengths, max=3.0))

    def tau_tensor(self, like: Tensor) -> Tensor:
        return torch.tensor(self.tau, dtype=like.dtype, device=like.device)

    def binary_sharpness(self) -> Tensor:
        # bins lie 2/base apart in normalised frequency: half a step is 1/base
        steps = [b * BINARY_LOGIT / t for b, t in zip(self.base, self.tau, strict=True)]
        return torch.tensor(steps, device=self.sharpness.device).clamp(min=1.0)

    @torch.no_grad()
    def snap_(self, keep: Sequence[int]) -> None:
        """Make the gate binary, keeping bins ``0..keep`` per axis (the block's hard keep, cap
        included): ``mu`` midway between bin ``keep`` and the next, sharpness binary."""
        for axis, (k, b) in enumerate(zip(keep, self.base, strict=True)):
            self.mu[axis] = (k + 0.5) * 2.0 / b
        self.sharpness.copy_(self.binary_sharpness())
        self._sharpened()

    @torch.no_grad()
    def project_(self) -> None:
        for axis, hi in enumerate(self.mu_max):
            self.mu[axis].clamp_(0.0, hi)

    @torch.no_grad()
    def to_floor_(self) -> None:
        """The lowest resolution ``project_`` allows (for the smallest reachable network)."""
        self.mu.fill_(0.0)

    @torch.no_grad()
    def to_ceiling_(self) -> None:
        """The highest resolution ``project_`` allows: the full one (for the maximal network)."""
        for axis, hi in enumerate(self.mu_max):
            self.mu[axis].fill_(hi)

    def extra_repr(self) -> str:
        return f"base={self.base}, mu={[round(m, 3) for m in self.mu.tolist()]}"


class GroupMask(SigmoidStepMask):
    """Group count of one pointwise layer: DGConv's Kronecker factors (``functional.groups``), one
    gate per bit of the channel index, ordered so that the lowest bits close first.

    It is a step mask over the ``bits`` factors, highest bit first: entry ``e`` gates bit
    ``bits - 1 - e``. The kept entries (>= T) are the bits whose channels stay connected (their
    factor keeps its value, 1 or fractional); the closed ones (below T, exactly 0 after the threshold)
    split the channels, so the layer has ``2 ** (bits - kept)`` groups. No entry need stay open (floor
    0): every bit closed is ``2 ** bits`` groups. At the start every factor is open: the dense layer.
    """

    def __init__(self, bits: int, span: float, threshold: float) -> None:
        super().__init__(bits, span, threshold, floor=0)
        # room below the first entry for it to close (a value there well under T)
        low = min(0.05, threshold / 2)
        self.mu_min = min(-0.5 / bits, -math.log((1 - low) / low) / self.tau)

    def factors(self) -> Tensor:
        """Thresholded gate per bit, bit 0 first: 0 for a closed bit. (bits,)."""
        return self.values().flip(0)

    def hard_groups(self) -> int:
        """Groups of the cropped (exported) layer."""
        return 2 ** (self.n - self.hard_count())

    def soft_groups(self) -> Tensor:
        """Differentiable group count: the inverse of U's density, ``prod_j 2 / (1 + g_j)`` over the
        raw gates (``hard_groups`` when every gate is 0 or 1). Scalar."""
        return (2.0 / (1.0 + self.raw())).prod()

    def extra_repr(self) -> str:
        return f"bits={self.n}, tau={self.tau:.1f}, groups={self.hard_groups()}"

"""Channel-axis helpers shared by the masked network and the exported one (plain PyTorch)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from dnarch.functional.conv import Verdicts, time_both


def leading(t: Tensor, rows: int | None, cols: int | None = None) -> Tensor:
    """``t[:rows, :cols]`` (None: all of that axis). Where that is all of ``t``, ``t`` itself: no
    slice is recorded, and its backward (a zero tensor of t's size and a copy) is not run. Written
    out by case: it runs some 70 times a forward pass."""
    cut_rows = rows is not None and rows < t.shape[0]
    cut_cols = cols is not None and cols < t.shape[1]
    if cut_rows and cut_cols:
        return t[:rows, :cols]
    if cut_rows:
        return t[:rows]
    if cut_cols:
        return t[:, :cols]
    return t


def pad_channels(x: Tensor, c: int) -> Tensor:
    """x: (B, c', *S) with c' <= c -> (B, c, *S), zero channels appended (a stream that widens)."""
    extra = c - x.shape[1]
    if extra <= 0:
        return x
    return torch.cat([x, x.new_zeros(x.shape[0], extra, *x.shape[2:])], 1)


def fit_channels(x: Tensor, c: int) -> Tensor:
    """x: (B, c', *S) -> (B, c, *S): its first c channels where c < c' (a stream that narrows),
    zero channels appended where c > c'."""
    if x.shape[1] > c:
        return x[:, :c]
    return pad_channels(x, c)


FEW_POSITIONS = 64
"""Where no verdict is kept (or algorithms must be deterministic), a 1x1 layer on fewer positions
per sample than this runs as one matrix product over the batch's positions (``_PositionsProduct``),
and on more as one product per sample."""

TIMED_POSITIONS = 128
"""Up to this many positions per sample, ``choose_product`` times the two products; above it the
per-sample product is taken untimed."""

TIMED_SAMPLES = 32
"""``choose_product`` times the two products on at most this many samples of the batch."""


class _PositionsProduct(torch.autograd.Function):
    """A 1x1 convolution on few positions as one matrix product over all the batch's positions.

    x: (B, cols, P), w: (rows, cols), b: (rows,) or None -> (B, rows, P), contiguous. The layout
    copies are written out so that the gradients come back contiguous too: autograd through
    ``transpose`` would hand the layers below a transposed gradient, and an elementwise backward
    (GELU's) on it runs 1.5-2.5x slower.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        batch, cols, positions = x.shape
        cols_by_pos = x.transpose(0, 1).reshape(cols, batch * positions)
        prod = torch.mm(w, cols_by_pos) if b is None else torch.addmm(b[:, None], w, cols_by_pos)
        ctx.save_for_backward(cols_by_pos, w)
        ctx.has_bias = b is not None
        return prod.view(w.shape[0], batch, positions).transpose(0, 1).contiguous()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        cols_by_pos, w = ctx.saved_tensors
        batch, rows, positions = grad.shape
        rows_by_pos = grad.transpose(0, 1).reshape(rows, batch * positions)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (
                torch.mm(w.t(), rows_by_pos)
                .view(w.shape[1], batch, positions)
                .transpose(0, 1)
                .contiguous()
            )
        if ctx.needs_input_grad[1]:
            grad_w = torch.mm(rows_by_pos, cols_by_pos.t())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = rows_by_pos.sum(1)
        return grad_x, grad_w, grad_b


def conv1x1(x: Tensor, w: Tensor, b: Tensor | None, verdicts: Verdicts | None = None) -> Tensor:
    """A 1x1 convolution. x: (B, cols, *S), w: (rows, cols), b: (rows,) or None -> (B, rows, *S).

    Either one matrix product per sample (``torch.baddbmm``, the weight broadcast over the batch:
    2-4x faster on a CPU than ``F.conv2d`` on large maps) or one product of the weight with every
    position of the batch, (rows, cols) x (cols, B * P) (up to 5x faster than the first on a few
    positions, the layout copies included). Which is faster depends on the CPU's matrix library
    as much as on the shapes: ``choose_product`` times them once per shape class and keeps the
    verdict in ``verdicts``; with none, fewer than ``FEW_POSITIONS`` positions take the second.
    """
    batch = x.shape[0]
    flat = x.reshape(batch, x.shape[1], -1)  # (B, cols, P)
    if verdicts is None:
        positions = flat.shape[2] < FEW_POSITIONS
    else:
        positions = choose_product(flat, w, verdicts) == "positions"
    return _product(flat, w, b, positions).reshape(batch, w.shape[0], *x.shape[2:])


def _product(flat: Tensor, w: Tensor, b: Tensor | None, positions: bool) -> Tensor:
    """flat (B, cols, P) -> (B, rows, P) by the named product."""
    if positions:
        out: Tensor = _PositionsProduct.apply(flat, w, b)
        return out
    weight = w.expand(flat.shape[0], *w.shape)
    return torch.bmm(weight, flat) if b is None else torch.baddbmm(b[None, :, None], weight, flat)


def choose_product(flat: Tensor, w: Tensor, verdicts: Verdicts) -> str:
    """'positions' or 'batched': the faster product for a 1x1 layer of these shapes on this device
    (``conv1x1``), kept in ``verdicts``. flat: (B, cols, P), w: (rows, cols).

    Timed once per shape class (alternated, best of 3), forward and backward where a gradient is
    wanted, on up to ``TIMED_SAMPLES`` samples of the batch: positions are bucketed by quarter
    octaves, the weight's size by octaves (the widths move all through training, and every timing
    costs time; timed on a whole evaluation batch of 512, they once took a sixth of a run). Above
    ``TIMED_POSITIONS`` positions, or under deterministic algorithms (so that runs repeat
    exactly), the rule of ``FEW_POSITIONS`` decides untimed.
    """
    positions = flat.shape[2]
    rows, cols = w.shape
    if torch.are_deterministic_algorithms_enabled() or positions > TIMED_POSITIONS:
        return "positions" if positions < FEW_POSITIONS else "batched"
    train = torch.is_grad_enabled() and (flat.requires_grad or w.requires_grad)
    samples = min(flat.shape[0], TIMED_SAMPLES)
    buckets = ("product", round(math.log2(rows * cols)), train)
    key = (flat.device.type, flat.dtype, (round(4 * math.log2(positions)), samples), buckets)

    def decide() -> str:
        xs, ws = flat[:samples].detach(), w.detach()
        if train:
            xs, ws = xs.requires_grad_(), ws.requires_grad_()
            grad = torch.ones(samples, rows, positions, device=flat.device, dtype=flat.dtype)

        def run(by_positions: bool) -> None:
            if train:
                torch.autograd.grad(_product(xs, ws, None, by_positions), (xs, ws), grad)
            else:
                with torch.no_grad():
                    _product(xs, ws, None, by_positions)

        t_positions, t_batched = time_both(
            lambda: run(True), lambda: run(False), flat.device, repeats=3
        )
        return "positions" if t_positions < t_batched else "batched"

    return verdicts.remember(key, decide)

"""Channel-axis helpers shared by the masked network and the exported one (plain PyTorch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


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


def corner(t: Tensor, sizes: Sequence[int]) -> Tensor:
    """``t[:sizes[0], :sizes[1], ...]``: the leading corner of ``t`` (a view), every axis cut."""
    return t[tuple(slice(0, n) for n in sizes)]


def larger(saved: Tensor, t: Tensor) -> bool:
    """Whether ``saved`` holds ``t``'s shape as its leading corner (``corner``), and more."""
    return (
        saved.dim() == t.dim()
        and saved.shape != t.shape
        and all(a >= b for a, b in zip(saved.shape, t.shape, strict=True))
    )


def holds(saved: Tensor, t: Tensor) -> bool:
    """Whether ``saved`` has ``t``'s shape, or holds it as its leading corner (``larger``)."""
    return saved.shape == t.shape or larger(saved, t)


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
"""Below this many positions per sample a 1x1 layer runs as one matrix product over the batch's
positions (``_PositionsProduct``); from it, as one product per sample (``conv1x1``)."""


def _by_positions(t: Tensor) -> Tensor:
    """(B, C, P) -> (C, B * P): every position of the batch a column (one layout copy)."""
    batch, channels, positions = t.shape
    return t.transpose(0, 1).reshape(channels, batch * positions)


def _from_positions(
    t: Tensor, batch: int, positions: int, residual: Tensor | None = None
) -> Tensor:
    """(C, B * P) -> (B, C, P), contiguous: ``_by_positions`` undone (one layout copy); with a
    ``residual`` (B, C, P), ``residual +`` it, the sum written in that layout (no copy before)."""
    out = t.view(t.shape[0], batch, positions).transpose(0, 1)
    if residual is None:
        return out.contiguous()
    return torch.add(residual, out).contiguous()


class _PositionsProduct(torch.autograd.Function):
    """A 1x1 convolution on few positions as one matrix product over all the batch's positions.

    x: (B, cols, P), w: (rows, cols), b: (rows,) or None -> (B, rows, P), contiguous. The layout
    copies are written out so that the gradients come back contiguous too: autograd through
    ``transpose`` would hand the layers below a transposed gradient, and an elementwise backward
    (GELU's) on it ran 1.5-4x slower (METHOD-NOTES, Speed).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        batch, _, positions = x.shape
        cols_by_pos = _by_positions(x)
        prod = torch.mm(w, cols_by_pos) if b is None else torch.addmm(b[:, None], w, cols_by_pos)
        # under autocast the product ran in its own precision: the backward pass computes in it too
        ctx.save_for_backward(cols_by_pos.to(prod.dtype), w.to(prod.dtype))
        ctx.dtypes = (x.dtype, w.dtype, None if b is None else b.dtype)
        return _from_positions(prod, batch, positions)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        cols_by_pos, w = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        batch, _, positions = grad.shape
        rows_by_pos = _by_positions(grad).to(w.dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _from_positions(torch.mm(w.t(), rows_by_pos), batch, positions).to(x_dtype)
        if ctx.needs_input_grad[1]:
            grad_w = torch.mm(rows_by_pos, cols_by_pos.t()).to(w_dtype)
        if b_dtype is not None and ctx.needs_input_grad[2]:
            grad_b = rows_by_pos.sum(1).to(b_dtype)
        return grad_x, grad_w, grad_b


def conv1x1(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """A 1x1 convolution. x: (B, cols, *S), w: (rows, cols), b: (rows,) or None -> (B, rows, *S).

    On large maps, one matrix product per sample (``torch.baddbmm``, the weight broadcast over the
    batch): forward and backward 2-4x faster on a CPU than ``F.conv2d``. On fewer than
    ``FEW_POSITIONS`` positions those products are too small to run fast, and one product of the
    weight with every position of the batch, (rows, cols) x (cols, B * P), ran up to 5x faster,
    the two layout copies included (METHOD-NOTES, Speed: a choice timed per shape class instead
    made whole runs slower, its verdicts swayed by noise).
    """
    batch = x.shape[0]
    flat = x.reshape(batch, x.shape[1], -1)  # (B, cols, P)
    if flat.shape[2] < FEW_POSITIONS:
        out = _PositionsProduct.apply(flat, w, b)
    else:
        weight = w.expand(batch, *w.shape)
        out = (
            torch.bmm(weight, flat) if b is None else torch.baddbmm(b[None, :, None], weight, flat)
        )
    return out.reshape(batch, w.shape[0], *x.shape[2:])


class _PositionsMLP(torch.autograd.Function):
    """``_PositionsProduct``, GELU, ``_PositionsProduct`` as one function: the hidden activation
    stays in the positions layout (cols, B * P), so the two layout copies between the layers, and
    their two in the backward pass, are not made. With ``act_in``, GELU on the input first; with a
    ``residual``, the output is ``residual + mlp(x)`` (a residual block's sum made with the output's
    layout copy): the same arithmetic, two autograd nodes fewer.

    x: (B, cols, P), w1: (hidden, cols), b1: (hidden,) or None, w2: (rows, hidden), b2: (rows,)
    or None, residual: (B, rows, P) or None -> (B, rows, P), contiguous (and so are the gradients).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        w1: Tensor,
        b1: Tensor | None,
        w2: Tensor,
        b2: Tensor | None,
        act_in: bool,
        residual: Tensor | None,
    ) -> Tensor:
        batch, _, positions = x.shape
        cols_by_pos, inp, pre, act, out = _mlp_by_positions(x, w1, b1, w2, b2, act_in)
        # under autocast the products ran in their own precision: the backward pass computes in it
        dtype = out.dtype
        ctx.save_for_backward(
            cols_by_pos if act_in else None,  # GELU's input: its backward in the input's precision
            inp.to(dtype),
            pre.to(dtype),
            act.to(dtype),
            w1.to(dtype),
            w2.to(dtype),
        )
        ctx.dtypes = (x.dtype, w1.dtype, None if b1 is None else b1.dtype, w2.dtype)
        ctx.dtypes += (None if b2 is None else b2.dtype,)
        return _from_positions(out, batch, positions, residual)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        cols_by_pos, inp, pre, act, w1, w2 = ctx.saved_tensors
        x_dtype, w1_dtype, b1_dtype, w2_dtype, b2_dtype = ctx.dtypes
        need_x, need_w1, need_b1, need_w2, need_b2, _, need_residual = ctx.needs_input_grad
        batch, _, positions = grad.shape
        rows_by_pos = _by_positions(grad).to(w2.dtype)
        grad_x = grad_w1 = grad_b1 = grad_w2 = grad_b2 = None
        if need_w2:
            grad_w2 = torch.mm(rows_by_pos, act.t()).to(w2_dtype)
        if b2_dtype is not None and need_b2:
            grad_b2 = rows_by_pos.sum(1).to(b2_dtype)
        if need_x or need_w1 or need_b1:
            grad_pre = torch.ops.aten.gelu_backward(torch.mm(w2.t(), rows_by_pos), pre)
            if need_w1:
                grad_w1 = torch.mm(grad_pre, inp.t()).to(w1_dtype)
            if b1_dtype is not None and need_b1:
                grad_b1 = grad_pre.sum(1).to(b1_dtype)
            if need_x:
                grad_inp = torch.mm(w1.t(), grad_pre)
                if cols_by_pos is not None:  # GELU on the input
                    grad_inp = torch.ops.aten.gelu_backward(
                        grad_inp.to(cols_by_pos.dtype), cols_by_pos
                    )
                grad_x = _from_positions(grad_inp, batch, positions).to(x_dtype)
        grad_residual = grad if need_residual else None
        return grad_x, grad_w1, grad_b1, grad_w2, grad_b2, None, grad_residual


def _mlp_by_positions(
    x: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None, act_in: bool = False
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The two layers and GELU on x (B, cols, P) in the positions layout: (x as (cols, B * P), the
    first layer's input (its GELU with ``act_in``, else the same), the first layer's output, its
    GELU, the second layer's output (rows, B * P))."""
    cols_by_pos = _by_positions(x)
    inp = F.gelu(cols_by_pos) if act_in else cols_by_pos
    pre = torch.mm(w1, inp) if b1 is None else torch.addmm(b1[:, None], w1, inp)
    act = F.gelu(pre)
    out = torch.mm(w2, act) if b2 is None else torch.addmm(b2[:, None], w2, act)
    return cols_by_pos, inp, pre, act, out


def mlp_fuses(x: Tensor) -> bool:
    """Whether ``pointwise_mlp`` runs on x (B, C, *S) in the positions layout throughout: on fewer
    than ``FEW_POSITIONS`` positions a sample."""
    return math.prod(x.shape[2:]) < FEW_POSITIONS


def pointwise_mlp(
    x: Tensor,
    w1: Tensor,
    b1: Tensor | None,
    w2: Tensor,
    b2: Tensor | None,
    act_in: bool = False,
    residual: Tensor | None = None,
) -> Tensor:
    """A 1x1 convolution, GELU, a 1x1 convolution; with ``act_in``, GELU on x first; with a
    ``residual``, ``residual + `` the result. x: (B, cols, *S), w1: (hidden, cols), b1: (hidden,)
    or None, w2: (rows, hidden), b2: (rows,) or None, residual: (B, rows, *S) or None -> (B, rows,
    *S).

    On fewer than ``FEW_POSITIONS`` positions (``mlp_fuses``) the hidden activation stays in the
    positions layout of ``_PositionsProduct``: while gradients are recorded as one autograd
    function (``_PositionsMLP``; on MNIST-1D's blocks forward and backward took about 20% less
    than the two layers apart), without them as its forward pass (about 10% less inference time
    for the learned networks; METHOD-NOTES, Speed). Otherwise ``conv1x1``, GELU, ``conv1x1``.
    """
    if not mlp_fuses(x):
        h = conv1x1(F.gelu(conv1x1(F.gelu(x) if act_in else x, w1, b1)), w2, b2)
        return h if residual is None else residual + h
    batch, rows = x.shape[0], w2.shape[0]
    flat = x.reshape(batch, x.shape[1], -1)
    res = None if residual is None else residual.reshape(batch, rows, -1)
    if torch.is_grad_enabled():
        out = _PositionsMLP.apply(flat, w1, b1, w2, b2, act_in, res)
    else:
        prod = _mlp_by_positions(flat, w1, b1, w2, b2, act_in)[4]
        out = _from_positions(prod, batch, flat.shape[2], res)
    return out.reshape(batch, rows, *x.shape[2:])

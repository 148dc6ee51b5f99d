"""Analytic, differentiable inference cost: multiply-accumulates (MACs) and parameters per sample.

Counted as ``torch.utils.flop_counter.FlopCounterMode`` counts the exported network, divided by 2
(it reports FLOPs = 2 x MACs for convolutions and matrix products): convolutions and linear layers only.
Not counted, by it or here: biases, norms and activations. Per sample, with P_l the number of positions block l runs at and K_l its kernel taps:

    stem   P_0 * C_in * C * S         (S = stem taps: 1, or k^ndim for a k-tap stem)
    block  D_l * (P_l * C * K_l  +  P_l * C * W_l  +  P_l * W_l * C)     depthwise, pointwise x2
           (C here is the block's own width C_l, which ``NetConfig.widen`` stretches where the
           resolution falls; the resampling term below counts the previous block's width, and the
           head the last kept block's; the zero channels that widen the stream are not counted)
           (grouped pointwise layers: P_l * ceil(C / G) * W' each, where G is the layer's groups and
           W' = G_f * ceil(W_l / G_f) the hidden width padded for the finer grouping G_f of the two,
           as ``export.static`` lays the groups out)
           + D_l * C * sum over downsampled axes of (positions after) * (input length of the axis)
           (or, where the block halves by its strided filter, ``NetConfig.downsample``:
           + D_l * P_l * C * 3^ndim, the filter's taps at the halved positions; with 'strided-mix'
           + D_l * P_l * C * C_l * 3^ndim more, its full convolution from the C incoming channels
           to the block's C_l)
    head   C * classes                                                    (classification)
           C * sum over upsampled axes of (positions after) * (input length of the axis)
           + P_0 * C * classes                                     (per position: dense head)

The resampling term is the exported network's: a fixed matrix per downsampled axis. (During training
the masked network resamples by FFT, which is cheaper and which the counter does not see.)

The dense head brings the last kept block's output back to the input resolution with one fixed matrix
per upsampled axis (Fourier zero-padding, as the exported network computes it); its skip from the stem
is an addition, which the counter does not count.

Parameters of the exported network: stem C_in*C*S + C (+ 2C for the norm of a k-tap stem); per block D_l * (2C norm + C*K_l + C depthwise
+ C*W_l + W_l + W_l*C + C, + C*3^ndim for a strided halving filter, + C*C_l*3^ndim for its full
convolution), with grouped pointwise layers as their padded weights and biases; head
2C + C*classes + classes (either head).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dnarch.models.dnarchnet import ArchSizes, DNArchNet
from dnarch.plan import BlockSpec


@dataclass
class Cost:
    """macs: multiply-accumulates per sample; params: parameter count. Scalars (tensors)."""

    macs: Tensor
    params: Tensor

    def get(self, metric: str) -> Tensor:
        if metric not in ("macs", "params"):
            raise ValueError(f"unknown cost metric {metric!r}; choose macs or params")
        return self.macs if metric == "macs" else self.params


def estimate_cost(
    sizes: ArchSizes,
    in_channels: int,
    num_classes: int,
    input_shape: tuple[int, ...],
    dense: bool = False,
    stem_taps: int = 1,
) -> Cost:
    """Cost of the network with these sizes (soft sizes give a differentiable cost). ``dense``: the
    head outputs ``num_classes`` values at every input position instead of once per sample.
    ``stem_taps``: the stem's kernel taps (1: pointwise)."""
    c = sizes.residual  # the stem's width; block l runs at its own width C_l (sizes.width)
    head = sizes.head_width
    p0 = float(math.prod(input_shape))
    s0 = torch.tensor([float(n) for n in input_shape], device=c.device)
    macs = p0 * in_channels * stem_taps * c
    if dense:
        up = resample_macs(sizes.head_in[None], s0[None], [sizes.head_upsampled], head.reshape(1))
        macs = macs + (up.sum() if isinstance(up, Tensor) else up) + p0 * head * num_classes
    else:
        macs = macs + head * num_classes
    stem_norm = 2 * c if stem_taps > 1 else 0.0
    params = (
        in_channels * stem_taps * c + c + stem_norm + 2 * head + head * num_classes + num_classes
    )
    # every block at once: (L,) per size
    cl, w, d = sizes.width, sizes.hidden, sizes.depth
    p, taps = sizes.resolution.prod(1), sizes.kernel.prod(1)
    if sizes.grouped:
        g1, g2 = sizes.groups.unbind(1)
        hidden = torch.maximum(g1, g2)
        hidden = hidden * per_group(w, hidden)  # the padded hidden width W'
        pw1, pw2 = per_group(cl, g1) * hidden, hidden * per_group(cl, g2)  # pw1's, pw2's weights
        bias2 = g2 * per_group(cl, g2)
    else:  # one group each: the same terms, without the padding arithmetic
        hidden, pw1, pw2, bias2 = w, cl * w, w * cl, cl
    # the stream is resampled at block l's input (at block l-1's width), then widened
    prev = torch.cat([s0[None], sizes.resolution[:-1]])  # (L, ndim)
    prev_c = torch.cat([c.reshape(1), cl[:-1]])
    down = resample_macs(prev, sizes.resolution, sizes.resampled, prev_c)  # Fourier crops
    halving: Tensor | float = 0.0  # a strided 3-tap-per-axis filter per incoming channel
    if any(sizes.halved):
        taps3 = 3.0 ** len(input_shape)
        halving = torch.tensor(sizes.halved, device=c.device).to(p.dtype) * prev_c * taps3
        if any(sizes.mixed):  # and a full convolution from the stream to the block's width
            mixed = torch.tensor(sizes.mixed, device=c.device).to(p.dtype)
            halving = halving + mixed * prev_c * cl * taps3
    macs = macs + (d * (p * cl * taps + p * (pw1 + pw2) + down + p * halving)).sum()
    params = params + (d * (2 * cl + cl * taps + cl + pw1 + hidden + pw2 + bias2 + halving)).sum()
    return Cost(macs=torch.as_tensor(macs), params=torch.as_tensor(params))


def per_group(channels: Tensor, groups: Tensor) -> Tensor:
    """Channels per group of a grouped layer, ``channels / groups``; where the (hard) layer has
    groups its value is the padded ``ceil(channels / groups)`` (the export pads every group to the
    largest), with the gradient of the quotient."""
    share = channels / groups
    pad = (torch.ceil(share) - share).detach() * (groups.detach() > 1.5).to(share.dtype)
    return share + pad


def resample_macs(
    sizes_in: Tensor, sizes_out: Tensor, resampled: list[tuple[bool, ...]], channels: Tensor
) -> Tensor | float:
    """MACs of the exported network's resampling, for L resamplings at once (the blocks, or the
    dense head's one): one matrix product per resampled axis, last axis first, each costing
    (positions after it) x (input length of that axis) per channel. sizes_in, sizes_out (L, ndim),
    resampled: per row and axis, channels (L,) -> (L,), zero where a row does not resample (0.0
    where none does)."""
    if not any(any(r) for r in resampled):
        return 0.0
    which = torch.tensor(resampled, device=sizes_in.device)  # (L, ndim)
    cols = list(sizes_in.unbind(1))
    total: Tensor | float = 0.0
    for axis in reversed(range(len(cols))):
        if not any(r[axis] for r in resampled):
            continue
        after = torch.stack(cols[:axis] + [sizes_out[:, axis]] + cols[axis + 1 :], 1).prod(1)
        term = channels * after * cols[axis]
        total = total + torch.where(which[:, axis], term, torch.zeros_like(term))
        cols[axis] = torch.where(which[:, axis], sizes_out[:, axis], cols[axis])
    return total


def model_cost(
    model: DNArchNet, kind: str = "straight_through", plan: Sequence[BlockSpec] | None = None
) -> Cost:
    """Cost of ``model``'s current architecture (its head, pooled or dense, included).

    kind: 'soft' (differentiable), 'hard' (the cropped network, exact), 'max' (the maximal network), or
    'straight_through': the hard value with the soft gradient, so the penalty sees the real network.
    plan: the model's ``hard_plan()`` of this step, if the caller has it already.
    """
    args = (
        model.in_channels,
        model.num_classes,
        model.input_shape,
        model.dense,
        model.stem_kernel**model.ndim,
    )
    if kind == "max":
        return estimate_cost(model.max_sizes(), *args)
    if kind == "hard":
        return estimate_cost(model.arch_sizes(True, plan), *args)
    if kind == "soft":
        return estimate_cost(model.arch_sizes(False, plan), *args)
    if kind != "straight_through":
        raise ValueError(f"unknown cost kind {kind!r}")
    plan = model.hard_plan() if plan is None else plan
    return linearised_cost(model, plan, args)


# the sizes the cost depends on differentiably (the others are discrete facts of the plan)
_SIZE_FIELDS = (
    "residual", "depth", "kernel", "hidden", "resolution", "head_in", "groups", "width",
    "head_width",
)  # fmt: skip


@dataclass(frozen=True)
class _Slopes:
    """The hard network's cost and its gradient with respect to each size, for one plan: the
    fields with a slope, and per metric the value (0-d) and the slopes (n,) in the order of those
    fields' entries, flattened."""

    fields: tuple[str, ...]
    macs: Tensor
    params: Tensor
    macs_slopes: Tensor
    params_slopes: Tensor


def linearised_cost(model: DNArchNet, plan: Sequence[BlockSpec], args: tuple[Any, ...]) -> Cost:
    """The straight-through cost, ``estimate_cost(straight_through(soft, hard))``, in its first-order
    form at the hard sizes: the hard cost plus its slopes times (soft - soft.detach()). The same value
    (the hard cost) and the same gradient, but the cost formula and its backward run once per plan
    instead of every step: the hard cost and its slopes stay on the model until the plan changes,
    which it does every few dozen steps. ``args``: ``estimate_cost``'s arguments after the sizes."""
    key = (tuple(plan), model.residual_mask.hard_count(), model.depth_mask.mu.device)
    cached = model.cost_slopes
    if cached is None or cached[0] != key:
        with torch.inference_mode(False):  # kept for later steps, which may need its slopes
            cached = key, _slopes(model.arch_sizes(True, plan), args)
        model.cost_slopes = cached
    slopes = cached[1]
    learning = torch.is_grad_enabled() and bool(model.arch_parameters())  # only learnable ones
    if not learning or not slopes.fields:  # a frozen architecture: no gradient to carry
        return Cost(macs=slopes.macs, params=slopes.params)
    soft = model.arch_sizes(False, plan)
    parts = [getattr(soft, f).reshape(-1) for f in slopes.fields]
    flat = torch.cat(parts) if len(parts) > 1 else parts[0]
    delta = flat - flat.detach()  # zero, with the soft sizes' gradient
    # products and sums, not ``dot``: no autocast list lowers their precision
    return Cost(
        macs=slopes.macs + (slopes.macs_slopes.to(delta.dtype) * delta).sum(),
        params=slopes.params + (slopes.params_slopes.to(delta.dtype) * delta).sum(),
    )


def _slopes(hard: ArchSizes, args: tuple[Any, ...]) -> _Slopes:
    """The cost at the hard sizes and its gradient with respect to each of ``_SIZE_FIELDS``."""
    with torch.enable_grad():
        leaves = {f: getattr(hard, f).detach().clone().requires_grad_() for f in _SIZE_FIELDS}
        cost = estimate_cost(dataclasses.replace(hard, **leaves), *args)
        inputs = list(leaves.values())
        grads = [
            torch.autograd.grad(total, inputs, retain_graph=True, allow_unused=True)
            if total.requires_grad
            else (None,) * len(inputs)
            for total in (cost.macs, cost.params)
        ]
    fields = tuple(f for i, f in enumerate(_SIZE_FIELDS) if any(g[i] is not None for g in grads))

    def flat(g: tuple[Tensor | None, ...]) -> Tensor:
        parts = [
            torch.zeros_like(leaves[f]).reshape(-1) if gi is None else gi.reshape(-1)
            for gi, f in zip(g, _SIZE_FIELDS, strict=True)
            if f in fields
        ]
        return torch.cat(parts) if parts else cost.macs.new_zeros(0)

    return _Slopes(
        fields=fields,
        macs=cost.macs.detach(),
        params=cost.params.detach(),
        macs_slopes=flat(grads[0]).detach(),
        params_slopes=flat(grads[1]).detach(),
    )


def straight_through(soft: ArchSizes, hard: ArchSizes) -> ArchSizes:
    """Each size takes its hard value with its soft gradient. The cost of these sizes is the real
    network's cost, and its gradient is the marginal cost at the real architecture (the soft sums and
    cut-offs differ from the hard counts by a channel or so, which would bias the other factors).
    The training step takes the cost of these sizes in its first-order form (``linearised_cost``);
    this composed form is its definition, which the tests check it against."""

    def st(s: Tensor, h: Tensor) -> Tensor:
        return s + (h.to(s) - s).detach()

    return ArchSizes(
        residual=st(soft.residual, hard.residual),
        depth=st(soft.depth, hard.depth),
        kernel=st(soft.kernel, hard.kernel),
        hidden=st(soft.hidden, hard.hidden),
        resolution=st(soft.resolution, hard.resolution),
        resampled=hard.resampled,
        halved=hard.halved,
        mixed=hard.mixed,
        head_in=st(soft.head_in, hard.head_in),
        head_upsampled=hard.head_upsampled,
        groups=st(soft.groups, hard.groups),
        width=st(soft.width, hard.width),
        head_width=st(soft.head_width, hard.head_width),
        grouped=soft.grouped or hard.grouped,
    )


@torch.no_grad()
def floor_copy(model: DNArchNet, metric: str = "macs") -> DNArchNet:
    """A copy with every learned axis at its floor: the smallest network this search can reach
    (axes that are not learned stay as they are). Learned groupings take, layer by layer, the
    group count that makes it cheapest in ``metric``: at the floor widths, padding can make the
    most groups dearer than fewer."""
    small = copy.deepcopy(model)
    masks: list[Any] = []
    if "width" in model.learned_axes:
        masks += [*small.residual_masks(), *(b.width_mask for b in small.block_list())]
    if "depth" in model.learned_axes:
        masks += small.depth_masks()
    for b in small.block_list():
        if "kernel" in model.learned_axes:
            masks.append(b.conv.mask)
        if "resolution" in model.learned_axes and b.resolution is not None:
            masks.append(b.resolution.mask)
    for m in masks:
        m.to_floor_()
    for b in small.block_list():
        for g in b.group_masks():
            best: tuple[float, float] | None = None
            seen: set[int] = set()
            for mu in torch.linspace(g.mu_min, g.mu_max, 16 * g.n + 1).tolist():
                g.mu.fill_(mu)
                if g.hard_count() in seen:
                    continue  # one cost per reachable group count
                seen.add(g.hard_count())
                cost = float(model_cost(small, "hard").get(metric))
                best = (cost, mu) if best is None or cost < best[0] else best
            assert best is not None
            g.mu.fill_(best[1])
    return small

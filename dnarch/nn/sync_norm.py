"""BatchNorm whose batch statistics span every data-parallel rank (as ``nn.SyncBatchNorm``).

dnarch applies BatchNorm through ``F.batch_norm`` on the first ``c`` channels of a norm (cropping), so
``nn.SyncBatchNorm.convert_sync_batchnorm`` cannot reach it. Inside ``syncing(group)``, training-mode
``batch_norm`` calls go through ``sync_batch_norm``: the per-channel sums are all-reduced (with autograd,
so the backward pass all-reduces their gradients too), which makes N ranks with B/N samples each compute
what one process computes on the whole batch of B.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks of ``group``, differentiable: every rank's output is the same sum, so the
    gradient of each rank's input is the sum of every rank's output gradient (a second all-reduce).
    (torch.distributed.nn's autograd-aware all_reduce does this too, but is deprecated.)"""

    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Any) -> Tensor:
        ctx.group = group
        out = x.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        out = grad.contiguous().clone()
        dist.all_reduce(out, group=ctx.group)
        return out, None


_GROUP: list[Any] = []  # the process group of the innermost ``syncing`` block, if any


@contextmanager
def syncing(group: Any) -> Iterator[None]:
    """Within this block, training-mode BatchNorm statistics are all-reduced over ``group`` (a
    ``torch.distributed`` process group; None: the default group)."""
    _GROUP.append(group)
    try:
        yield
    finally:
        _GROUP.pop()


def sync_group() -> tuple[bool, Any]:
    """(True, group) inside ``syncing(group)`` with an initialised process group, else (False, None)."""
    if _GROUP and dist.is_available() and dist.is_initialized():
        return True, _GROUP[-1]
    return False, None


def sync_batch_norm(
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor,
    bias: Tensor,
    momentum: float,
    eps: float,
    group: Any = None,
) -> Tensor:
    """Training-mode BatchNorm over every rank's batch. x: (B_rank, c, *S); the rest: (c,).

    One all-reduce of per-channel sums (and one of their gradients in the backward pass). The sums
    are taken about ``running_mean``, a shift that is the same on every rank and close to the batch
    mean, so that ``E[d^2] - E[d]^2`` keeps its precision in float32. The running statistics are
    updated in place (unbiased variance), identically on every rank.
    """
    dims = [0, *range(2, x.ndim)]
    shape = (1, -1, *([1] * (x.ndim - 2)))
    shift = running_mean.detach().to(x.dtype, copy=True)  # (c,)
    d = x - shift.reshape(shape)
    count = torch.full((1,), x.numel() / max(x.shape[1], 1), dtype=x.dtype, device=x.device)
    sums = _AllReduceSum.apply(torch.cat([d.sum(dims), d.square().sum(dims), count]), group)
    c = x.shape[1]
    n = sums[-1]
    mean_d = sums[:c] / n  # (c,)
    var = (sums[c : 2 * c] / n - mean_d.square()).clamp(min=0)  # (c,), biased
    mean = shift + mean_d
    with torch.no_grad():
        bessel = n / (n - 1).clamp(min=1)  # n / (n - 1); 1 for a single value
        running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
        running_var.mul_(1 - momentum).add_(momentum * var.detach() * bessel)
    scale = weight * torch.rsqrt(var + eps)  # (c,)
    return (x - mean.reshape(shape)) * scale.reshape(shape) + bias.reshape(shape)

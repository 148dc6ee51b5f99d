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
import torch.distributed.nn.functional as dist_fn
from torch import Tensor

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

    Two passes, as a single process computes it: the global mean first, then the global mean of
    squared deviations (biased, for normalising; unbiased, for the running variance). The running
    statistics are updated in place, identically on every rank.
    """
    dims = [0, *range(2, x.ndim)]
    count = torch.tensor([x.numel() / max(x.shape[1], 1)], dtype=x.dtype, device=x.device)
    sums = dist_fn.all_reduce(torch.cat([x.sum(dims), count]), group=group)  # (c + 1,)
    n = sums[-1]
    mean = sums[:-1] / n  # (c,)
    shape = (1, -1, *([1] * (x.ndim - 2)))
    centred = x - mean.reshape(shape)
    var = dist_fn.all_reduce(centred.square().sum(dims), group=group) / n  # (c,), biased
    with torch.no_grad():
        running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
        bessel = n / (n - 1).clamp(min=1)  # n / (n - 1); 1 for a single value
        running_var.mul_(1 - momentum).add_(momentum * var.detach() * bessel)
    scale = weight * torch.rsqrt(var + eps)  # (c,)
    return centred * scale.reshape(shape) + bias.reshape(shape)

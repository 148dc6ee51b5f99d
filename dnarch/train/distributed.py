"""Data-parallel training on ``torch.distributed``: who this process is, and the few collectives dnarch needs.

Launched by ``torchrun --nproc-per-node N -m dnarch train ...``, every process reads its rank from the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and joins one process group:
NCCL on CUDA, gloo on CPU. A plain ``python -m dnarch`` run is a world of one and takes no part in any
of this. How training stays equal to one process with the same global batch is the trainer's part:
each rank takes its slice of every global batch, BatchNorm statistics and gradients are all-reduced,
and the rest (architecture, cropping, budget fit) is deterministic given identical parameters.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel ranks (``size`` 1: not distributed).

    ``bn_group``: a process group of its own for BatchNorm statistics, so that their collectives never
    interleave with DistributedDataParallel's gradient buckets on the default group.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    bn_group: Any = None

    @property
    def main(self) -> bool:
        """The rank that writes files and prints (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


_WORLD: list[World] = []


def launched() -> bool:
    """True in a process that torchrun started as one of several (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "auto") -> World:
    """Join the process group torchrun describes (once; later calls return the same world), or a world
    of one when not launched that way. ``device``: ``train.device``; NCCL is used when the ranks train
    on CUDA, gloo otherwise."""
    if _WORLD:
        return _WORLD[0]
    if not launched():
        return World()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device != "cpu"
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    world = World(dist.get_rank(), dist.get_world_size(), local_rank, dist.new_group())
    _WORLD.append(world)
    return world


def current() -> World:
    """The world ``init_from_env`` joined, else a world of one."""
    return _WORLD[0] if _WORLD else World()


def shutdown() -> None:
    """Leave the process group (end of a distributed run)."""
    if _WORLD and dist.is_initialized():
        dist.destroy_process_group()
    _WORLD.clear()


def all_reduce_sum(values: Tensor, world: World) -> Tensor:
    """Element-wise sum of ``values`` over the ranks (a copy; unchanged for a world of one)."""
    if not world.active:
        return values.detach().clone()
    # NCCL reduces CUDA tensors only; gloo takes them where they are
    nccl = dist.get_backend() == "nccl"
    out = values.detach().to("cuda" if nccl else values.device, copy=True)
    dist.all_reduce(out)
    return out.to(values.device)


def agree(value: Any, world: World) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object)."""
    if not world.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], Any], world: World) -> Any:
    """``fn()`` on rank 0 only, its result (or its ``ValueError``/``OSError``, as a ``ValueError``)
    on every rank: for the file-system checks and writes only rank 0 makes."""
    if not world.active:
        return fn()
    result, error = None, None
    if world.main:
        try:
            result = fn()
        except (ValueError, OSError) as err:
            error = str(err)
    result, error = agree((result, error), world)
    if error is not None:
        raise ValueError(error)
    return result


def step_consensus(
    flags: list[bool], sums: list[float], world: World
) -> tuple[list[bool], list[float]]:
    """One small all-reduce for a decision all ranks take together: each flag true on any rank, each
    number summed over the ranks (both as they are for a world of one)."""
    if not world.active:
        return flags, sums
    packed = torch.tensor([float(f) for f in flags] + sums, dtype=torch.float64)
    values = all_reduce_sum(packed, world).tolist()
    return [v > 0 for v in values[: len(flags)]], values[len(flags) :]


def check_identical(tensors: list[Tensor], world: World, what: str) -> None:
    """Raise ``RuntimeError`` unless ``tensors`` hold the same values on every rank (rank 0's are
    broadcast and compared exactly)."""
    if not world.active or not tensors:
        return
    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    (differs,), _ = step_consensus([not torch.equal(flat, ref)], [], world)
    if differs:
        raise RuntimeError(f"{what} differ between data-parallel ranks")

"""Shuffled batches, the same order on every rank, each rank its slice of every global batch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, TensorDataset

from dnarch.train import distributed


class RankBatches(Sampler[list[int]]):
    """This rank's slice of every global batch: a contiguous ``1/size`` of it (sizes differ by at most
    one sample when the batch does not divide). A world of one takes whole batches, in the order that
    ``DataLoader(shuffle=True, generator=...)`` draws them."""

    def __init__(self, batches: BatchSampler, rank: int = 0, size: int = 1) -> None:
        self.batches, self.rank, self.size = batches, rank, size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            n = len(batch)
            yield batch[self.rank * n // self.size : (self.rank + 1) * n // self.size]

    def __len__(self) -> int:
        return len(self.batches)


def batch_loader(
    data: TensorDataset,
    batch_size: int,
    generator: torch.Generator,
    world: distributed.World,
    workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """Shuffled batches of ``data`` for this rank: its ``RankBatches`` slice of every global batch of
    ``batch_size`` (whole batches only, unless there is just one). The order is the one
    ``DataLoader(data, batch_size, shuffle=True, generator=generator)`` draws, on every rank; each
    batch is one tensor gather (the sampler yields index lists), in ``workers`` processes if > 0."""
    n = len(data)
    batches = BatchSampler(
        RandomSampler(range(n), generator=generator), batch_size, drop_last=n > batch_size
    )
    return DataLoader(
        data,
        sampler=RankBatches(batches, world.rank, world.size),
        batch_size=None,
        generator=generator,  # the loader draws its worker seed from it, as a shuffling one does
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
    )
